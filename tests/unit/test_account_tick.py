"""Quiet pools come due on their account's tick: the rule as plain numbers.

What must hold: a pool that is not quiet keeps its delay; a quiet pool lands on a tick,
between half and one and a half intervals away, whenever its cycle ended; pools whose cycles
ended at different moments land on the same tick; rounding never moves a time off its tick.
"""

from __future__ import annotations

import pytest

from cloudpilot.account_tick import Tick, due_at

TICK = Tick(phase=1000.0, interval=60.0)


@pytest.mark.parametrize("delay", [0.0, 3.0, 10.0, 59.9])
def test_a_pool_that_is_converging_or_backing_off_keeps_its_delay(delay: float) -> None:
    assert due_at(1234.5, delay, TICK) == 1234.5 + delay


def test_without_a_tick_a_quiet_pool_keeps_its_delay() -> None:
    assert due_at(1234.5, 60.0, None) == 1294.5
    assert due_at(1234.5, 60.0, Tick(phase=1000.0, interval=0.0)) == 1294.5


@pytest.mark.parametrize(
    ("ended", "due"),
    [
        (1000.0, 1060.0),  # on a tick: the next one
        (1001.0, 1060.0),  # early in the tick's burst: the next one
        (1029.9, 1060.0),  # late in the burst, still more than half an interval left
        (1030.0, 1060.0),  # exactly half an interval: allowed
        (1030.1, 1120.0),  # less than half an interval left: the one after
        (1059.0, 1120.0),
        (961.0, 1000.0),  # before the phase (a clock behind it): ticks go both ways
    ],
)
def test_a_quiet_pool_is_due_on_the_first_tick_at_least_half_an_interval_away(
    ended: float, due: float
) -> None:
    assert due_at(ended, 60.0, TICK) == due


def test_pools_whose_cycles_ended_apart_come_due_together() -> None:
    """Pools created over half a minute used to stay half a minute apart for good: now
    every one is reconciled on every tick from the first tick they all reach."""
    runs: list[list[float]] = []
    for i in range(100):
        at, seen = 1000.0 + 0.37 * i, []  # first cycles spread over 37 s
        while at < 1400.0:
            seen.append(at)
            at = due_at(at + 2.5, 60.0, TICK)  # each cycle takes 2.5 s
        runs.append(seen)
    for seen in runs:
        assert [t for t in seen if t >= 1120.0] == [1120.0, 1180.0, 1240.0, 1300.0, 1360.0]


@pytest.mark.parametrize("ended", [1000.0 + 7.3 * i for i in range(40)])
def test_a_quiet_pool_is_looked_at_between_half_and_one_and_a_half_intervals(
    ended: float,
) -> None:
    gap = due_at(ended, 60.0, TICK) - ended
    assert 30.0 <= gap < 90.0


def test_a_longer_delay_stays_within_half_an_interval_of_what_was_asked() -> None:
    gap = due_at(1010.0, 150.0, TICK) - 1010.0
    assert 120.0 <= gap < 180.0
    assert (1010.0 + gap - TICK.phase) % TICK.interval == 0


def test_rounding_never_puts_a_time_off_its_tick() -> None:
    """A tick time compared with itself must land on the same tick, whatever the floats:
    the listing's "started since the latest tick" depends on it."""
    tick = Tick(phase=12345.678901, interval=0.1)  # intervals that are not exact in binary
    for k in range(-50, 5000, 7):
        at = tick.at(k)
        assert tick.start_of(at) == at
        assert tick.first_at_or_after(at) == at
        assert tick.start_of(at + 1e-9) == at
        assert tick.first_at_or_after(at - 1e-9) == at


def test_a_pool_late_in_a_long_burst_is_due_on_the_very_next_tick() -> None:
    """Counted from when it was due (the tick), not from when it ended: the tail of a burst
    longer than half an interval is not pushed onto every other tick."""
    assert due_at(1045.0, 60.0, TICK, was_due=1000.0) == 1060.0
    assert due_at(1045.0, 60.0, TICK) == 1120.0  # counted from the end, it would skip one


def test_every_pool_of_a_burst_lasting_most_of_an_interval_is_reconciled_every_tick() -> None:
    pools, burst = 1000, 50.0  # a 50 s burst on a 60 s interval
    for k in range(1, 4):
        tick = TICK.at(k)
        for i in range(pools):
            ended = tick + burst * (i + 1) / pools
            assert due_at(ended, 60.0, TICK, was_due=tick) == TICK.at(k + 1)


def test_after_a_burst_longer_than_an_interval_the_pool_is_due_at_once() -> None:
    """The operator cannot keep up: the pools go round as fast as it can, as before ticks."""
    assert due_at(1075.0, 60.0, TICK, was_due=1000.0) <= 1075.0


def test_a_pool_that_was_not_due_on_a_tick_joins_the_next_one_far_enough_away() -> None:
    # Converging, due at 1037.2, quiet now: the first tick 30 s or more after it was due.
    assert due_at(1037.9, 60.0, TICK, was_due=1037.2) == 1120.0
    assert due_at(1025.9, 60.0, TICK, was_due=1025.2) == 1060.0
