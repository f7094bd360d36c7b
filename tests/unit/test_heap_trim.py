"""Returning the C heap's free pages (cloudpilot.heap_trim): the real call, and the loop
driven with a stand-in trim that the test observes (no sleeps: each step is awaited)."""

from __future__ import annotations

import asyncio
import ctypes.util
import platform
from pathlib import Path

import pytest

from cloudpilot import heap_trim
from cloudpilot.heap_trim import HeapTrimmer

BOUND = 10.0  # seconds a condition may take before the test fails instead of hanging


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_gives_freed_heap_pages_back_to_the_system() -> None:
    # Medium strings (above pymalloc's 512 bytes, below glibc's mmap threshold) come from
    # glibc's heap; keeping one in ten pins the heap's top, so free() alone returns little.
    assert heap_trim.trim()  # start from a trimmed heap
    strings = [str(i).rjust(2048, "x") for i in range(40_000)]  # about 80 MiB
    kept = strings[::10]
    del strings
    before = _rss_kib()
    assert heap_trim.trim() is True
    after = _rss_kib()
    assert len(kept) == 4_000
    assert before - after > 30 * 1024, (before, after)  # most of the 72 MiB freed


def test_trim_says_false_where_the_c_library_has_no_malloc_trim(monkeypatch) -> None:
    heap_trim._malloc_trim.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        assert heap_trim.trim() is False
    finally:
        heap_trim._malloc_trim.cache_clear()


async def test_the_trimmer_trims_every_period_until_stopped() -> None:
    calls = 0
    third = asyncio.Event()

    def fake_trim() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        return True

    trimmer = HeapTrimmer(interval=0.01, trim_heap=fake_trim)
    trimmer.start()
    try:
        async with asyncio.timeout(BOUND):
            await third.wait()
    finally:
        await trimmer.stop()
    assert calls >= 3
    assert trimmer._task is None  # cancelled and awaited: no trim can follow


async def test_the_trimmer_stops_where_trimming_is_impossible_and_survives_a_failure() -> None:
    answers: list[bool | Exception] = [RuntimeError("boom"), False]
    done = asyncio.Event()

    def fake_trim() -> bool:
        answer = answers.pop(0)
        if not answers:
            done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    trimmer = HeapTrimmer(interval=0.01, trim_heap=fake_trim)
    trimmer.start()
    try:
        async with asyncio.timeout(BOUND):
            await done.wait()
        assert trimmer._task is not None
        async with asyncio.timeout(BOUND):
            await asyncio.shield(trimmer._task)  # ends by itself after the False
    finally:
        await trimmer.stop()
    assert answers == []
