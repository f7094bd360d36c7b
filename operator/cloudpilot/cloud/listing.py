"""One listing per cloud account per cycle, shared by every pool on that account.

Each pool reconciles on its own clock, and each reconcile needs the pool's VMs as the cloud
sees them. Listing the account once per pool costs one API call per pool per cycle, so a
thousand pools on one account would cost a thousand ``DescribeInstances`` a minute for
answers that are all cut from the same list. Instead the pools that share an endpoint and
credentials share a :class:`SharedListing`:

* **in-flight listings are awaited, not repeated**: while one listing is on the wire, every
  pool that asks joins it;
* **recent listings are reused**: a listing younger than ``max_age`` (a fraction of the
  reconcile interval, :data:`LISTING_REUSE_FRACTION`) serves the pools that ask after it;
* **each pool sees something new each time**: a listing a pool has already been given is
  never handed to it again. A pool that comes back early (it is converging, or its
  teardown wants to see its VMs gone) joins the next listing or starts one, so sharing
  never slows a pool's own progress down, and a pool always sees listings in the order
  they were made (one listing at a time per account, each newer than the last).
* **a tick's listing serves the whole tick**: quiet pools come due on their account's tick
  (:mod:`cloudpilot.account_tick`, whose phase is this listing's first start), all at once.
  A listing started at or after the latest tick is reused until the next tick, whatever its
  age (so under one interval), however long the scheduler takes to work through the
  tick's burst of pools;
* **split by ownership prefix**: the snapshot is indexed once by pool name prefix, so a
  pool gets only its own VMs without every pool scanning every VM;
* **never older than a create under the pool's prefix**: the reconciler's
  :class:`~cloudpilot.cloud.listing_reuse.WriteLog` (one for all its listings) says when
  the last create under each prefix returned; a listing that started before is not served
  for that prefix. The rule is :func:`~cloudpilot.cloud.listing_reuse.unserved`.

Why a slightly stale shared listing is safe: the only things that can be missing from a
listing made a few seconds ago are changes made since. A pool's *own* creations and
deletions are already in the reconciler's memory (``memory.pending`` counts a created VM
until a listing shows it, ``memory.deleting`` discounts a destroyed VM while listings still
show it), so the pool neither creates twice nor counts a VM it destroyed. Because a pool
only ever gets listings newer than the last one it saw, a VM that left ``pending`` once it
was listed cannot "disappear" again in an older listing. What a stale listing can miss is
the cloud's own changes (a pilot VM that halted itself, a VM destroyed by hand): those are
seen at most ``max_age`` later, which is like a slightly longer reconcile interval, never a
wrong decision in the other direction.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar
from weakref import WeakKeyDictionary, WeakValueDictionary

from cloudpilot.account_tick import Tick
from cloudpilot.cloud.listing_reuse import WriteLog, unserved

LISTING_REUSE_FRACTION = 0.5
"""A shared listing is reused by other pools while younger than this fraction of the
reconcile interval. Pools whose cycles started together stay within a few seconds of each
other (one reconcile's processing time), so half an interval is plenty to serve them all
from one listing, while a pilot that halted is still seen within 1.5 intervals."""

MAX_TRACKED_CONSUMERS = 20_000
"""Bound on the per-consumer "already seen" marks (one per pool): past it the oldest marks
are dropped, which at worst gives that pool a listing it has seen (harmless)."""

# A pool prefix ends in "-<6 hex>-" (see cloudpilot.naming.pool_prefix): every position in a
# name where that pattern ends is a candidate pool prefix of the name.
_POOL_PREFIX_END = re.compile(r"(?=(-[0-9a-f]{6}-))")
_POOL_PREFIX_SHAPE = re.compile(r".*-[0-9a-f]{6}-\Z", re.DOTALL)
_PREFIX_SCAN_LIMIT = 64
"""Pool prefixes are at most 31 characters; look no further into a name than this."""


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


@dataclass(eq=False)
class Snapshot(Generic[N]):
    """One listing of an account, as made at ``started`` (monotonic clock)."""

    seq: int
    started: float
    nodes: tuple[N, ...]
    _index: dict[str, list[N]] | None = field(default=None, repr=False)
    _scanned: dict[str, tuple[N, ...]] = field(default_factory=dict, repr=False)

    def with_prefix(self, prefix: str | None) -> tuple[N, ...]:
        """The nodes whose name starts with ``prefix`` (all of them for None)."""
        if not prefix:
            return self.nodes
        if _POOL_PREFIX_SHAPE.match(prefix):
            if self._index is None:
                self._index = _index_by_pool_prefix(self.nodes)
            return tuple(self._index.get(prefix, ()))
        found = self._scanned.get(prefix)
        if found is None:
            found = self._scanned[prefix] = tuple(
                n for n in self.nodes if n.name.startswith(prefix)
            )
        return found


def _index_by_pool_prefix(nodes: Sequence[N]) -> dict[str, list[N]]:
    """Every candidate pool prefix of every name -> the nodes that carry it (one pass)."""
    index: dict[str, list[N]] = {}
    for node in nodes:
        name = node.name or ""
        head = name[:_PREFIX_SCAN_LIMIT]
        for match in _POOL_PREFIX_END.finditer(head):
            index.setdefault(name[: match.start() + len(match.group(1))], []).append(node)
    return index


class SharedListing(Generic[N]):
    """Coalesces the listings of one cloud account (one event loop; not thread-safe).

    ``get(consumer, fetch)`` returns a snapshot newer than any ``consumer`` has had: the
    latest one if it is younger than ``max_age`` and new to this consumer, else the one in
    flight, else a new one made with ``fetch`` (the caller's: whichever gateway asks first
    does the call, so the listing holds no reference to a gateway).
    """

    def __init__(
        self,
        *,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
        writes: WriteLog | None = None,
    ) -> None:
        """``writes``: the reconciler's :class:`WriteLog` (None: one of its own, for a
        listing used alone); it must keep marks for at least an interval (a tick's listing
        is served for up to one)."""
        if max_age < 0:
            raise ValueError("max_age must be >= 0")
        if writes is not None and writes.horizon < max_age / LISTING_REUSE_FRACTION:
            raise ValueError("the write log must keep its marks for at least an interval")
        self.max_age = max_age
        self._clock = clock
        self._latest: Snapshot[N] | None = None
        self._inflight: asyncio.Future[Snapshot[N]] | None = None
        self._seq = 0
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.writes = (
            writes
            if writes is not None
            else WriteLog(horizon=max_age / LISTING_REUSE_FRACTION, clock=clock)
        )
        """Name prefix -> when the last create under it returned."""
        self.phase: float | None = None
        """When the account's first listing started: its ticks are this plus multiples of
        the interval (see :attr:`tick`)."""
        self.fetches = 0
        """Listings actually made (for tests and the benchmark)."""
        self.served = 0
        """Listings handed out, made or shared."""

    async def get(
        self,
        consumer: str | None,
        fetch: Callable[[], Awaitable[Sequence[N]]],
        prefix: str | None = None,
    ) -> Snapshot[N]:
        """``prefix``: the consumer's name prefix; a listing that started before the last
        create made under it (:meth:`note_write`) is never handed out for it."""
        not_before = self.writes.last(prefix)
        snapshot = self._reusable(consumer, not_before)
        while snapshot is None:
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._make(fetch))
            # shield: a pool cancelled mid-wait (operator stopping) must not cancel the
            # listing the other pools are waiting for.
            made = await asyncio.shield(self._inflight)
            if made.started >= not_before:
                snapshot = made
            # else it was on its way before the write: wait for the next one.
        self._mark(consumer, snapshot.seq)
        self.served += 1
        return snapshot

    @property
    def interval(self) -> float:
        """The reconcile interval ``max_age`` was cut from (0: no reuse, no ticks)."""
        return self.max_age / LISTING_REUSE_FRACTION

    @property
    def tick(self) -> Tick | None:
        """The account's ticks, once it has been listed (None before, or with no interval):
        quiet pools on this account come due on them (:func:`cloudpilot.account_tick.due_at`)."""
        if self.phase is None or self.interval <= 0:
            return None
        return Tick(self.phase, self.interval)

    def note_write(self, prefix: str) -> None:
        """A create under ``prefix`` has returned. Why: a pool's own creations are in its
        memory, but a pool deleted with ``deletionPolicy: Orphan`` and applied again (a
        new uid, an empty memory, the same prefix) would otherwise be served a listing
        made before its predecessor's VMs existed, and create them again. Noted in the
        reconciler's :class:`WriteLog`, so it holds back its other listings too."""
        self.writes.note(prefix)

    def _reusable(self, consumer: str | None, not_before: float) -> Snapshot[N] | None:
        latest = self._latest
        now = self._clock()
        tick = self.tick
        why = unserved(
            latest,
            now=now,
            max_age=self.max_age,
            last_write=not_before,
            seen=self._seen.get(consumer) if consumer is not None else None,
            tick_start=tick.start_of(now) if tick is not None else None,
        )
        return latest if why is None else None

    async def _make(self, fetch: Callable[[], Awaitable[Sequence[N]]]) -> Snapshot[N]:
        started = self._clock()
        try:
            nodes = tuple(await fetch())
            self.fetches += 1
            self._seq += 1
            snapshot = Snapshot(seq=self._seq, started=started, nodes=nodes)
            if self.phase is None:
                self.phase = started
            self._latest = snapshot
            return snapshot
        finally:
            self._inflight = None

    def _mark(self, consumer: str | None, seq: int) -> None:
        if consumer is None:
            return
        self._seen[consumer] = seq
        self._seen.move_to_end(consumer)
        while len(self._seen) > MAX_TRACKED_CONSUMERS:
            self._seen.popitem(last=False)

    def forget(self, consumer: str) -> None:
        self._seen.pop(consumer, None)


_REGISTRY: WeakKeyDictionary[object, WeakValueDictionary[str, SharedListing]] = (  # type: ignore[type-arg]
    WeakKeyDictionary()
)


def shared_listing(
    scope: object, key: str, *, max_age: float, writes: WriteLog | None = None
) -> SharedListing:  # type: ignore[type-arg]
    """The account's shared listing within ``scope``, made on first use (``writes``: the
    reconciler's write log, see :class:`WriteLog`).

    ``scope`` is the endpoint's rate limiter: there is one per endpoint per reconciler, so
    listings are shared by every gateway of one reconciler on one endpoint (and never across
    two reconcilers, which may run in different event loops). ``key`` identifies the
    credentials. Entries live as long as a gateway holds them (weak values): a rotated
    Secret's listing goes with its last gateway.
    """
    by_key = _REGISTRY.get(scope)
    if by_key is None:
        by_key = _REGISTRY[scope] = WeakValueDictionary()
    listing = by_key.get(key)
    if (
        listing is None
        or listing.max_age != max_age
        or (writes is not None and listing.writes is not writes)
    ):
        listing = SharedListing(max_age=max_age, writes=writes)
        by_key[key] = listing
    return listing
