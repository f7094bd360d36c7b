"""When each pool is next reconciled: a due-time queue over plain keys and a caller's clock.

One scheduler task serves every pool (see :mod:`cloudpilot.kube.scheduler`) instead of one
kopf daemon per pool: a daemon costs a task, its coroutine frames, a stopper and a logger
per pool, about half of the operator's memory at 1,000 pools. What the loop needs to know
is only *which pool is due next*, which is this queue: a heap of ``(due, key)`` with lazy
deletion, so rescheduling a pool is O(log n) and never scans the others.

Pure: no asyncio, no clock of its own. Times are plain floats (the loop passes
``time.monotonic()``), so the rules are unit-tested without waiting.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DueQueue(Generic[K]):
    """Each key is due at one time; the earliest is found and taken in O(log n).

    A key is in the queue at most once: scheduling it again moves it. Keys being
    reconciled are *not* in the queue; the caller schedules them again when done.
    """

    def __init__(self) -> None:
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._counter = 0  # ties broken by insertion order; keys need not be orderable

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def due_at(self, key: K) -> float | None:
        return self._due.get(key)

    def schedule(self, key: K, at: float) -> None:
        """Make ``key`` due at ``at``, replacing any earlier or later time it had."""
        self._due[key] = at
        self._counter += 1
        heapq.heappush(self._heap, (at, self._counter, key))
        self._compact()

    def advance(self, key: K, at: float) -> None:
        """Make ``key`` due no later than ``at`` (a wake-up never postpones a pool)."""
        current = self._due.get(key)
        if current is None or at < current:
            self.schedule(key, at)

    def remove(self, key: K) -> None:
        self._due.pop(key, None)

    def next_at(self) -> float | None:
        """When the earliest key is due, or None for an empty queue."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int | None = None) -> list[K]:
        """Take out every key due at or before ``now`` (at most ``limit``), earliest first."""
        return [key for key, _ in self.pop_due_with_times(now, limit)]

    def pop_due_with_times(self, now: float, limit: int | None = None) -> list[tuple[K, float]]:
        """As :meth:`pop_due`, with the time each key was due (a quiet pool's next tick is
        counted from it: :func:`cloudpilot.account_tick.due_at`)."""
        taken: list[tuple[K, float]] = []
        while limit is None or len(taken) < limit:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            at, _, key = heapq.heappop(self._heap)
            del self._due[key]
            taken.append((key, at))
        return taken

    def _drop_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        # Lazy deletion leaves superseded entries behind; rebuild when they dominate, so a
        # pool rescheduled every few seconds for weeks does not grow the heap.
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(at, i, key) for i, (key, at) in enumerate(self._due.items())]
            heapq.heapify(self._heap)
