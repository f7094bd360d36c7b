"""What a pool's reconciler remembers between two listings, as immutable data.

The cloud listing is the truth, but it lags: an eventually consistent cloud may not list a
VM for seconds after ``create`` returned, and EC2 keeps listing a destroyed VM as
``shutting-down`` for a minute. Without memory the first would be created twice and the
second counted as live. Memory only ever *adds* to what the listing shows, and forgets on
its own (a TTL): after a restart it is empty and the listing alone is used, which is safe
on a consistent cloud and at worst errs the way DIRAC always did on a lagging one.

Every function here is pure: ``(memory, facts, now) -> memory``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from cloudpilot import constants
from cloudpilot.models.queues import CloudAccount
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.reasons import Reason


class ErrorKind(StrEnum):
    """Classes of cloud failure; each has its own reason in status and its own retry.
    The values are :class:`~cloudpilot.reasons.Reason`'s: one name in Events, conditions
    and audit lines (``reason_of``)."""

    BAD_CREDENTIALS = Reason.BAD_CREDENTIALS.value
    NOT_FOUND = Reason.NOT_FOUND.value
    QUOTA = Reason.QUOTA_EXCEEDED.value
    TRANSIENT = Reason.TRANSIENT.value
    INVALID_REQUEST = Reason.INVALID_REQUEST.value
    CONFIG = Reason.INVALID_CONFIG.value
    PROXY_EXPIRED = Reason.PROXY_EXPIRED.value
    INVALID_PROXY = Reason.INVALID_PROXY.value
    """The pilot proxy is not a PEM certificate chain with its key: nothing can use it."""
    UNREACHABLE = Reason.ENDPOINT_UNREACHABLE.value
    """The endpoint refused the connection or has no address: retried with back-off, and
    Stalled once it has lasted ``unreachable_stall_after`` (it may be down for good)."""


def reason_of(kind: ErrorKind) -> Reason:
    """The reason an error class shows as, in every Event, condition and audit line."""
    return Reason(kind.value)


PERSISTENT_KINDS = frozenset(
    {
        ErrorKind.BAD_CREDENTIALS,
        ErrorKind.NOT_FOUND,
        ErrorKind.INVALID_REQUEST,
        ErrorKind.CONFIG,
        ErrorKind.PROXY_EXPIRED,
        ErrorKind.INVALID_PROXY,
    }
)
"""Failures that need a human (a fixed spec or Secret): they make the pool Stalled."""


@dataclass(frozen=True)
class CloudError:
    """A classified failure: the message is already cut and scrubbed of secrets."""

    kind: ErrorKind
    message: str
    operation: str = ""
    uncertain: bool = False
    """The call may have been carried out all the same: it timed out, or the connection
    was lost after the request went out. Only a fresh listing tells."""


@dataclass(frozen=True)
class PendingVM:
    """A VM that ``create`` returned but that no listing has shown yet."""

    id: str
    name: str
    queue: str
    created_at: datetime


@dataclass(frozen=True)
class Backoff:
    failures: int
    retry_at: datetime
    error: CloudError


@dataclass(frozen=True)
class PoolMemory:
    pending: Mapping[str, PendingVM] = field(default_factory=dict)
    deleting: Mapping[str, datetime] = field(default_factory=dict)
    """VM id -> when its destroy was accepted."""
    backoff: Mapping[str, Backoff] = field(default_factory=dict)
    """Queue name -> back-off after failed creations in that queue."""
    outage: Outage | None = None
    """Since when the pool's cloud accounts cannot be listed (None: they could, last time)."""
    generation: int = 0
    """The spec generation the back-off was earned under (0: not known yet)."""
    fingerprints: Mapping[CloudAccount, str] = field(default_factory=dict)
    """Account -> fingerprint of the credentials it was listed with last: a change is a
    rotated Secret, which clears the back-off (see :func:`cloudpilot.decision.decide`)."""


@dataclass(frozen=True)
class Outage:
    """Consecutive failed listings: when they began, how many, and the latest error."""

    since: datetime
    failures: int
    error: CloudError


def record_outage(memory: PoolMemory, error: CloudError | None, now: datetime) -> PoolMemory:
    """A cycle's listing outcome: ``error`` None ends an outage; a failure of another kind
    than the last one starts a new one (an endpoint that came back and now refuses the
    credentials is a new problem, not an older one)."""
    if error is None:
        return memory if memory.outage is None else replace(memory, outage=None)
    previous = memory.outage
    if previous is None or previous.error.kind is not error.kind:
        return replace(memory, outage=Outage(since=now, failures=1, error=error))
    return replace(memory, outage=Outage(previous.since, previous.failures + 1, error))


def outage_lasted(outage: Outage | None, now: datetime, bound: float) -> bool:
    """Whether an outage has gone on for ``bound`` seconds or more (it then stalls)."""
    return outage is not None and (now - outage.since).total_seconds() >= bound


def observe(memory: PoolMemory, listed_ids: Iterable[str], now: datetime) -> PoolMemory:
    """Forget what the new listing made redundant, and whatever outlived its TTL."""
    listed = set(listed_ids)
    pending_ttl = timedelta(seconds=constants.PENDING_CREATE_TTL)
    deleting_ttl = timedelta(seconds=constants.DELETING_TTL)
    pending = {
        vm_id: vm
        for vm_id, vm in memory.pending.items()
        if vm_id not in listed and now - vm.created_at < pending_ttl
    }
    deleting = {
        vm_id: at
        for vm_id, at in memory.deleting.items()
        if vm_id in listed and now - at < deleting_ttl
    }
    return replace(memory, pending=pending, deleting=deleting)


def record_created(memory: PoolMemory, vms: Iterable[PendingVM]) -> PoolMemory:
    return replace(memory, pending={**memory.pending, **{vm.id: vm for vm in vms}})


def record_deleting(memory: PoolMemory, vm_ids: Iterable[str], now: datetime) -> PoolMemory:
    return replace(memory, deleting={**memory.deleting, **dict.fromkeys(vm_ids, now)})


def backoff_delay(
    failures: int, kind: ErrorKind, *, initial: float, maximum: float, jitter: float
) -> float:
    """Capped exponential back-off with jitter (``jitter`` in [0, 1) from the caller).

    Jitter on the upper half (delay * [0.5, 1.0)) spreads the retries of many pools that
    failed together without ever retrying sooner than half the nominal delay. Rejected
    credentials back off further: retrying them fast only fills the cloud's audit log
    (a rotated Secret clears the back-off at once, see the reconciler).
    """
    cap = (
        max(maximum, constants.BACKOFF_MAX_BAD_CREDENTIALS)
        if (kind is ErrorKind.BAD_CREDENTIALS)
        else maximum
    )
    # The exponent is bounded: past ~1,000 failures (a week of exhausted quota) 2**n no
    # longer fits a float, and 2**64 times any initial delay is past every cap anyway.
    if kind is ErrorKind.BAD_CREDENTIALS:
        initial = max(initial, constants.BACKOFF_INITIAL_BAD_CREDENTIALS)
    nominal: float = min(cap, initial * 2 ** min(max(failures - 1, 0), 64))
    return nominal * (0.5 + jitter / 2)


def record_failure(
    memory: PoolMemory,
    queue: str,
    error: CloudError,
    now: datetime,
    *,
    initial: float | None = None,
    maximum: float = constants.BACKOFF_MAX,
    jitter: float | None = None,
) -> PoolMemory:
    """Back off ``queue`` after a failed call. ``initial`` defaults by the error's kind:
    transient faults (throttling, 5xx, timeouts) start at 2 s, everything else at 10 s."""
    if initial is None:
        initial = (
            constants.BACKOFF_INITIAL_TRANSIENT
            if error.kind is ErrorKind.TRANSIENT
            else constants.BACKOFF_INITIAL
        )
    previous = memory.backoff.get(queue)
    failures = (previous.failures if previous else 0) + 1
    if jitter is None:
        jitter = random.random()
    delay = backoff_delay(failures, error.kind, initial=initial, maximum=maximum, jitter=jitter)
    if error.uncertain:
        # The call may have created VMs whose ids we never got: no creation in this queue
        # until two listings (every TRANSIENT_LISTING_RETRY) have had a chance to show them;
        # the second surely started after the failure, whatever listing the first reused.
        delay = max(delay, UNCERTAIN_HOLD)
    entry = Backoff(failures=failures, retry_at=now + timedelta(seconds=delay), error=error)
    return replace(memory, backoff={**memory.backoff, queue: entry})


UNCERTAIN_HOLD = 2 * constants.TRANSIENT_LISTING_RETRY + 1.0
"""Seconds new creations wait after a create whose outcome is unknown (see record_failure)."""


def for_generation(memory: PoolMemory, generation: int) -> PoolMemory:
    """The memory under spec ``generation``: an edited spec clears the back-off that the
    previous one earned (a fixed template, an added executable Secret, a corrected image),
    so the fix is tried at once rather than after up to ``BACKOFF_MAX``, except the hold
    after an uncertain create. The first cycle of a process only records the generation:
    what it remembers was earned under it."""
    if memory.generation == generation:
        return memory
    if memory.generation == 0:
        return replace(memory, generation=generation)
    # A back-off after an uncertain failure stays: it guards against a duplicate, not a fault.
    kept = {q: b for q, b in memory.backoff.items() if b.error.uncertain}
    return replace(memory, backoff=kept, generation=generation)


def record_success(memory: PoolMemory, queue: str) -> PoolMemory:
    if queue not in memory.backoff:
        return memory
    return replace(memory, backoff={k: v for k, v in memory.backoff.items() if k != queue})


def in_backoff(memory: PoolMemory, queue: str, now: datetime) -> Backoff | None:
    entry = memory.backoff.get(queue)
    return entry if entry is not None and entry.retry_at > now else None


def pending_as_observed(memory: PoolMemory) -> list[ObservedVM]:
    """Pending creations, shown as Starting VMs until a listing has them."""
    return [
        ObservedVM(
            id=vm.id,
            name=vm.name,
            queue=vm.queue,
            phase=Phase.STARTING,
            created_at=vm.created_at,
            cloud_state="pending",
        )
        for vm in memory.pending.values()
    ]
