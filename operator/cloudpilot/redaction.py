"""Keep secret values out of logs, events, status and exception messages.

Clouds echo requests back in their error messages, and a create request carries the user
data, which carries the pilot proxy. Cutting messages to a length (as DIRAC does) only
shortens the leak. Here every secret the operator loads is registered under an owner key,
and :func:`redact` replaces any registered value (and its base64 form, the way user data
travels) with ``***``. A logging filter applies it to every record the operator emits.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"
_MIN_LENGTH = 6
"""Shorter values would mask ordinary words; no real credential is that short."""

_LONG_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]|%2[BbFf]){200,}(?:=|%3[Dd]){0,2}")
"""Any run of 200+ base64 characters (also URL-encoded, as in an EC2 query string) is
masked whatever it encodes: user data travels as one base64 text, so a cloud that echoes
the request (whole or in part) echoes the pilot wrapper and proxy in a form no registered
needle can match. Nothing a user needs to read in a message is 200 characters of base64."""

_lock = threading.Lock()
_secrets: dict[str, frozenset[str]] = {}
_needles: tuple[str, ...] = ()


@functools.lru_cache(maxsize=512)
def _variants(value: str) -> frozenset[str]:
    """Cached: every pool that uses one Secret (the same pilot wrapper, the same proxy)
    shares one set of variants instead of holding its own copy of them all."""
    return frozenset(_compute_variants(value))


def _compute_variants(value: str) -> set[str]:
    # Long values (a proxy in PEM) are also matched line by line, so a message that quotes
    # only part of the value (or user data where YAML re-flowed it) is still masked.
    plain = {value}
    plain.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 16)
    out = set(plain)
    for text in plain:
        raw = text.encode()
        out.add(base64.b64encode(raw).decode())
        out.update(_embedded_base64(raw))
    return {v for v in out if len(v) >= _MIN_LENGTH}


def _embedded_base64(raw: bytes) -> set[str]:
    """How ``raw`` shows inside a longer base64 text (user data is encoded as a whole).

    Base64 encodes 3 bytes as 4 characters, so a value that does not start at a multiple
    of 3 bytes is encoded differently; for each of the 3 alignments, the characters that
    also carry bits of the neighbouring bytes are left out, the rest is fixed by ``raw``.
    """
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        total = shift + len(raw)
        start = (0, 2, 3)[shift]
        end = total // 3 * 4 + (0, 1, 2)[total % 3]
        forms.add(encoded[start:end])
    return forms


def register(owner: str, values: Iterable[str | bytes | None]) -> None:
    """Remember the secrets of one owner (``ns/pool:credentials`` ...), replacing old ones."""
    global _needles
    found: set[str] = set()
    for value in values:
        if value is None:
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        found |= _variants(text)
    new = frozenset(found)
    with _lock:
        if _secrets.get(owner, frozenset()) == new:
            # The usual case: every cycle re-registers the same proxy and credentials.
            # Rebuilding the sorted needle list for nothing cost ~3 ms a call at 1,000 pools.
            return
        if new:
            _secrets[owner] = new
        else:
            _secrets.pop(owner, None)
        _needles = tuple(sorted({v for vs in _secrets.values() for v in vs}, key=len, reverse=True))


def forget(owner: str) -> None:
    register(owner, ())


def pool_owner(pool_key: str, what: str) -> str:
    """The owner key of a pool's secret (``ns/pool:userdata:q``, ``ns/pool:proxy:...``):
    every owner of a pool starts with its key, so :func:`forget_pool` finds them all, however
    many a pool registered over its life (a renamed queue, a moved proxy Secret)."""
    return f"{pool_key}:{what}"


def forget_pool(pool_key: str) -> None:
    """Forget every secret registered under :func:`pool_owner` for a pool that is gone."""
    prefix = pool_owner(pool_key, "")
    with _lock:
        owners = [owner for owner in _secrets if owner.startswith(prefix)]
    for owner in owners:
        forget(owner)


def redact(text: str) -> str:
    for needle in _needles:
        if needle in text:
            text = text.replace(needle, MASK)
    return _LONG_BASE64.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """Masks registered secrets in every log record, whoever logged it (libcloud included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, redact(text)
        return True


def install_log_filter() -> None:
    """Attach the filter to every handler of the root logger (where kopf's records go), and
    to ``kopf.objects`` itself: kopf posts that logger's warnings as Events through a handler
    of its own, which runs before a record reaches the root's handlers."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    kopf_objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RedactingFilter) for f in kopf_objects.filters):
        kopf_objects.addFilter(RedactingFilter())
