"""The closed loop's decisions: how VMs ended, holds, ramp-up, what status says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudpilot import outcomes
from cloudpilot.models.queues import ClosedLoopConfig
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.outcomes import EndedVM, QueueLoop, VMOutcome
from cloudpilot.planner import DeleteReason

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = ClosedLoopConfig()


def _vm(age: float, phase: Phase = Phase.DONE) -> ObservedVM:
    return ObservedVM("i-1", "vm", "q", phase, NOW - timedelta(seconds=age))


def _end(outcome: VMOutcome, at: datetime = NOW, seconds: float = 60.0) -> EndedVM:
    return EndedVM("i-1", "q", outcome, seconds, at)


def test_a_pilot_that_halts_before_fizzle_seconds_fizzled_and_after_it_worked() -> None:
    assert (
        outcomes.classify_deletion(_vm(60), DeleteReason.PILOT_DONE, NOW, 600) is VMOutcome.FIZZLED
    )
    assert (
        outcomes.classify_deletion(_vm(601), DeleteReason.PILOT_DONE, NOW, 600) is VMOutcome.WORKED
    )


def test_error_boot_timeout_and_vanishing_before_start_are_failures() -> None:
    assert (
        outcomes.classify_deletion(_vm(5, Phase.FAILED), DeleteReason.VM_FAILED, NOW, 600)
        is VMOutcome.FAILED
    )
    assert (
        outcomes.classify_deletion(_vm(5, Phase.STARTING), DeleteReason.BOOT_TIMEOUT, NOW, 600)
        is VMOutcome.FAILED
    )
    assert outcomes.classify_vanished(_vm(5, Phase.STARTING)) is VMOutcome.FAILED
    assert outcomes.classify_vanished(_vm(5, Phase.RUNNING)) is VMOutcome.RECLAIMED


def test_our_own_scale_down_is_no_outcome() -> None:
    assert (
        outcomes.classify_deletion(_vm(5, Phase.RUNNING), DeleteReason.SCALE_DOWN, NOW, 600) is None
    )


def test_fizzles_hold_for_backoff_seconds_then_the_hold_doubles_up_to_the_maximum() -> None:
    loop = outcomes.record(QueueLoop(), [_end(VMOutcome.FIZZLED)] * 5, NOW, SETTINGS, ceiling=8)
    assert loop.fizzles == 5
    assert loop.held_until == NOW + timedelta(seconds=600)  # one hold for the whole wave
    later = NOW + timedelta(seconds=700)
    loop = outcomes.record(loop, [_end(VMOutcome.FIZZLED, later)], later, SETTINGS, ceiling=8)
    assert loop.held_until == later + timedelta(seconds=1200)
    for _ in range(5):
        later = loop.held_until + timedelta(seconds=1) if loop.held_until else later
        loop = outcomes.record(loop, [_end(VMOutcome.FIZZLED, later)], later, SETTINGS, ceiling=8)
    assert loop.held_until == later + timedelta(seconds=3600)


def test_a_pilot_that_works_ends_the_hold_and_the_window_ramps_up() -> None:
    held = outcomes.record(QueueLoop(), [_end(VMOutcome.FIZZLED)], NOW, SETTINGS, ceiling=8)
    assert outcomes.gate(held, 0, NOW, SETTINGS).held
    after = NOW + timedelta(seconds=601)
    probe = outcomes.gate(held, 0, after, SETTINGS)
    assert not probe.held and probe.starting_room == 1  # one probe VM at a time
    assert outcomes.gate(held, 1, after, SETTINGS).starting_room == 0
    worked = outcomes.record(held, [_end(VMOutcome.WORKED, after)], after, SETTINGS, ceiling=8)
    assert worked.held_until is None and worked.fizzles == 0 and worked.window == 2
    worked = outcomes.record(worked, [_end(VMOutcome.WORKED, after)], after, SETTINGS, ceiling=8)
    worked = outcomes.record(worked, [_end(VMOutcome.WORKED, after)], after, SETTINGS, ceiling=8)
    assert worked.window is None  # reached replicas: open again


def test_failures_use_the_error_back_off() -> None:
    loop = outcomes.record(
        QueueLoop(),
        [_end(VMOutcome.FAILED)],
        NOW,
        SETTINGS,
        ceiling=8,
        error_initial=10,
        jitter=1.0,
    )
    assert loop.held_for is VMOutcome.FAILED
    assert loop.held_until is not None and loop.held_until - NOW < timedelta(seconds=11)


def test_a_disabled_loop_never_holds() -> None:
    off = ClosedLoopConfig(enabled=False)
    loop = outcomes.record(QueueLoop(), [_end(VMOutcome.FIZZLED)], NOW, off, ceiling=8)
    assert outcomes.gate(loop, 0, NOW, off) == outcomes.QueueGate()


def test_unproven_vms_are_the_young_live_ones_and_pending_creations() -> None:
    vms = [_vm(10, Phase.RUNNING), _vm(700, Phase.RUNNING), _vm(5, Phase.STARTING), _vm(5)]
    assert outcomes.unproven(vms, 2, NOW, 600) == 4


def test_status_says_held_until_when_and_why_and_counts_the_window() -> None:
    loop = outcomes.record(
        QueueLoop(),
        [_end(VMOutcome.FIZZLED, seconds=60)] * 5 + [_end(VMOutcome.WORKED, seconds=0)][:0],
        NOW,
        SETTINGS,
        ceiling=8,
    )
    v = outcomes.verdict(loop, NOW, SETTINGS, desired=8, live=3)
    assert v.state is outcomes.LoopState.HELD_AFTER_FIZZLES
    assert v.message.startswith("held until 2026-01-01T00:10:00Z because 5 pilot(s) fizzled")
    assert v.target == 3
    assert v.counts["fizzled"] == 5 and v.efficiency == 0.0
    block = outcomes.to_status(loop, v, SETTINGS)
    restored = outcomes.from_status(block)
    assert restored.held_until == loop.held_until and restored.fizzles == 5


def test_efficiency_is_worked_seconds_over_all_seconds_in_the_window() -> None:
    old = NOW - timedelta(hours=2)
    loop = QueueLoop(
        recent=(
            _end(VMOutcome.WORKED, seconds=3000),
            _end(VMOutcome.FIZZLED, seconds=1000),
            _end(VMOutcome.FIZZLED, old, seconds=99999),
        )
    )
    v = outcomes.verdict(loop, NOW, SETTINGS, desired=2, live=2)
    assert v.efficiency == 0.75 and v.counts["worked"] == 1 and v.counts["fizzled"] == 1


def test_the_quota_message() -> None:
    v = outcomes.verdict(QueueLoop(), NOW, SETTINGS, desired=8, live=6, quota_allows=6)
    assert v.message == "6 of 8: the cloud's quota allows 6" and v.target == 6
