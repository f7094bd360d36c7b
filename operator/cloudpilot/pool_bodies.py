"""The pools this operator serves, as the reconciler needs them and no more.

kopf hands every watch event to :func:`PoolBodies.observe`; the scheduler reads the pool's
body back when it is due. What is kept is the slice a reconcile, an event and a status patch
use: ``apiVersion``, ``kind``, the identifying metadata, ``spec`` and ``status``. A real API
server also sends ``managedFields`` and ``kubectl``'s last-applied annotation (a second copy
of the spec): at 1,000 pools those would be most of the store.

A pool's metadata is updated *in place*, so a reconcile waiting for its pool's lock reads
the pool's metadata as it is when it runs (for instance, with the ``deletionTimestamp`` that
arrived meanwhile), not as it was when it was scheduled. ``spec`` and ``status`` are kept as
compact JSON and handed out as fresh copies.

Pure: plain dicts in, plain answers out; unit-tested without kopf or a cluster.
"""

from __future__ import annotations

import copy
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")


class Change(enum.Enum):
    """What a watch event means for the schedule."""

    NEW = "new"  # first sight (creation, or the operator's start-up listing): reconcile now
    SPEC_CHANGED = "spec-changed"  # a new generation (``kubectl apply``/``scale``): now
    DELETING = "deleting"  # deletion requested: the finalizer handler takes over
    GONE = "gone"  # the object is gone from the API
    OTHER = "other"  # status, labels, our own writes: keep the schedule as it is


def kept_metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The identifying metadata CloudPilot reads (all plain strings and numbers); the rest
    (``managedFields``, annotations, labels) is left with kopf's copy of the event."""
    metadata = raw.get("metadata") or {}
    return {k: metadata[k] for k in KEPT_METADATA if k in metadata}


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Apply a JSON merge patch (RFC 7386) to ``target`` in place: what the API server does
    with the status patches CloudPilot sends."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _compact(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class _Entry:
    """One pool, stored lean: a live metadata dict (small, shared with running reconciles)
    and ``spec``/``status`` as compact JSON, about a fifth of the same data as Python dicts
    and strings, and re-read only once per reconcile."""

    api_version: str | None
    kind: str | None
    metadata: dict[str, Any]
    spec: str
    status: str

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": self.metadata,
            "spec": json.loads(self.spec),
            "status": json.loads(self.status),
        }


class PoolBodies:
    """Lean, live bodies by pool uid."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, uid: str) -> dict[str, Any] | None:
        """The pool's body as of the last event (and the last status written). ``spec`` and
        ``status`` are the caller's own copies; ``metadata`` stays live."""
        entry = self._entries.get(uid)
        return entry.body() if entry is not None else None

    def observe(self, event_type: str | None, raw: Mapping[str, Any]) -> Change:
        """Record one watch event (``ADDED``, ``MODIFIED``, ``DELETED``, or None for the
        start-up listing) and say what it changes."""
        uid = (raw.get("metadata") or {}).get("uid", "")
        if event_type == "DELETED":
            self._entries.pop(uid, None)
            return Change.GONE
        metadata = kept_metadata(raw)
        known = self._entries.get(uid)
        generation = known.metadata.get("generation") if known is not None else None
        status = _compact(raw.get("status") or {})
        # The spec changes only with the generation, and most events are echoes of
        # CloudPilot's own status writes: keep the serialised spec then.
        if (
            known is not None
            and generation is not None
            and metadata.get("generation") == generation
        ):
            spec = known.spec
        else:
            spec = _compact(raw.get("spec") or {})
        if known is None:
            self._entries[uid] = _Entry(
                raw.get("apiVersion"), raw.get("kind"), metadata, spec, status
            )
        else:
            known.api_version, known.kind = raw.get("apiVersion"), raw.get("kind")
            known.metadata.clear()
            known.metadata.update(metadata)
            known.spec, known.status = spec, status
        if metadata.get("deletionTimestamp"):
            return Change.DELETING
        if known is None:
            return Change.NEW
        if metadata.get("generation") != generation:
            return Change.SPEC_CHANGED
        return Change.OTHER

    def record_status(self, uid: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Apply a status patch that was just written and return the pool's status now.

        The next reconcile then compares against it even if the watch event that echoes it
        has not arrived yet (otherwise a slow watch would make a quiet cycle write the same
        status again).
        """
        entry = self._entries.get(uid)
        if entry is None:
            return None
        status: dict[str, Any] = json.loads(entry.status)
        if patch:
            merge_patch(status, patch)
            entry.status = _compact(status)
        return status
