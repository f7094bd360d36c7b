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
