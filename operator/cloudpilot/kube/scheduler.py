"""One task reconciles every pool when it is due: the operator's only loop.

kopf's watch keeps :class:`~cloudpilot.pool_bodies.PoolBodies` current and tells the
scheduler when a pool is new or its spec changed; the scheduler takes whichever pools are
due from a :class:`~cloudpilot.scheduling.DueQueue`, runs at most ``concurrency`` reconciles
at once, and schedules each pool again after the delay its reconcile returns (seconds while
converging or backing off; when quiet, about a minute: on its account's next tick, so the
account's quiet pools come due together and share one listing, :mod:`cloudpilot.account_tick`).

A pool is never reconciled twice at once: a wake-up that arrives while it runs is kept and
served as soon as that run ends. Stopping waits a few seconds for running reconciles and then
cancels them, which is safe: the next reconcile, here or in another replica, re-reads the
cloud.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from cloudpilot import constants
from cloudpilot.account_tick import Tick, due_at
from cloudpilot.scheduling import DueQueue

logger = logging.getLogger(__name__)


WAKE_UP = float("-inf")
"""The due time of a woken pool: ahead of every scheduled one (wake-ups among themselves
first come, first served: the queue breaks ties by insertion order)."""


class Next(NamedTuple):
    """When to reconcile a pool again: after ``delay`` seconds, moved onto its account's
    ``tick`` when the cycle was quiet (:func:`cloudpilot.account_tick.due_at`)."""

    delay: float
    tick: Tick | None = None


ReconcileOne = Callable[[str], Awaitable[float | Next | None]]
"""Reconcile the pool with this uid; return the seconds until its next reconcile (or a
:class:`Next`), or None when the pool is gone and must not be scheduled again."""


class PoolScheduler:
    def __init__(
        self,
        reconcile_one: ReconcileOne,
        *,
        concurrency: int = constants.MAX_CONCURRENT_RECONCILES,
        retry_delay: float = constants.DEFAULT_CONVERGING_INTERVAL,
        grace: float = constants.SCHEDULER_STOP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reconcile_one = reconcile_one
        self._concurrency = concurrency
        self._retry_delay = retry_delay
        self._grace = grace
        self._clock = clock
        self._queue: DueQueue[str] = DueQueue()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._rerun: set[str] = set()
        self._dropped: set[str] = set()
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # -- what the watch tells it ------------------------------------------------------------

    def due_now(self, uid: str) -> None:
        """Reconcile ``uid`` as soon as a slot is free (a new pool, a changed spec), before
        any pool that is merely due: someone is waiting for this one, while the quiet pools
        of a tick's burst (:mod:`cloudpilot.account_tick`) can wait the few seconds."""
        self._dropped.discard(uid)
        if uid in self._running:
            self._rerun.add(uid)
        else:
            self._queue.advance(uid, WAKE_UP)
        self._changed.set()

    def drop(self, uid: str) -> None:
        """Stop scheduling ``uid`` (deletion requested or the pool is gone)."""
        self._queue.remove(uid)
        self._rerun.discard(uid)
        if uid in self._running:
            self._dropped.add(uid)

    def is_scheduled(self, uid: str) -> bool:
        return uid in self._queue or uid in self._running

    # -- the loop -----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="cloudpilot-scheduler")

    async def stop(self) -> None:
        """Stop scheduling; give running reconciles a few seconds, then cancel them."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=self._grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            now = self._clock()
            free = self._concurrency - len(self._running)
            for uid, due in self._queue.pop_due_with_times(now, limit=max(free, 0)):
                was_due = now if due == WAKE_UP else due
                self._running[uid] = asyncio.create_task(
                    self._run(uid, was_due), name=f"reconcile {uid}"
                )
            next_at = self._queue.next_at()
            timeout = None
            if next_at is not None and len(self._running) < self._concurrency:
                timeout = max(next_at - self._clock(), 0.0)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that lands as the event fires, and stop() would then hang.
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _run(self, uid: str, was_due: float) -> None:
        delay: float | Next | None = self._retry_delay
        try:
            delay = await self._reconcile_one(uid)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug or an API outage must not end the pool's reconciles for good.
            logger.exception("reconcile of pool %s failed; retrying", uid)
        finally:
            self._running.pop(uid, None)
            self._changed.set()
        if uid in self._dropped or delay is None:
            self._dropped.discard(uid)
            self._rerun.discard(uid)
            return
        if uid in self._rerun:  # woken while it ran: a wake-up, served as one
            self._rerun.discard(uid)
            self._queue.schedule(uid, WAKE_UP)
            return
        after = delay if isinstance(delay, Next) else Next(delay)
        # The tick is read on the clock it was made with (time.monotonic, as the listing's).
        self._queue.schedule(uid, due_at(self._clock(), after.delay, after.tick, was_due))
