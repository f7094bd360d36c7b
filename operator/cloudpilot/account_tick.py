"""Quiet pools of one cloud account come due on the account's tick, so one listing serves them.

Each pool used to come back one interval after its last cycle ended, so pools created over
half a minute stayed half a minute apart for good. A shared listing serves the pools that
ask within half an interval of it (:mod:`cloudpilot.cloud.listing`), so an account whose
pools were spread over more than that was listed twice or more per interval, and the
spread never closes by itself.

Here a cycle that ends *quiet* (its next delay is the full interval: not converging, not
backing off, no early wake-up) is due at its account's next **tick** instead: the first time
``phase + k * interval`` at least half an interval away (:data:`MIN_GAP_FRACTION`). The
phase is when the account's first listing started (the account's
:class:`~cloudpilot.cloud.listing.SharedListing` keeps it). The pools of an account then
come due together; the first starts the listing and the others join it in flight or reuse
it. A pool that is converging or backing off keeps its short delay and lists for itself, as
before: alignment never delays a pool's own progress.

Bounds: a quiet pool is due again between half an interval and one and a half intervals
after its cycle was due (one interval on average, exactly one in the steady state), so it is
never due more often than every half interval and a pilot VM that halted is still seen
within 1.5 intervals plus however long the tick's burst takes to reach the pool.

The price: the account's pools all come due at one instant, a burst each interval that the
scheduler works through ``MAX_CONCURRENT_RECONCILES`` at a time, instead of a steady trickle.
The burst costs nothing the trickle did not (the same reconciles, one listing instead of
several) but a burst that outlasts half an interval would outlive the listing's reuse: the
listing therefore also serves every pool that asks before the next tick (see
``SharedListing``).

A pool with queues on several accounts follows the account of its first queue; its other
accounts are listed when it comes due, shared with whatever pools they serve at the time.

Pure: plain floats of the caller's monotonic clock, no asyncio (tests/unit/test_account_tick.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

MIN_GAP_FRACTION: Final = 0.5
"""A quiet pool is due at the first tick at least this fraction of an interval after its
cycle was due: never due sooner than half an interval later (a pool that turned quiet just
before a tick is not called back a moment later), never later than 1.5 intervals."""


@dataclass(frozen=True)
class Tick:
    """An account's ticks: ``phase + k * interval`` for every integer k (monotonic seconds)."""

    phase: float
    interval: float

    def at(self, k: int) -> float:
        """The k-th tick. Every tick time is computed here, so the same k always gives
        the same float (the listing compares a start time with :meth:`start_of`)."""
        return self.phase + k * self.interval

    def start_of(self, t: float) -> float:
        """The latest tick at or before ``t``."""
        k = math.floor((t - self.phase) / self.interval)
        if self.at(k + 1) <= t:  # rounding put t just before a tick it has reached
            k += 1
        elif self.at(k) > t:
            k -= 1
        return self.at(k)

    def first_at_or_after(self, t: float) -> float:
        k = math.ceil((t - self.phase) / self.interval)
        if self.at(k) < t:  # rounding, as above
            k += 1
        elif self.at(k - 1) >= t:
            k -= 1
        return self.at(k)


def due_at(now: float, delay: float, tick: Tick | None, was_due: float | None = None) -> float:
    """When a pool whose cycle ended at ``now`` and asked for ``delay`` is next due.

    ``delay`` shorter than the interval (converging, backing off, woken early): as asked.
    Otherwise the cycle was quiet: the first tick at least ``delay - interval / 2`` after
    the time the cycle was due (``was_due``; None: ``now``), i.e. within half an interval of
    what was asked (for the usual ``delay == interval``, between 0.5 and 1.5 intervals).

    Counted from when it was due, not from when it ended: a pool due on a tick is due on the
    next tick however late in the tick's burst it ran. Counted from the end, a burst longer
    than half an interval would push its tail onto every other tick. (A burst longer than a
    whole interval gives a next tick already past: the pool is due at once, and the pools
    go round as fast as the operator can, as they did before ticks.)

    No tick (the account was never listed, its credentials failed) or a degenerate
    interval: as asked.
    """
    if tick is None or not tick.interval > 0 or delay < tick.interval:
        return now + delay
    since = now if was_due is None else min(was_due, now)
    return tick.first_at_or_after(since + delay - tick.interval * (1 - MIN_GAP_FRACTION))
