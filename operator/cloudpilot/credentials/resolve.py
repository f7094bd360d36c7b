"""Cloud credentials from a pool's ``credentialsSecret``."""

from __future__ import annotations

from cloudpilot.cloud.gateway import Credentials
from cloudpilot.kube.secrets import MissingReferenceError


def credentials_from_secret(
    data: dict[str, bytes], *, ce: str, namespace: str, secret_name: str
) -> Credentials:
    """``key`` and ``secret`` keys (``secret`` optional: some drivers take one token)."""
    if "key" not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise MissingReferenceError(
            f"Secret {namespace}/{secret_name} has no key 'key' (keys: {keys})"
        )
    key = data["key"].decode().strip()
    secret = data["secret"].decode().strip() if "secret" in data else None
    return Credentials(key=key, secret=secret)
