"""The per-endpoint token bucket: bursts go out at once, long runs settle at the rate.

The bucket's clock and sleep are replaced by a fake clock that a sleep advances, so the
tests check how long the bucket *would* make callers wait, exactly, without waiting.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from cloudpilot.cloud import ratelimit
from cloudpilot.cloud.ratelimit import TokenBucket

TICK = 1e-6
"""The smallest step a sleep takes."""


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0
        self._real_sleep = asyncio.sleep

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # A real sleep never takes less than a loop turn (microseconds). Without that floor
        # the bucket's float arithmetic can ask for a sleep below the clock's resolution
        # (2e-14 s at 1,000 s of uptime), which would not move a fake clock at all.
        seconds = max(seconds, TICK)
        self.now += seconds
        self.slept += seconds
        await self._real_sleep(0)  # still yield, as a real sleep does


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The module's own view of ``time`` and ``asyncio`` only: the event loop keeps the real
    clock (patching ``time.monotonic`` itself would freeze the loop's timers)."""
    fake = FakeTime()
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=fake.monotonic))
    monkeypatch.setattr(ratelimit, "asyncio", SimpleNamespace(sleep=fake.sleep, Lock=asyncio.Lock))
    return fake


async def test_a_burst_goes_out_without_waiting(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=5.0, burst=40)
    for _ in range(40):
        await bucket.acquire()
    assert fake.slept == 0.0


async def test_past_the_burst_calls_are_spaced_at_the_rate(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=5.0, burst=10)
    for _ in range(10 + 25):
        await bucket.acquire()
    assert fake.slept == pytest.approx(25 / 5.0, abs=1e-3)


async def test_an_idle_bucket_refills_up_to_the_burst_and_no_further(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=2.0, burst=4)
    for _ in range(4):
        await bucket.acquire()
    fake.now += 3600.0  # an hour idle earns 4 tokens, not 7,200
    for _ in range(4):
        await bucket.acquire()
    assert fake.slept == 0.0
    await bucket.acquire()
    assert fake.slept == pytest.approx(0.5, abs=1e-3)


async def test_concurrent_callers_never_exceed_burst_plus_rate_times_time(
    fake: FakeTime,
) -> None:
    rate, burst, callers = 10.0, 5, 60
    bucket = TokenBucket(rate=rate, burst=burst)
    started = fake.now
    granted: list[float] = []

    async def caller() -> None:
        await bucket.acquire()
        granted.append(fake.now - started)

    await asyncio.gather(*(caller() for _ in range(callers)))
    assert len(granted) == callers
    for i, at in enumerate(sorted(granted), start=1):
        assert i <= burst + rate * at + 1e-3, f"token {i} granted too early, at {at:.3f} s"
    assert max(granted) == pytest.approx((callers - burst) / rate, abs=1e-3)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_bucket_that_would_never_give_a_token_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)
