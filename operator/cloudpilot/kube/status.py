"""Write a pool's status through the ``/status`` subresource, only when something changed.

Reconciles run in CloudPilot's scheduler, outside kopf's handlers (which could only patch
status when they return), so status is written here. The patch is a JSON merge
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
        field_validation="Strict",  # a field the CRD lacks is an error, never pruned quietly
        _preload_content=False,  # the answer is the whole pool: nothing here reads it
    )


async def patch_status(namespace: str, name: str, patch: dict[str, Any]) -> bool:
    """Send ``patch`` if it is not empty; returns whether anything was written."""
    if not patch:
        return False
    await asyncio.to_thread(_patch, namespace, name, patch)
    return True
