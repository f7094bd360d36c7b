"""Pilots whose VM vanished while no operator watched: which to mark ended (pure).

The link's pilot table (:mod:`.link`) lives in memory. A VM that disappears while the
operator is down (or only a standby replica runs) is gone before a new process ever
lists it, so :func:`.registration.observe` never sees it leave and its pilot would stay
``Submitted``/``Running`` in DiracX forever. DiracX itself holds the list of the pool's
pilots it still takes for alive; this compares it with the cloud.

What makes a DiracX pilot this pool's, every rule required (a wrong ``Deleted`` is final,
a missed one waits for the next sweep, so each doubt keeps the pilot):

* the pool's VO, grid site, CE (``DestinationSite``) and one of its current queues;
* reference ``cloud://<id>`` and stamp ``pilot_stamp(<id>)``: a VM CloudPilot started
  (DIRAC's own Cloud CE also uses ``cloud://`` references, with 8-hex stamps);
* ``StatusReason`` = :func:`owner_mark` of the pool, which every status the operator sends
  carries: two pools on one CE and queue (two pools without ``queues`` share ``default``)
  would otherwise end each other's pilots, since neither lists the other's VMs.

And when to mark it: only when every cloud account of the pool was listed this cycle, the
VM is neither listed nor a creation still pending, the link does not already track the
pilot, and DiracX registered it more than ``grace`` ago (a listing may lag a fresh VM, and
a restarted operator has lost the record of its last creations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudpilot.naming import pilot_stamp

LIVE_STATUSES = ("Submitted", "Waiting", "Running", "Unknown")
"""DiracX's non-final pilot statuses (diracx.core.models.pilot.PilotStatus); the others,
``Done``, ``Failed``, ``Deleted`` and ``Aborted``, are never taken back."""

REFERENCE_PREFIX = "cloud://"

SEARCH_PARAMETERS = (
    "PilotID",
    "PilotStamp",
    "PilotJobReference",
    "Status",
    "StatusReason",
    "SubmissionTime",
    "VO",
    "GridSite",
    "DestinationSite",
    "Queue",
)
"""The columns a sweep reads: what the rules below look at, not the whole record."""

_MARK_LIMIT = 128
"""``StatusReason`` holds 255 characters; a pool key (namespace 63 + name 253) may not fit."""


def owner_mark(pool_key: str) -> str:
    """The ``StatusReason`` the pool's pilots carry: readable in DIRAC's monitoring, and
    what tells the pool's pilots from another pool's on the same CE and queue."""
    mark = f"CloudPilotPool {pool_key}"
    if len(mark) <= _MARK_LIMIT:
        return mark
    return f"CloudPilotPool {pool_key[:80]}~{hashlib.sha256(pool_key.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class PoolPilots:
    """Where the pool registers its pilots: what a DiracX record must match."""

    vo: str
    site: str
    ce: str
    queues: frozenset[str]
    owner: str


def search_filters(pool: PoolPilots) -> list[dict[str, Any]]:
    """``POST /api/pilots/search`` conditions for the pool's live CloudPilot pilots; the
    server narrows, :func:`vanished` decides (it checks every rule again)."""
    return [
        {"parameter": "VO", "operator": "eq", "value": pool.vo},
        {"parameter": "GridSite", "operator": "eq", "value": pool.site},
        {"parameter": "DestinationSite", "operator": "eq", "value": pool.ce},
        {"parameter": "Queue", "operator": "in", "values": sorted(pool.queues)},
        {"parameter": "Status", "operator": "in", "values": list(LIVE_STATUSES)},
        {"parameter": "StatusReason", "operator": "eq", "value": pool.owner},
        {"parameter": "PilotJobReference", "operator": "like", "value": REFERENCE_PREFIX + "%"},
    ]


@dataclass(frozen=True)
class Sweep:
    """What one sweep found: the stamps to mark ``Deleted``, and when a pilot that looked
    vanished but was still within the grace period may be marked (None: none was)."""

    stale: tuple[str, ...] = ()
    recheck_at: datetime | None = None


def vanished(
    rows: Iterable[Mapping[str, Any]],
    pool: PoolPilots,
    *,
    present: Collection[str],
    tracked: Collection[str],
    complete: bool,
    now: datetime,
    grace: timedelta,
) -> Sweep:
    """The pool's pilots DiracX takes for alive whose VM is gone.

    ``rows``: DiracX pilot records (any, filtered or not); ``present``: the instance ids
    listed this cycle and those created but not listed yet; ``tracked``: the stamps the
    link follows already (their end is :func:`.registration.observe`'s); ``complete``:
    every account of the pool listed successfully this cycle.
    """
    if not complete:
        return Sweep()
    stale: list[str] = []
    recheck: list[datetime] = []
    for row in rows:
        vm_id = _cloudpilot_vm(row, pool)
        if vm_id is None or vm_id in present or row.get("PilotStamp") in tracked:
            continue
        submitted = submission_time(row.get("SubmissionTime"))
        if submitted is None:
            continue  # no age, no proof that the listing had time to show the VM
        if now - submitted < grace:
            recheck.append(submitted + grace)
            continue
        stale.append(str(row["PilotStamp"]))
    return Sweep(tuple(sorted(set(stale))), min(recheck, default=None))


def _cloudpilot_vm(row: Mapping[str, Any], pool: PoolPilots) -> str | None:
    """The instance id of a live pilot of this pool, or None if the record is anything else."""
    reference = row.get("PilotJobReference")
    if not isinstance(reference, str) or not reference.startswith(REFERENCE_PREFIX):
        return None
    vm_id = reference[len(REFERENCE_PREFIX) :]
    if not vm_id or row.get("PilotStamp") != pilot_stamp(vm_id):
        return None
    matches = (
        row.get("VO") == pool.vo
        and row.get("GridSite") == pool.site
        and row.get("DestinationSite") == pool.ce
        and row.get("Queue") in pool.queues
        and row.get("Status") in LIVE_STATUSES
        and row.get("StatusReason") == pool.owner
    )
    return vm_id if matches else None


def submission_time(value: Any) -> datetime | None:
    """DiracX's ``SubmissionTime`` (ISO 8601, UTC; naive from its SQL backends)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def next_sweep(
    now: datetime, interval: timedelta, found: Sweep | None, retry: timedelta
) -> datetime:
    """When the pool's next sweep is due: after ``interval``, sooner when a pilot leaves
    its grace period, ``retry`` after a failed sweep (``found`` None)."""
    if found is None:
        return now + min(retry, interval)
    due = now + interval
    return min(due, found.recheck_at) if found.recheck_at is not None else due
