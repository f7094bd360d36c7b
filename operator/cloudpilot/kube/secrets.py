"""Read Secrets and ConfigMaps by name (``get`` only: no list, no watch, no cluster-wide read).

The official client is synchronous; calls run in a worker thread. Errors name the object
and the key that is missing, never a value.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from cloudpilot.kube import client
from cloudpilot.models.queues import ConfigError


class MissingReferenceError(ConfigError):
    """A Secret, ConfigMap or key that the spec names does not exist."""


def _read(kind: str, namespace: str, name: str) -> dict[str, str]:
    import kubernetes

    api = client.core_v1()
    try:
        if kind == "Secret":
            obj = api.read_namespaced_secret(name, namespace)
        else:
            obj = api.read_namespaced_config_map(name, namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            raise MissingReferenceError(f"{kind} {namespace}/{name} not found") from None
        if exc.status == 403:
            raise MissingReferenceError(
                f"{kind} {namespace}/{name} cannot be read: forbidden (check the RBAC rules)"
            ) from None
        raise ConnectionError(f"reading {kind} {namespace}/{name}: HTTP {exc.status}") from None
    return dict(obj.data or {})


async def read_secret(namespace: str, name: str) -> dict[str, bytes]:
    data = await asyncio.to_thread(_read, "Secret", namespace, name)
    return {k: base64.b64decode(v) for k, v in data.items()}


async def read_configmap(namespace: str, name: str) -> dict[str, str]:
    return await asyncio.to_thread(_read, "ConfigMap", namespace, name)


def require_key(kind: str, namespace: str, name: str, data: dict[str, Any], key: str) -> Any:
    if key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise MissingReferenceError(f"{kind} {namespace}/{name} has no key {key!r} (keys: {keys})")
    return data[key]
