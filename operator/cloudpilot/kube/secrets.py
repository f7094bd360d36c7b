"""Read Secrets and ConfigMaps by name (``get`` only: no list, no watch, no cluster-wide read).

Through the operator's client (:mod:`cloudpilot.kube.client`). Errors name the object and
the key that is missing, never a value.
"""

from __future__ import annotations

import base64
from typing import Any

from cloudpilot.kube import client
from cloudpilot.models.queues import ConfigError


class MissingReferenceError(ConfigError):
    """A Secret, ConfigMap or key that the spec names does not exist."""


def _refused(kind: str, namespace: str, name: str, exc: client.ApiError) -> Exception:
    """What a failed read means to the pool: a missing or unreadable reference is the
    user's to fix; anything else is the API server's fault and passes."""
    if exc.status == 404:
        return MissingReferenceError(f"{kind} {namespace}/{name} not found")
    if exc.status == 403:
        return MissingReferenceError(
            f"{kind} {namespace}/{name} cannot be read: forbidden (check the RBAC rules)"
        )
    return ConnectionError(f"reading {kind} {namespace}/{name}: HTTP {exc.status}")


async def read_secret(namespace: str, name: str) -> dict[str, bytes]:
    try:
        data = await client.current().read_secret(namespace, name)
    except client.ApiError as exc:
        raise _refused("Secret", namespace, name, exc) from None
    return {k: base64.b64decode(v) for k, v in data.items()}


async def read_configmap(namespace: str, name: str) -> dict[str, str]:
    try:
        return await client.current().read_configmap(namespace, name)
    except client.ApiError as exc:
        raise _refused("ConfigMap", namespace, name, exc) from None


def require_key(kind: str, namespace: str, name: str, data: dict[str, Any], key: str) -> Any:
    if key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise MissingReferenceError(f"{kind} {namespace}/{name} has no key {key!r} (keys: {keys})")
    return data[key]
