"""Write a pool's status through the ``/status`` subresource, only when something changed.

Reconciles run in CloudPilot's scheduler, outside kopf's handlers (which could only patch
status when they return), so status is written here, through the operator's client
(:mod:`cloudpilot.kube.client`). The patch is a JSON merge patch computed by
``status.status_patch``: an empty patch is never sent.
"""

from __future__ import annotations

from typing import Any

from cloudpilot.kube import client


async def patch_status(namespace: str, name: str, patch: dict[str, Any]) -> bool:
    """Send ``patch`` if it is not empty; returns whether anything was written."""
    if not patch:
        return False
    await client.current().patch_status(namespace, name, patch)
    return True
