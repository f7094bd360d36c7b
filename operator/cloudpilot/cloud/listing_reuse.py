"""When a listing made for one pool may serve another: the rule, and the creates it obeys.

Kept apart from :mod:`cloudpilot.cloud.listing` (which shares listings between pools) so
that the rule is plain data in, a reason out: each case is a unit test
(tests/unit/test_listing_reuse.py), and :mod:`cloudpilot.early_create` can cite it. The
safety argument for what it lets through is in those two modules' docstrings.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from cloudpilot.memory import UNCERTAIN_HOLD


class Made(Protocol):
    """What the rule needs of a listing: when it started (monotonic) and its number."""

    @property
    def started(self) -> float: ...

    @property
    def seq(self) -> int: ...


class Unserved(StrEnum):
    """Why the latest listing is not handed to a pool (it then joins or makes a new one)."""

    NONE_YET = "NoneYet"
    """Nothing listed yet by this reconciler: a new process (restart) or a new leadership
    term (each term builds its own reconciler, its own caches and listings)."""
    TOO_OLD = "TooOld"
    """As old as ``max_age`` or older, and started before the account's latest tick."""
    BEFORE_LAST_WRITE = "BeforeLastWrite"
    """Started before the last create under the pool's prefix returned (:class:`WriteLog`):
    it may lack VMs that the pool, or a predecessor of the same name, started."""
    ALREADY_SEEN = "AlreadySeen"
    """This pool has had it: it wants something newer."""


def create_hold_left(failed_at: float, *, now: float, hold: float) -> float:
    """Seconds a new create under a queue prefix still waits after an *uncertain* create
    under it (a timeout, a lost answer) failed at ``failed_at`` (<= 0: none).

    Pure, so each case is a unit test. Such a create may start its VMs after any listing;
    the pool that made it holds the queue for ``hold`` (``memory.UNCERTAIN_HOLD``) until two
    listings, the second surely started after the failure, show them. That hold is in the
    pool's memory, keyed by its uid: a pool deleted with ``deletionPolicy: Orphan`` and
    applied again (a new uid, the same prefix) would not have it. Keyed by the prefix in
    the reconciler's :class:`WriteLog`, it holds whichever pool object creates next."""
    return failed_at + hold - now


def unserved(
    latest: Made | None,
    *,
    now: float,
    max_age: float,
    last_write: float,
    seen: int | None,
    tick_start: float | None = None,
) -> Unserved | None:
    """The rule by which a listing made for any pool serves another one (None: it does).

    Pure, so each case is a unit test. A new pool (``seen`` None) on an account this
    reconciler listed moments ago is served that listing: it decides its first creations
    from it with no listing round trip (``cloudpilot.early_create`` says why that cannot
    duplicate a VM).

    ``tick_start``: when the account's latest tick began (None: no ticks yet). A listing
    started at or after it serves the whole tick, whatever its age (under one interval):
    the account's quiet pools come due on the tick together (:mod:`cloudpilot.account_tick`)
    and the scheduler may take longer than ``max_age`` to work through them."""
    if latest is None:
        return Unserved.NONE_YET
    if now - latest.started >= max_age and (tick_start is None or latest.started < tick_start):
        return Unserved.TOO_OLD
    if latest.started < last_write:
        return Unserved.BEFORE_LAST_WRITE
    if seen == latest.seq:
        return Unserved.ALREADY_SEEN
    return None


class WriteLog:
    """When the last create under each pool prefix returned, for every listing of one
    reconciler (every endpoint, every set of credentials); and when the last *uncertain*
    create under each queue prefix failed (:func:`create_hold_left`).

    Why one log for all of them and not one per listing: two Secrets (or two spellings of
    an endpoint) can reach the same cloud account and list the same VMs through two
    shared listings. A pool deleted with ``deletionPolicy: Orphan`` and applied
    again with the other Secret (a new uid, an empty memory, the same prefix) must not be
    served the *other* listing made before its predecessor's VMs existed: it would create
    them again. A write under a prefix therefore holds back, for that prefix, every listing
    of the reconciler that started before it (at the cost, for a pool whose queues span
    accounts, of a fresh listing of the others where a shared one would have done).
    """

    def __init__(
        self,
        *,
        horizon: float,
        clock: Callable[[], float] = time.monotonic,
        uncertain_hold: float = UNCERTAIN_HOLD,
    ) -> None:
        self.horizon = horizon
        """Marks older than this are dropped: no listing that old is served anyway."""
        self.uncertain_hold = uncertain_hold
        """How long an uncertain create under a queue prefix holds the next ones."""
        self._clock = clock
        self._writes: OrderedDict[str, float] = OrderedDict()
        self._uncertain: OrderedDict[str, float] = OrderedDict()

    def note(self, prefix: str) -> None:
        now = self._clock()
        self._writes[prefix] = now
        self._writes.move_to_end(prefix)
        while self._writes:
            oldest, at = next(iter(self._writes.items()))
            if now - at <= self.horizon:
                break
            del self._writes[oldest]

    def note_uncertain(self, queue_prefix: str) -> None:
        """A create under ``queue_prefix`` failed without knowing what it started (the
        gateway calls :meth:`note` for its pool prefix as well, as after every create)."""
        now = self._clock()
        self._uncertain[queue_prefix] = now
        self._uncertain.move_to_end(queue_prefix)
        while self._uncertain:
            oldest, at = next(iter(self._uncertain.items()))
            if create_hold_left(at, now=now, hold=self.uncertain_hold) > 0:
                break
            del self._uncertain[oldest]

    def create_hold_left(self, queue_prefix: str) -> float:
        """Seconds a create under ``queue_prefix`` must still wait (<= 0: none)."""
        at = self._uncertain.get(queue_prefix)
        if at is None:
            return 0.0
        return create_hold_left(at, now=self._clock(), hold=self.uncertain_hold)

    def last(self, prefix: str | None) -> float:
        """When the last create under ``prefix`` returned (-inf: none remembered)."""
        return self._writes.get(prefix, float("-inf")) if prefix else float("-inf")
