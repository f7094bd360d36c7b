"""Check rendered user data before any VM gets it.

cloud-init quietly ignores user data it cannot parse and boots a VM that then idles until
the operator's clean-up: every VM of a batch would be lost, and the cloud billed. So the
rendered text must be what the issue allows: a ``#cloud-config`` YAML mapping, or a MIME
multipart (a site's choice) whose cloud-config parts are such mappings. A few well-known
keys are checked for shape; the full schema is cloud-init's (the integration tests run
``cloud-init schema`` on the built-in templates).

Messages give the line in the rendered output and YAML's complaint, never the line itself:
it could be part of the pilot wrapper.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from typing import Any

import yaml

from cloudpilot.context.errors import UserDataError

_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it: the same documents, about ten times
less CPU than the pure-Python one for every rendered cloud-config that is checked."""

CLOUD_CONFIG_HEADER = "#cloud-config"
MIME_PART_TYPES = frozenset(
    {
        "text/cloud-config",
        "text/x-shellscript",
        "text/x-shellscript-per-boot",
        "text/x-shellscript-per-instance",
        "text/x-shellscript-per-once",
        "text/cloud-boothook",
        "text/cloud-config-archive",
        "text/jinja2",
        "text/part-handler",
        "text/x-include-url",
        "text/x-include-once-url",
    }
)
"""The part types cloud-init handles; anything else it would skip silently."""

_LIST_KEYS = ("bootcmd", "runcmd", "packages", "write_files", "users", "groups", "mounts")


def check_user_data(data: bytes, *, template: str) -> str:
    """Raise :class:`UserDataError` unless ``data`` is user data cloud-init will act on.
    Returns its kind: ``cloud-config`` or ``multipart``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserDataError(f"user data of {template} is not UTF-8 text") from None
    first = text.split("\n", 1)[0].rstrip()
    if first == CLOUD_CONFIG_HEADER:
        check_cloud_config(text, where=f"user data of {template}")
        return "cloud-config"
    head = text.lstrip()[:200].lower()
    if head.startswith(("content-type:", "mime-version:")):
        _check_multipart(data, template=template)
        return "multipart"
    raise UserDataError(
        f"user data of {template} must start with a '#cloud-config' line or be a MIME "
        f"multipart; it starts with {first[:20]!r}"
    )


def check_cloud_config(text: str, *, where: str) -> dict[str, Any]:
    """A cloud-config document: a YAML mapping with sensible shapes for well-known keys."""
    try:
        config = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise UserDataError(f"{where} is not valid YAML{line}: {problem}") from None
    if not isinstance(config, dict):
        raise UserDataError(
            f"{where} must be a YAML mapping after '#cloud-config', not "
            f"{'nothing' if config is None else type(config).__name__}"
        )
    for key in _LIST_KEYS:
        if key in config and not isinstance(config[key], list):
            raise UserDataError(f"{where}: {key} must be a list")
    for index, entry in enumerate(config.get("write_files") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UserDataError(f"{where}: write_files[{index}] needs a path")
        content = entry.get("content", "")
        if not isinstance(content, str | bytes):
            raise UserDataError(f"{where}: write_files[{index}] content must be text")
    for key in ("bootcmd", "runcmd"):
        for index, command in enumerate(config.get(key) or []):
            if not isinstance(command, str | list):
                raise UserDataError(f"{where}: {key}[{index}] must be a string or a list")
    return config


def _check_multipart(data: bytes, *, template: str) -> None:
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    if not message.is_multipart():
        raise UserDataError(f"user data of {template} has MIME headers but is not multipart")
    parts = [p for p in message.walk() if not p.is_multipart()]
    if not parts or message.defects:
        raise UserDataError(f"user data of {template} is not a well-formed MIME multipart")
    for index, part in enumerate(parts):
        kind = part.get_content_type()
        if kind not in MIME_PART_TYPES:
            raise UserDataError(
                f"user data of {template}: MIME part {index + 1} has type {kind}, "
                "which cloud-init ignores"
            )
        if kind == "text/cloud-config":
            payload = part.get_payload(decode=True)
            body = payload if isinstance(payload, bytes) else b""
            try:
                text = body.decode(part.get_content_charset() or "utf-8")
            except (UnicodeDecodeError, LookupError):
                raise UserDataError(
                    f"user data of {template}: MIME part {index + 1} is not text"
                ) from None
            check_cloud_config(text, where=f"user data of {template}, MIME part {index + 1}")
