"""Write a pool's status through the ``/status`` subresource, only when something changed.

The per-pool daemon runs for the pool's whole life, and kopf applies a daemon's patch only
when the daemon returns, so the daemon writes status itself. The patch is a JSON merge
patch computed by ``status.status_patch``: an empty patch is never sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cloudpilot import constants
from cloudpilot.kube import client


def _patch(namespace: str, name: str, patch: dict[str, Any]) -> None:
    client.custom_objects().patch_namespaced_custom_object_status(
        constants.API_GROUP,
        constants.API_VERSION,
        namespace,
        constants.PLURAL,
        name,
        {"status": patch},
    )


async def patch_status(namespace: str, name: str, patch: dict[str, Any]) -> bool:
    """Send ``patch`` if it is not empty; returns whether anything was written."""
    if not patch:
        return False
    await asyncio.to_thread(_patch, namespace, name, patch)
    return True
