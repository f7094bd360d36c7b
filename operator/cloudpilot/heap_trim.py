"""Give the C heap's freed pages back to the system, every half minute.

Why: at a thousand pools on a real kube-apiserver the operator's *live* memory barely grows
with the number of pools (about 6 KiB a pool), yet its RSS grew by tens of KiB a pool. The
difference is glibc's heap: every watch event, status-patch answer and listing is a few KiB
of JSON (``managedFields``, kopf's annotations) decoded into short-lived strings and dicts;
once freed, glibc keeps the pages for reuse and only gives back the very top of the heap.
Measured in the operator process (``mallinfo2``) after 2,000 pools were reconciled: 107 MiB
of heap, 39 MiB of it in use, 69 MiB free but still resident. ``malloc_trim(0)`` returns
the free pages anywhere in the heap: RSS went 208 → 148 MiB, and it costs a few ms
(docs/performance.md, "Round two", memory).

Only glibc has ``malloc_trim`` (the operator image is Debian's ``python:3.11-slim``); on
any other C library :func:`trim` does nothing and says so. The call runs in a worker
thread (ctypes releases the GIL), so the event loop never waits for it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

from cloudpilot import constants

logger = logging.getLogger(__name__)

Trim = Callable[[], bool]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return function


def trim() -> bool:
    """Release the heap's free pages to the system; False when the C library cannot."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True


class HeapTrimmer:
    """Calls ``trim`` every ``interval`` seconds in a worker thread, from ``start`` to
    ``stop``. A fixed period rather than after each burst: bursts (a watch re-listing
    thousands of pools, a restart, a wave of status writes) are kopf's as much as ours, and
    a trim of a heap with nothing to give back costs a few milliseconds."""

    def __init__(
        self, *, interval: float = constants.HEAP_TRIM_INTERVAL, trim_heap: Trim = trim
    ) -> None:
        self._interval = interval
        self._trim = trim_heap
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cloudpilot-heap-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # the period itself, not a synchronisation
            try:
                if not await asyncio.to_thread(self._trim):
                    logger.debug("the C library has no malloc_trim; heap trimming stops")
                    return
            except Exception:  # memory housekeeping must never stop the operator
                logger.exception("heap trim failed; trying again next period")
