"""Run the operator with a memory timeline: ``python -m bench.memory_probe OUT -- ARGS...``.

Why: ``VmHWM`` says how high the operator's RSS went, not what it was made of. This wrapper
(run *inside* the operator subprocess, instead of ``python -m cloudpilot``) samples, every
quarter second from a thread, RSS, glibc's ``mallinfo2`` (main arena: heap in use, heap
free but kept, mmapped blocks), pymalloc's allocated blocks, open file descriptors (mostly
connections to the API server) and asyncio tasks, and writes one JSON line per sample to
``OUT``. With ``BENCH_TRACEMALLOC=1`` it also traces Python
allocations (one frame) and, each time traced memory reaches a new high 5 % above the last,
writes the top lines at that moment to ``OUT.peak.txt``: what was alive at the peak.
``OUT.peak.txt`` is overwritten, so it ends holding the highest peak.

Bench-only: the operator itself never imports it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> Any:
    name = ctypes.util.find_library("c")
    function = getattr(ctypes.CDLL(name), "mallinfo2", None) if name else None
    if function is not None:
        function.restype = _MallInfo2
    return function


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _sample(mallinfo: Any, started: float) -> dict[str, Any]:
    mib = 1024 * 1024
    row: dict[str, Any] = {
        "t": round(time.monotonic() - started, 2),
        "rss": round(_rss_kib() / 1024, 1),
        "blocks": sys.getallocatedblocks(),
        "fds": sum(1 for _ in Path("/proc/self/fd").iterdir()),  # mostly API connections
        # asyncio keeps every task of every loop in a WeakSet; len() of it is thread-safe.
        "tasks": len(getattr(asyncio.tasks, "_all_tasks", ())),
    }
    if mallinfo is not None:
        info = mallinfo()
        row.update(
            heap_used=round(info.uordblks / mib, 1),
            heap_free=round(info.fordblks / mib, 1),
            mmapped=round(info.hblkhd / mib, 1),
        )
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        row.update(traced=round(current / mib, 1), traced_peak=round(peak / mib, 1))
    return row


def _sampler(out: Path, period: float) -> None:
    mallinfo = _mallinfo()
    started = time.monotonic()
    snapped = 0.0
    with out.open("a") as sink:
        while True:
            row = _sample(mallinfo, started)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            traced = row.get("traced", 0.0)
            if traced > snapped * 1.05 and traced > 50:
                snapped = traced
                _write_top(out.with_suffix(".peak.txt"), row)
            time.sleep(period)  # the sampling period itself


def _write_top(path: Path, row: dict[str, Any]) -> None:
    stats = tracemalloc.take_snapshot().statistics("lineno")
    lines = [json.dumps(row)] + [str(s) for s in stats[:40]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    out = Path(sys.argv[1])
    args = sys.argv[sys.argv.index("--") + 1 :]
    if os.environ.get("BENCH_TRACEMALLOC") == "1":
        tracemalloc.start(1)
    threading.Thread(target=_sampler, args=(out, 0.25), daemon=True).start()
    from cloudpilot.cli import main as cloudpilot

    raise SystemExit(cloudpilot(args))


if __name__ == "__main__":
    main()
