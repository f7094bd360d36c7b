"""Cloud credentials from a pool's ``credentialsSecret``, in either of its two formats.

* ``key`` and ``secret`` keys (``secret`` optional: some drivers take a single token);
* a ``cloud.auth`` key holding DIRAC's ini file unchanged (see :mod:`.ini`), so a site can
  create the Secret straight from the file it already has
  (``kubectl create secret generic cloud-auth --from-file=cloud.auth``).

In both, the secret ``PROXY`` stands for the path of the pilot proxy file, as in DIRAC; the
caller passes a ``proxy_path_provider`` that writes that file (see :mod:`.proxyfiles`)
and returns its path. It is called only when the Secret actually says ``PROXY``.

This runs on every reconcile, on the Secret as read then: a rotated Secret takes effect on
the next cycle, with no restart and no cache to invalidate. Every value read is registered
with :mod:`cloudpilot.redaction` before anything can fail, so no later message can show it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudpilot import redaction
from cloudpilot.cloud.gateway import Credentials
from cloudpilot.credentials import ini
from cloudpilot.credentials.errors import CredentialsError, ProxyUnavailableError
from cloudpilot.kube.secrets import MissingReferenceError

CLOUD_AUTH_KEY = "cloud.auth"
KEY_KEY = "key"
SECRET_KEY = "secret"  # noqa: S105 (the name of a Secret key, not a password)

ProxyPathProvider = Callable[[], str]
"""Writes the pilot proxy to its private file (if needed) and returns the file's path."""


@dataclass(frozen=True, repr=False)
class ResolvedCredentials(Credentials):
    """:class:`Credentials` that say where they came from and never show their values.

    ``repr``/``str`` give the origin and a fingerprint only, so a credentials object that
    ends up in a log line, a traceback's locals or an assertion message leaks nothing.
    """

    origin: str = ""
    """``Secret ns/name``, plus ``key 'cloud.auth', section [host]`` for the ini format."""
    proxy_digest: str | None = None
    """Digest of the proxy behind a ``PROXY`` secret: the file path stays the same when the
    proxy is renewed, and the fingerprint must still change."""

    @property
    def uses_proxy(self) -> bool:
        return self.proxy_digest is not None

    @property
    def fingerprint(self) -> str:
        material = f"{self.key}\0{self.secret}\0{self.proxy_digest or ''}"
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        proxy = ", secret=PROXY" if self.uses_proxy else ""
        return f"ResolvedCredentials({self.origin}{proxy}, fingerprint={self.fingerprint})"

    __str__ = __repr__


def _text(data: dict[str, bytes], key: str, where: str) -> str:
    try:
        return data[key].decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"{where}: key {key!r} is not UTF-8 text") from None


def _proxy_path(provider: ProxyPathProvider | None, where: str) -> tuple[str, str]:
    """The proxy file's path, and a digest of its content (for the fingerprint)."""
    if provider is None:
        raise ProxyUnavailableError(
            f"{where}: the secret is PROXY but the pool has no pilot proxy "
            "(set spec.pilot.proxySecret, or bundle the proxy in the pilot executable)"
        )
    path = provider()
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        digest = "unreadable"
    return path, digest


def credentials_from_secret(
    data: dict[str, bytes],
    *,
    ce: str,
    namespace: str,
    secret_name: str,
    proxy_path_provider: ProxyPathProvider | None = None,
) -> ResolvedCredentials:
    """Credentials for CE host ``ce`` from the Secret's ``data`` (values already decoded).

    Raises :class:`~cloudpilot.kube.secrets.MissingReferenceError` for a missing key and
    :class:`~cloudpilot.credentials.errors.CredentialsError` subclasses for bad content;
    both are ``ConfigError``s whose messages name Secret, key and section, never a value.
    """
    where = f"Secret {namespace}/{secret_name}"
    redaction.register(f"{namespace}/{secret_name}:credential-values", data.values())
    if CLOUD_AUTH_KEY in data:
        if KEY_KEY in data or SECRET_KEY in data:
            raise CredentialsError(
                f"{where} has both {CLOUD_AUTH_KEY!r} and 'key'/'secret': keep one format, "
                "the operator will not guess which one you meant"
            )
        return _from_cloud_auth(data, ce, where, secret_name, namespace, proxy_path_provider)
    if KEY_KEY not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise MissingReferenceError(
            f"{where} has neither key 'key' nor {CLOUD_AUTH_KEY!r} (keys: {keys})"
        )
    key = _text(data, KEY_KEY, where).strip()
    secret = _text(data, SECRET_KEY, where).strip() if SECRET_KEY in data else None
    # Stripped too: a short value with echo's newline is otherwise never matched.
    redaction.register(
        f"{namespace}/{secret_name}:credential-values", [*data.values(), key, secret]
    )
    if not key:
        raise CredentialsError(f"{where}: key 'key' is empty")
    digest = None
    if secret == ini.PROXY_MARKER:
        secret, digest = _proxy_path(proxy_path_provider, f"{where}, key 'secret'")
    return ResolvedCredentials(key=key, secret=secret or None, origin=where, proxy_digest=digest)


def _from_cloud_auth(
    data: dict[str, bytes],
    ce: str,
    where: str,
    secret_name: str,
    namespace: str,
    provider: ProxyPathProvider | None,
) -> ResolvedCredentials:
    origin = f"key {CLOUD_AUTH_KEY!r} of {where}"
    auth = ini.parse_cloud_auth(_text(data, CLOUD_AUTH_KEY, where), origin=origin)
    redaction.register(f"{namespace}/{secret_name}:cloud.auth-values", ini.sensitive_values(auth))
    entry = ini.select_entry(auth, ce)
    secret, digest = entry.secret, None
    if entry.uses_proxy:
        secret, digest = _proxy_path(provider, f"{origin}, section [{entry.secret_section}]")
    return ResolvedCredentials(
        key=entry.key,
        secret=secret,
        origin=f"{where}, key {CLOUD_AUTH_KEY!r}, section [{entry.section}]",
        proxy_digest=digest,
    )
