"""Where a queue's pilot proxy lives, and how to get it out of a DIRAC pilot wrapper.

The proxy is either in its own Secret (``spec.pilot.proxySecret``) or bundled in the pilot
executable, as DIRAC's SiteDirector bundles it: the wrapper carries each pilot file as
``bz2.decompress(base64.b64decode(b'...'))`` and writes the one named ``proxy`` to disk.
A wrapper may also carry the PEM as is. Both are recognised; anything else means "no
proxy found", which is not an error (a pilot may authenticate with a token instead).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import functools
import re
import zlib
from dataclasses import dataclass

from cloudpilot.models.queues import QueueConfig

MAX_DECODED = 1 << 20
"""A proxy is a few KB; a bundled file that inflates beyond 1 MiB is not one (or a bomb)."""

_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{96,}={0,2}")


@dataclass(frozen=True)
class ProxyLocation:
    """The Secret and key holding the pilot proxy; ``bundled``: inside the executable."""

    secret: str
    key: str
    bundled: bool

    @property
    def source(self) -> str:
        """A stable name for the proxy file store: ``namespace`` is added by the caller."""
        return f"{self.secret}:{self.key}"


def locate_pilot_proxy(queue: QueueConfig) -> ProxyLocation | None:
    """``pilot.proxySecret`` if set, else the executable's Secret (bundled), else None."""
    if queue.proxy_secret is not None:
        return ProxyLocation(queue.proxy_secret.name, queue.proxy_secret.key, bundled=False)
    if queue.executable_secret is not None:
        ref = queue.executable_secret
        return ProxyLocation(ref.name, ref.key, bundled=True)
    return None


def _pem_blocks(data: bytes) -> bytes | None:
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if not any(b.startswith(_CERT) for b in blocks):
        return None
    return b"".join(b if b.endswith(b"\n") else b + b"\n" for b in blocks)


def _inflate(blob: bytes) -> bytes:
    if blob.startswith(b"BZh"):
        return bz2.BZ2Decompressor().decompress(blob, max_length=MAX_DECODED)
    if blob[:2] == b"\x1f\x8b":
        return zlib.decompressobj(wbits=31).decompress(blob, MAX_DECODED)
    return blob


@functools.lru_cache(maxsize=32)
def find_proxy_pem(executable: bytes) -> bytes | None:
    """The proxy's PEM (certificates and key) carried by a pilot executable, or None.

    Plain PEM blocks win; otherwise each long base64 literal is decoded (and bz2/gzip
    inflated) and the first one holding a certificate is taken. Cached by content: the
    same executable is inspected on every reconcile.
    """
    direct = _pem_blocks(executable)
    if direct is not None:
        return direct
    for match in _BASE64_RUN.finditer(executable):
        try:
            decoded = _inflate(base64.b64decode(match.group(0), validate=True))
        except (binascii.Error, ValueError, OSError, EOFError, zlib.error):
            continue
        found = _pem_blocks(decoded)
        if found is not None:
            return found
    return None
