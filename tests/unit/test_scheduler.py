"""The operator's one scheduler, driven with a stand-in reconcile (no cluster, no cloud).

The reconcile here is a coroutine that records its calls and waits on gates the test opens,
so every step is awaited on a condition, never on a sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest

from cloudpilot.account_tick import Tick
from cloudpilot.kube.scheduler import Next, PoolScheduler

BOUND = 10.0  # seconds a condition may take before the test fails instead of hanging


class FakeReconcile:
    def __init__(self, delay: float | Next | None = 3600.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.running: set[str] = set()
        self.peak = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.fail: set[str] = set()
        self.changed = asyncio.Condition()
        self.on_call: Callable[[str], None] | None = None

    async def __call__(self, uid: str) -> float | Next | None:
        self.running.add(uid)
        self.peak = max(self.peak, len(self.running))
        async with self.changed:
            if self.on_call is not None:
                self.on_call(uid)
            self.calls[uid] += 1
            self.changed.notify_all()
        try:
            if uid in self.gates:
                await self.gates[uid].wait()
            if uid in self.fail:
                raise RuntimeError("cloud API down")
            return self.delay
        finally:
            self.running.discard(uid)

    async def until(self, predicate: object) -> None:
        async with asyncio.timeout(BOUND), self.changed:
            await self.changed.wait_for(predicate)  # type: ignore[arg-type]


@pytest.fixture
async def harness() -> tuple[PoolScheduler, FakeReconcile]:
    fake = FakeReconcile()
    scheduler = PoolScheduler(fake, concurrency=2, retry_delay=0.0, grace=0.2)
    scheduler.start()
    yield scheduler, fake
    await scheduler.stop()


async def test_a_new_pool_is_reconciled_at_once_and_then_after_its_delay(harness) -> None:
    scheduler, fake = harness
    scheduler.due_now("a")
    await fake.until(lambda: fake.calls["a"] == 1)

    fake.delay = 0.0  # the next cycle asks to come back at once
    scheduler.due_now("a")
    await fake.until(lambda: fake.calls["a"] >= 4)  # rescheduled by its own delay


async def test_a_wake_up_during_a_reconcile_runs_it_once_more_never_twice_at_once(
    harness,
) -> None:
    scheduler, fake = harness
    fake.gates["a"] = asyncio.Event()
    scheduler.due_now("a")
    await fake.until(lambda: fake.calls["a"] == 1)

    scheduler.due_now("a")  # kubectl scale, twice, while the first cycle runs
    scheduler.due_now("a")
    assert fake.calls["a"] == 1
    fake.gates["a"].set()

    await fake.until(lambda: fake.calls["a"] == 2)
    scheduler.due_now("b")  # a later pool still gets its turn: the loop is not stuck
    await fake.until(lambda: fake.calls["b"] == 1)
    assert fake.calls["a"] == 2 and fake.peak <= 2


async def test_at_most_concurrency_reconciles_run_and_the_rest_wait_their_turn(harness) -> None:
    scheduler, fake = harness
    pools = [f"p{i}" for i in range(6)]
    for uid in pools:
        fake.gates[uid] = asyncio.Event()
        scheduler.due_now(uid)

    await fake.until(lambda: len(fake.running) == 2)
    assert sum(fake.calls.values()) == 2
    for uid in pools:
        fake.gates[uid].set()
    await fake.until(lambda: all(fake.calls[uid] == 1 for uid in pools))
    assert fake.peak == 2


async def test_a_pool_dropped_during_its_reconcile_is_not_scheduled_again(harness) -> None:
    scheduler, fake = harness
    fake.delay = 0.0
    fake.gates["gone"] = asyncio.Event()
    scheduler.due_now("gone")
    await fake.until(lambda: fake.calls["gone"] == 1)

    scheduler.drop("gone")  # deletionTimestamp arrived meanwhile
    fake.gates["gone"].set()
    scheduler.due_now("other")
    await fake.until(lambda: fake.calls["other"] >= 3)  # time passes for other pools

    assert fake.calls["gone"] == 1
    assert not scheduler.is_scheduled("gone")


async def test_a_failing_reconcile_is_retried_and_does_not_stop_the_others(harness) -> None:
    scheduler, fake = harness
    fake.fail.add("broken")
    scheduler.due_now("broken")
    scheduler.due_now("fine")

    await fake.until(lambda: fake.calls["broken"] >= 3 and fake.calls["fine"] >= 1)
    assert scheduler.is_scheduled("broken")


async def test_a_pool_whose_reconcile_reports_it_gone_is_not_scheduled() -> None:
    fake = FakeReconcile(delay=None)
    scheduler = PoolScheduler(fake, retry_delay=0.0)
    scheduler.start()
    try:
        scheduler.due_now("deleted-while-queued")
        await fake.until(lambda: fake.calls["deleted-while-queued"] == 1)
        await fake.until(lambda: not scheduler.is_scheduled("deleted-while-queued"))
    finally:
        await scheduler.stop()


async def test_stop_cancels_a_reconcile_that_outlives_the_grace_period() -> None:
    fake = FakeReconcile()
    fake.gates["stuck"] = asyncio.Event()  # never opened: a cloud call that hangs
    scheduler = PoolScheduler(fake, grace=0.05)
    scheduler.start()
    scheduler.due_now("stuck")
    await fake.until(lambda: fake.calls["stuck"] == 1)

    async with asyncio.timeout(BOUND):
        await scheduler.stop()

    assert fake.running == set()


async def test_a_quiet_pool_comes_due_on_its_accounts_tick_a_busy_one_after_its_delay() -> None:
    """The scheduler only adapts: the rule is cloudpilot.account_tick.due_at (its tests)."""
    tick = Tick(phase=1000.0, interval=60.0)
    answers = {"quiet": Next(60.0, tick), "busy": Next(10.0, tick), "plain": 60.0}

    done: set[str] = set()
    all_done = asyncio.Event()

    async def reconcile(uid: str) -> float | Next | None:
        done.add(uid)
        if done == set(answers):
            all_done.set()  # the test resumes after this task has scheduled the pool
        return answers[uid]

    scheduler = PoolScheduler(reconcile, clock=lambda: 1012.3)  # the clock stands still
    scheduler.start()
    try:
        for uid in answers:
            scheduler.due_now(uid)
        async with asyncio.timeout(BOUND):
            await all_done.wait()
        assert scheduler._queue.due_at("quiet") == 1060.0  # the tick, not 1072.3
        assert scheduler._queue.due_at("busy") == 1022.3  # converging: as asked
        assert scheduler._queue.due_at("plain") == 1072.3  # no tick known
    finally:
        await scheduler.stop()


async def test_a_woken_pool_goes_before_a_burst_of_pools_due_on_a_tick() -> None:
    """``kubectl scale`` during a tick's burst of quiet pools must not wait for the burst."""
    fake = FakeReconcile()
    fake.gates["busy"] = asyncio.Event()
    scheduler = PoolScheduler(fake, concurrency=1, retry_delay=0.0)
    scheduler.start()
    try:
        scheduler.due_now("busy")  # holds the only slot
        await fake.until(lambda: fake.calls["busy"] == 1)
        for i in range(5):  # a tick's quiet pools, due a moment ago
            scheduler._queue.schedule(f"quiet-{i}", time.monotonic() - 1.0)
        scheduler.due_now("scaled")
        scheduler.due_now("applied")
        order: list[str] = []
        fake.on_call = order.append
        fake.gates["busy"].set()
        await fake.until(lambda: len(order) == 7)
        assert order[:2] == ["scaled", "applied"]
    finally:
        await scheduler.stop()


async def test_a_pool_that_ran_late_in_its_ticks_burst_is_due_on_the_next_tick() -> None:
    """The scheduler passes on when the pool was due (the tick), not only when it ended."""
    tick = Tick(phase=1000.0, interval=60.0)
    ran = asyncio.Event()

    async def reconcile(uid: str) -> Next:
        ran.set()  # the test resumes after this task has scheduled the pool
        return Next(60.0, tick)

    scheduler = PoolScheduler(reconcile, clock=lambda: 1045.0)  # 45 s into the burst
    scheduler._queue.schedule("late", 1000.0)  # due on the tick
    scheduler.start()
    try:
        async with asyncio.timeout(BOUND):
            await ran.wait()
        assert scheduler._queue.due_at("late") == 1060.0  # not 1120.0
    finally:
        await scheduler.stop()
