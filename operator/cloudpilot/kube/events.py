"""Post a pool's Kubernetes Events (``kubectl describe cloudpilotpool`` shows them).

The scheduler runs outside kopf's per-object handler tasks, where ``kopf.event`` finds its
posting queue, so CloudPilot posts its own (teardown too, so that every event of a pool
goes one way): one ``create`` of a core/v1 Event per event, in
a worker thread (the official client is synchronous). Messages pass through redaction once
more on the way out: an event outlives the pod and is readable by anyone who may list events
in the namespace. A failed post is logged and dropped, as kopf does: an event is a courtesy,
never a reason to fail a reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cloudpilot.kube import client
from cloudpilot.redaction import redact

logger = logging.getLogger(__name__)
COMPONENT = "cloudpilot"
MAX_EVENT_MESSAGE = 1024  # what kopf allows; the API server refuses messages over 1 MiB


def build_event(
    body: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event about ``body`` (the pool), as plain data."""
    metadata = body.get("metadata") or {}
    involved = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "uid": metadata.get("uid"),
    }
    stamp = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{COMPONENT}-event-"},
        "involvedObject": {k: v for k, v in involved.items() if v},
        "type": type_,
        "reason": reason,
        "message": redact(message)[:MAX_EVENT_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _create(namespace: str, event: dict[str, Any]) -> None:
    client.core_v1().create_namespaced_event(
        namespace, event, field_validation="Strict", _preload_content=False
    )


async def post_events(body: Mapping[str, Any], events: Iterable[Any]) -> None:
    """Post ``events`` (objects with ``type``, ``reason``, ``message``) about the pool."""
    namespace = (body.get("metadata") or {}).get("namespace", "")
    for event in events:
        payload = build_event(body, event.type, event.reason, event.message, datetime.now(UTC))
        try:
            await asyncio.to_thread(_create, namespace, payload)
        except Exception as exc:  # see the module docstring
            logger.warning(
                "could not post event %s for %s/%s: %s",
                event.reason,
                namespace,
                payload["involvedObject"].get("name"),
                type(exc).__name__,
            )
