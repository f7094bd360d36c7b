"""``cloudpilot render``: print the user data a pool would send, without a cluster or cloud.

For sites debugging their contextualisation: it reads the pool manifest (and the Secrets and
ConfigMaps it uses, given with ``-f`` too or as files with ``--secret-file``), renders each
queue exactly as the operator would, and prints the user data decompressed, with the pilot
wrapper and proxy masked unless ``--show-secrets`` is given. The sizes and the gzip decision
go to stderr, for the pool's own cloud and for every other known one, so stdout can be piped
to ``cloud-init schema --config-file /dev/stdin``.

Exit status (:mod:`cloudpilot.commands`): 0 when every queue renders and fits, 1 when one
does not (the message says why), 2 for unusable input.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from cloudpilot import constants
from cloudpilot.commands import EXIT_USAGE, CommandError, reports

_MISSING = object()
ERROR = "cloudpilot render: error: "
WARNING = "cloudpilot render: warning: "


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="pool manifest, and the Secrets and ConfigMaps it uses (multi-document YAML; "
        "repeatable; - reads stdin)",
    )
    parser.add_argument(
        "--queue",
        "-q",
        action="append",
        default=[],
        metavar="Q",
        help="only this queue (repeatable)",
    )
    parser.add_argument("--pool", metavar="NAME", help="only this pool, when files hold several")
    parser.add_argument(
        "--namespace",
        "-n",
        metavar="NS",
        help="namespace of manifests that have none (default: default)",
    )
    parser.add_argument(
        "--show-secrets",
        action="store_true",
        help="print the pilot wrapper and proxy instead of masking them",
    )
    parser.add_argument(
        "--secret-file",
        action="append",
        default=[],
        metavar="NAME[/KEY]=PATH",
        help="use the file's content as key KEY of Secret NAME (any key the pool asks of "
        "NAME when /KEY is left out); repeatable",
    )


class InputError(Exception):
    """Input that cannot be rendered at all (exit status 2)."""


@dataclass
class Inputs:
    pools: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    secret_files: dict[tuple[str, str | None], bytes] = field(default_factory=dict)


@reports("render")
def run(args: argparse.Namespace) -> int:
    try:
        inputs = load_inputs(args.filename, args.secret_file, args.namespace or "default")
        return render_pools(inputs, args, sys.stdout, sys.stderr)
    except InputError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


# -- reading ---------------------------------------------------------------------------------


def load_inputs(files: Iterable[str], secret_files: Iterable[str], namespace: str) -> Inputs:
    inputs = Inputs()
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
            documents = list(yaml.safe_load_all(text))
        except OSError as exc:
            raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"cannot read {name}: not UTF-8 text") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{name}: not valid YAML: {exc}") from None
        for doc in _flatten(documents):
            _add_document(inputs, doc, namespace, name)
    for item in secret_files:
        target, sep, path = item.partition("=")
        if not sep or not target or not path:
            raise InputError(f"--secret-file {item!r}: expected NAME[/KEY]=PATH")
        secret, _, key = target.partition("/")
        try:
            inputs.secret_files[(secret, key or None)] = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(
                f"--secret-file {item!r}: cannot read: {exc.strerror or exc}"
            ) from None
    return inputs


def _flatten(documents: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List":
            yield from _flatten(doc.get("items") or [])
        else:
            yield doc


def _add_document(inputs: Inputs, doc: dict[str, Any], namespace: str, source: str) -> None:
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    key = (meta.get("namespace") or namespace, meta.get("name") or "")
    if kind == constants.KIND:
        inputs.pools.append(doc)
    elif kind == "Secret":
        data: dict[str, bytes] = {}
        for k, v in (doc.get("data") or {}).items():
            try:
                data[k] = base64.b64decode(str(v), validate=True)
            except ValueError:
                raise InputError(
                    f"{source}: Secret {key[0]}/{key[1]} key {k}: data is not base64"
                ) from None
        for k, v in (doc.get("stringData") or {}).items():
            data[k] = str(v).encode()
        inputs.secrets[key] = data
    elif kind == "ConfigMap":
        inputs.configmaps[key] = {k: str(v) for k, v in (doc.get("data") or {}).items()}


# -- rendering -------------------------------------------------------------------------------


def render_pools(inputs: Inputs, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from cloudpilot.models.queues import ConfigError, effective_queues
    from cloudpilot.models.spec import describe_validation_error, parse_spec

    pools = [
        p
        for p in inputs.pools
        if args.pool is None or (p.get("metadata") or {}).get("name") == args.pool
    ]
    if not pools:
        wanted = f" named {args.pool}" if args.pool else ""
        raise InputError(f"no {constants.KIND}{wanted} in the given files")
    jobs = []
    for doc in pools:
        meta = doc.get("metadata") or {}
        namespace = meta.get("namespace") or args.namespace or "default"
        name = meta.get("name") or "unnamed"
        try:
            spec = parse_spec(dict(doc.get("spec") or {}))
            queues = effective_queues(spec, namespace=namespace, pool_name=name)
        except (ValueError, ConfigError) as exc:
            raise InputError(f"pool {namespace}/{name}: {describe_validation_error(exc)}") from None
        jobs += [(namespace, name, q) for q in queues if not args.queue or q.name in args.queue]
    if not jobs:
        raise InputError(f"no queue named {', '.join(args.queue)} in the pool(s)")
    status = 0
    for namespace, name, queue in jobs:
        if len(jobs) > 1:
            print(
                f"# ---- cloudpilot render: pool {namespace}/{name}, queue {queue.name} ----",
                file=out,
            )
        ok = _render_queue(inputs, namespace, name, queue, args.show_secrets, out, err)
        status = status or (0 if ok else 1)
    return status


def _render_queue(
    inputs: Inputs,
    namespace: str,
    pool: str,
    queue: Any,
    show_secrets: bool,
    out: TextIO,
    err: TextIO,
) -> bool:
    from cloudpilot.context import UserDataError, builtin_for, prepare_user_data, site_template
    from cloudpilot.context.templating import render_source
    from cloudpilot.context.variables import template_variables

    label = f"pool {namespace}/{pool}, queue {queue.name}"
    secrets = {}
    for role, ref in (("executable", queue.executable_secret), ("proxy", queue.proxy_secret)):
        if ref is None:
            continue
        value = _secret(inputs, namespace, ref.name, ref.key)
        if value is None:
            print(
                f"{WARNING}{label}: Secret {namespace}/{ref.name} key {ref.key} not given "
                f"(add it with -f or --secret-file); its size is not counted",
                file=err,
            )
            value = b""
        secrets[role] = (ref, value)
    try:
        texts = {role: v.decode("utf-8") for role, (_, v) in secrets.items()}
    except UnicodeDecodeError:
        print(f"{ERROR}{label}: a pilot Secret is not UTF-8 text", file=err)
        return False
    try:
        if queue.template is not None:
            data = inputs.configmaps.get((namespace, queue.template.name))
            if data is None or queue.template.key not in data:
                print(
                    f"{ERROR}{label}: ConfigMap {namespace}/{queue.template.name} key "
                    f"{queue.template.key} not given (add it with -f)",
                    file=err,
                )
                return False
            source = site_template(
                namespace, queue.template.name, queue.template.key, data[queue.template.key]
            )
        else:
            source = builtin_for(queue)
        rendered = prepare_user_data(
            queue,
            source,
            namespace=namespace,
            pool=pool,
            pilot_executable=texts.get("executable") or None,
            pilot_proxy=texts.get("proxy") or None,
        )
    except UserDataError as exc:
        print(f"{ERROR}{label}: {exc}", file=err)
        return False

    if show_secrets:
        shown = rendered.text
    else:
        placeholders = {
            role: _placeholder(namespace, ref.name, ref.key, value)
            for role, (ref, value) in secrets.items()
        }
        variables = template_variables(
            queue,
            namespace=namespace,
            pool=pool,
            pilot_executable=placeholders["executable"] if texts.get("executable") else None,
            pilot_proxy=placeholders["proxy"] if texts.get("proxy") else None,
        )
        shown = render_source(source, variables).decode("utf-8")
        # Defence in depth: a template that prints a secret some other way is masked too.
        for line in (line for t in texts.values() for line in t.splitlines()):
            if len(line.strip()) >= 16:
                shown = shown.replace(line.strip(), "***")
    out.write(shown if shown.endswith("\n") else shown + "\n")
    _report(label, rendered, queue, err)
    return True


def _secret(inputs: Inputs, namespace: str, name: str, key: str) -> bytes | None:
    for candidate in ((name, key), (name, None)):
        if candidate in inputs.secret_files:
            return inputs.secret_files[candidate]
    value = inputs.secrets.get((namespace, name), {}).get(key, _MISSING)
    return None if value is _MISSING else value  # type: ignore[return-value]


def _placeholder(namespace: str, name: str, key: str, value: bytes) -> str:
    digest = hashlib.sha256(value).hexdigest()[:12]
    return (
        f"<masked: Secret {namespace}/{name} key {key}, {len(value):,} bytes, "
        f"sha256 {digest}; --show-secrets prints it>\n"
    )


def _report(label: str, rendered: Any, queue: Any, err: TextIO) -> None:
    from cloudpilot.context import LIMITS, UserDataError, fit, provider_for, size_limit
    from cloudpilot.context.limits import gzip_bytes

    plain = rendered.text.encode("utf-8")
    own = provider_for(queue.account.cloud_type)
    print(f"{label} ({rendered.template}): {rendered.summary}", file=err)
    print(f"  {'cloud':<12}{'limit':<26}{'plain':>10}{'gzip':>10}  decision", file=err)
    for provider, default in LIMITS.items():
        limit = (
            size_limit(queue.account.cloud_type, queue.user_data_limit)
            if provider is own
            else default
        )
        try:
            fitted = fit(plain, limit, template=rendered.template)
            decision = "gzip" if fitted.compressed else "plain"
        except UserDataError:
            decision = "too big"
        measured = limit.measure(plain)
        packed = limit.measure(gzip_bytes(plain)) if limit.gzip_allowed else None
        unit = " after base64" if limit.after_base64 else ""
        name = str(provider) + (" *" if provider is own else "")
        print(
            f"  {name:<12}{f'{limit.limit:,}{unit}':<26}{measured:>10,}"
            f"{'-' if packed is None else f'{packed:,}':>10}  {decision}",
            file=err,
        )
