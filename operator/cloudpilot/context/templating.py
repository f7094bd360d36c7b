"""Jinja2 rendering of user-data templates: sandboxed, strict, and with errors that name the
template and the line.

Templates come from the package (``cloudpilot.templates``: ``el9.yaml.j2`` ...) or from a
site's ConfigMap. Both are rendered in a :class:`SandboxedEnvironment` (a template is
configuration written by site admins, not code the operator trusts) with
:class:`StrictUndefined`, so a misspelt variable is an error instead of an empty string in
a boot script. A site template can ``{% extends %}`` or ``{% include %}`` the built-in
templates by name.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from cloudpilot.context.errors import UserDataError
from cloudpilot.context.limits import gzip_bytes

BUILTIN_PACKAGE = "cloudpilot.templates"
MAX_MESSAGE = 300
"""Error messages are cut: they go to status and events, and must stay readable there."""


@dataclass(frozen=True)
class TemplateSource:
    """A template's text and the name it is reported under."""

    name: str
    """The Jinja name (``el9.yaml.j2``, ``configmap:ns/name:key``)."""
    text: str
    description: str
    """How messages name it: ``built-in template el9.yaml.j2``, ``ConfigMap ns/n key k``."""


def builtin(name: str) -> TemplateSource:
    """A template shipped in ``cloudpilot.templates``."""
    return TemplateSource(name, builtin_text(name), f"built-in template {name}")


def site_template(namespace: str, configmap: str, key: str, text: str) -> TemplateSource:
    return TemplateSource(
        f"configmap:{namespace}/{configmap}:{key}",
        text,
        f"ConfigMap {namespace}/{configmap} key {key}",
    )


@cache
def builtin_text(name: str) -> str:
    try:
        return resources.files(BUILTIN_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise jinja2.TemplateNotFound(name) from None


def builtin_names() -> list[str]:
    return sorted(
        p.name for p in resources.files(BUILTIN_PACKAGE).iterdir() if p.name.endswith(".j2")
    )


# -- filters ---------------------------------------------------------------------------------

_UNSAFE_IN_BLOCK = re.compile(
    "[^\t\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
"""Characters a YAML literal block cannot carry as they are (controls, DEL, C1, NEL, the
Unicode line separators, BOM, surrogates): text with any of them is double-quoted instead."""


def yaml_str(value: Any) -> str:
    """Any value as a YAML double-quoted scalar, on one line, whatever it contains."""
    out = ['"']
    for ch in str(value):
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif _UNSAFE_IN_BLOCK.match(ch):
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def yaml_block(value: Any, indent: int) -> str:
    """Multi-line text as a YAML literal block whose lines are indented by ``indent`` spaces,
    to follow a ``key:`` on the same line. The text comes back from YAML unchanged; text a
    literal block cannot carry exactly (control characters, CR, leading spaces on its first
    line) falls back to a double-quoted scalar, which can."""
    text = "" if value is None else str(value)
    if not text or any(_UNSAFE_IN_BLOCK.search(line) for line in text.split("\n")):
        return yaml_str(text)
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
        chomp = "+" if text.endswith("\n\n") else ""
    else:
        chomp = "-"
    first = next((line for line in lines if line.strip(" ")), "")
    if not first or first.startswith((" ", "\t")):
        return yaml_str(text)
    # Blank lines before the first line of text must be empty: spaces there would set the
    # block's indentation.
    for line in lines:
        if line is first:
            break
        if line:
            return yaml_str(text)
    pad = " " * indent
    return f"|{chomp}\n" + "\n".join(pad + line if line else "" for line in lines)


def shell_quote(value: Any) -> str:
    """A value as one shell word. Line breaks and other control characters are refused: in a
    script inside a YAML block they would break the block, and no CE, queue or package name
    has them."""
    text = str(value)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise jinja2.TemplateRuntimeError(
            "a value quoted for the shell contains a control character"
        )
    return shlex.quote(text)


def b64encode(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return base64.b64encode(data).decode("ascii")


def gzip_b64(value: str | bytes) -> str:
    """For ``write_files`` entries with ``encoding: gz+b64``."""
    data = value.encode() if isinstance(value, str) else value
    return base64.b64encode(gzip_bytes(data)).decode("ascii")


FILTERS: dict[str, Callable[..., Any]] = {
    "yaml_str": yaml_str,
    "yaml_block": yaml_block,
    "sh": shell_quote,
    "b64encode": b64encode,
    "gzip_b64": gzip_b64,
}


# -- rendering -------------------------------------------------------------------------------


class _Loader(jinja2.BaseLoader):
    """Built-in templates by name, plus the one site template being rendered."""

    def __init__(self, extra: Mapping[str, str]) -> None:
        self._extra = dict(extra)

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        if template in self._extra:
            return self._extra[template], template, lambda: True
        return builtin_text(template), template, lambda: True


def environment(extra: Mapping[str, str] | None = None) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=_Loader(extra or {}),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def render(
    template_text: str,
    variables: Mapping[str, Any],
    *,
    name: str = "<template>",
    description: str | None = None,
    secrets: Iterable[str | None] = (),
) -> bytes:
    """Render one template to user-data bytes (UTF-8); no validation, no size decision.

    Raises :class:`UserDataError` naming the template (``description``, or the included
    template where the error is) and the line; ``secrets`` are masked out of the message.
    """
    source = TemplateSource(name, template_text, description or f"template {name}")
    return render_source(source, variables, secrets=secrets)


@lru_cache(maxsize=32)
def environment_for(source: TemplateSource) -> SandboxedEnvironment:
    """One environment per template source, kept: Jinja caches each compiled template in
    its environment, and compiling the built-in templates costs ~0.25 s of CPU. A fresh
    environment per render made every new pool (every new set of variables) pay that."""
    return environment({source.name: source.text})


def render_source(
    source: TemplateSource,
    variables: Mapping[str, Any],
    *,
    secrets: Iterable[str | None] = (),
) -> bytes:
    env = environment_for(source)
    try:
        text = env.get_template(source.name).render(dict(variables))
    except jinja2.TemplateSyntaxError as exc:
        where = _where(source, exc.name or exc.filename, exc.lineno)
        raise UserDataError(mask(f"{where}: syntax error: {exc.message}", secrets)) from None
    except jinja2.TemplateNotFound as exc:
        raise UserDataError(
            mask(f"{source.description}: no template named {exc.name!r} to include", secrets)
        ) from None
    except Exception as exc:
        name, line = _template_frame(exc.__traceback__, source.name)
        where = _where(source, name, line)
        kind = "undefined" if isinstance(exc, jinja2.UndefinedError) else "error"
        raise UserDataError(mask(f"{where}: {kind}: {exc}", secrets)) from None
    return text.encode("utf-8")


def _where(source: TemplateSource, name: str | None, line: int | None) -> str:
    if name is None or name == source.name:
        label = source.description
    elif name.startswith("configmap:"):
        label = name
    else:
        label = f"built-in template {name}" + (
            f" (included by {source.description})" if name != source.name else ""
        )
    return f"{label}, line {line}" if line else label


def _template_frame(tb: TracebackType | None, default: str) -> tuple[str | None, int | None]:
    """The innermost template frame of a rendering error: Jinja rewrites tracebacks so that
    template code shows with the template's name as file name and its own line numbers."""
    found: tuple[str | None, int | None] = (None, None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename == default or _is_template_name(filename):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _is_template_name(filename: str) -> bool:
    return filename.startswith("configmap:") or (filename.endswith(".j2") and "/" not in filename)


def mask(message: str, secrets: Iterable[str | None]) -> str:
    """Remove secret material from a message, then cut it.

    Jinja quotes values in some messages (``dict object has no attribute '<value>'``, in
    ``repr`` form), so each secret is masked as is, in ``repr`` form, and line by line.
    """
    needles: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        for piece in (secret, *secret.splitlines()):
            piece = piece.strip()
            if len(piece) >= 8:
                needles.update({piece, repr(piece)[1:-1]})
    for needle in sorted(needles, key=len, reverse=True):
        message = message.replace(needle, "***")
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return message


@lru_cache(maxsize=64)
def uses_variable(source: TemplateSource, variable: str) -> bool:
    """Whether rendering ``source`` may read ``variable``, through the templates it
    extends, includes or imports too. A template named by an expression cannot be
    followed and counts as using it (and so does one that does not parse: rendering will
    report that); a missing one does not (rendering reports it)."""
    env = environment({source.name: source.text})
    seen: set[str] = set()
    pending = [source.name]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            text = env.loader.get_source(env, name)[0] if env.loader else ""
        except (OSError, jinja2.TemplateNotFound, ModuleNotFoundError):
            continue
        try:
            tree = env.parse(text)
        except jinja2.TemplateSyntaxError:
            return True
        if variable in meta.find_undeclared_variables(tree):
            return True
        for child in meta.find_referenced_templates(tree):
            if child is None:
                return True
            pending.append(child)
    return False
