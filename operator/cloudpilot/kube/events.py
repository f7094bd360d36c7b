"""Post a pool's Kubernetes Events (``kubectl describe cloudpilotpool`` shows them).

The scheduler runs outside kopf's per-object handler tasks, where ``kopf.event`` finds its
posting queue, so CloudPilot posts its own (teardown too, so that every event of a pool
goes one way): a core/v1 Event per distinct event, through the operator's client
(:mod:`cloudpilot.kube.client`); a repeat within ten minutes patches the posted one's
``count`` instead (:class:`EventRecorder`), as client-go's recorder does. Messages pass
through redaction once more on the way out: an event outlives the pod and is readable by
anyone who may list events in the namespace. A failed post is logged and dropped, as kopf
does: an event is a courtesy, never a reason to fail a reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from cloudpilot import leader
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


AGGREGATION_WINDOW = 600.0
"""Seconds during which a repeat of an event bumps the posted one's ``count`` (what
client-go's EventCorrelator does, with its ten-minute window) rather than adding another."""
MAX_CACHED_EVENTS = 4096
"""Recent events remembered for aggregation; the oldest are forgotten first."""

EventKey = tuple[str, str, str, str, str, str]
"""(namespace, involved object's uid or name, kind, type, reason, message)."""


@dataclass
class _Posted:
    name: str
    count: int
    posted_at: float


@dataclass
class _KeyLock:
    """Serialises the posts of one event (see :meth:`EventRecorder.post`); dropped with its
    last user, so that the locks never outnumber the posts in flight."""

    lock: asyncio.Lock
    users: int = 0


class EventApi(Protocol):
    """The two calls of the API server events need (a fake one in the unit tests)."""

    async def create(self, namespace: str, event: dict[str, Any]) -> str:
        """Create ``event``; its name."""

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch the Event ``name``; :class:`LookupError` when it is gone (404)."""


class _KubeEventApi:
    """:class:`EventApi` through the current operator run's client."""

    async def create(self, namespace: str, event: dict[str, Any]) -> str:
        created = await client.current().create_event(namespace, event)
        return str(created["metadata"]["name"])

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        try:
            await client.current().patch_event(namespace, name, patch)
        except client.ApiError as exc:
            if exc.status == 404:
                raise LookupError(name) from None
            raise


class EventRecorder:
    """Posts events, aggregated the Kubernetes way: the same event (same object, type,
    reason and message) again within :data:`AGGREGATION_WINDOW` increments the existing
    Event's ``count`` and ``lastTimestamp``; one that expired (404) is created anew."""

    def __init__(
        self,
        api: EventApi | None = None,
        *,
        window: float = AGGREGATION_WINDOW,
        capacity: int = MAX_CACHED_EVENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api: EventApi = api or _KubeEventApi()
        self.window = window
        self.capacity = capacity
        self.clock = clock
        self._recent: OrderedDict[EventKey, _Posted] = OrderedDict()
        self._posting: dict[EventKey, _KeyLock] = {}

    @staticmethod
    def key(event: Mapping[str, Any]) -> EventKey:
        involved = event.get("involvedObject") or {}
        return (
            str(involved.get("namespace") or ""),
            str(involved.get("uid") or involved.get("name") or ""),
            str(involved.get("kind") or ""),
            str(event.get("type")),
            str(event.get("reason")),
            str(event.get("message")),
        )

    async def post(self, namespace: str, event: dict[str, Any]) -> None:
        """Create or aggregate ``event``.

        Posts of the same event wait for each other: each reads the count the previous one
        left, across its own awaits. Two concurrent repeats would otherwise both PATCH the
        same ``count + 1`` (one repeat lost), and two concurrent first posts would both
        create an Event. Different events do not wait for each other."""
        key = self.key(event)
        entry = self._posting.setdefault(key, _KeyLock(asyncio.Lock()))
        entry.users += 1
        try:
            async with entry.lock:
                await self._post(key, namespace, event)
        finally:
            entry.users -= 1
            if not entry.users:
                del self._posting[key]

    async def _post(self, key: EventKey, namespace: str, event: dict[str, Any]) -> None:
        now = self.clock()
        seen = self._recent.get(key)
        if seen is not None and now - seen.posted_at > self.window:
            del self._recent[key]
            seen = None
        if seen is not None:
            count = seen.count + 1
            try:
                await self.api.patch(
                    namespace,
                    seen.name,
                    {"count": count, "lastTimestamp": event["lastTimestamp"]},
                )
            except LookupError:
                seen = None  # expired or deleted by someone: a new one
            else:
                self._remember(key, replace(seen, count=count, posted_at=now))
                return
        name = await self.api.create(namespace, event)
        self._remember(key, _Posted(name, 1, now))

    def _remember(self, key: EventKey, posted: _Posted) -> None:
        self._recent[key] = posted
        self._recent.move_to_end(key)
        while len(self._recent) > self.capacity:
            self._recent.popitem(last=False)


recorder = EventRecorder()
"""The operator's one recorder (its cache is what aggregates across cycles)."""


async def post_events(body: Mapping[str, Any], events: Iterable[Any]) -> None:
    """Post ``events`` (objects with ``type``, ``reason``, ``message``) about the pool;
    none once this replica's Lease has lapsed (each post is an await: it may lapse
    between two)."""
    namespace = (body.get("metadata") or {}).get("namespace", "")
    for event in events:
        if not leader.may_act():
            return
        payload = build_event(body, event.type, event.reason, event.message, datetime.now(UTC))
        try:
            await recorder.post(namespace, payload)
        except Exception as exc:  # see the module docstring
            logger.warning(
                "could not post event %s for %s/%s: %s",
                event.reason,
                namespace,
                payload["involvedObject"].get("name"),
                type(exc).__name__,
            )
