"""How each pilot VM ended, and what a queue should do about it: the closed loop's brain.

An open loop replaces every VM that ended. When the task queue is empty each pilot finds
no work, halts a minute after boot and is replaced at once: endless create/delete churn,
paid by the site. Vcycle and Vac (the vacuum model) close the loop by looking at how VMs
end (``fizzle_seconds``, ``backoff_seconds``, ``max_starting``: see docs/closed-loop.md);
this module does the same, per queue, from what the cloud shows:

* **worked**: the VM halted itself after running ``fizzleSeconds`` or longer (or reached
  its maximum lifetime while running): its pilot found work;
* **fizzled**: it halted itself sooner: no work;
* **failed**: the cloud reports an error, it never finished booting, or it vanished
  before it started;
* **reclaimed**: it vanished (or was terminated) by the cloud's doing, not ours, after it
  started: a spot reclaim, an operator of the cloud, a host failure.

After fizzles new creations are held for ``backoffSeconds``, doubling with each hold that
ends in another fizzle up to ``maxBackoffSeconds``; after failures the pool's error back-off
holds them. Once held, at most one unproven VM (younger than ``fizzleSeconds``) is started
at a time, doubling with every pilot that works (ramp-up) until the queue is open again.
A worked pilot ends every hold at once. Every function is pure: ``(state, facts, now)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from cloudpilot import constants
from cloudpilot.memory import ErrorKind, backoff_delay
from cloudpilot.models.queues import ClosedLoopConfig as LoopSettings
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.planner import DeleteReason, QueueGate

MAX_RECENT = 2_000
"""Ended VMs kept per queue for the recent-window counts: a bound on memory and status
work whatever the churn (2,000 is a week of one VM an ~5 minutes)."""


class VMOutcome(StrEnum):
    WORKED = "worked"
    FIZZLED = "fizzled"
    FAILED = "failed"
    RECLAIMED = "reclaimed"


class LoopState(StrEnum):
    """What a queue's closed loop is doing: one Event each time this changes."""

    OPEN = "Open"
    HELD_AFTER_FIZZLES = "HeldAfterFizzles"
    HELD_AFTER_FAILURES = "HeldAfterFailures"
    RAMPING_UP = "RampingUp"
    QUOTA_LIMITED = "QuotaLimited"
    DISABLED = "Disabled"


@dataclass(frozen=True)
class EndedVM:
    id: str
    queue: str
    outcome: VMOutcome
    seconds: float
    """How long the VM existed (launch to the cycle that saw it end): VM-seconds paid."""
    ended_at: datetime


@dataclass(frozen=True)
class QueueLoop:
    """One queue's closed-loop memory (recoverable from status: see :func:`from_status`)."""

    fizzles: int = 0
    """Consecutive fizzles since the last pilot that worked."""
    failures: int = 0
    """Consecutive failures since the last pilot that worked."""
    holds: int = 0
    """Holds after fizzles in a row: the exponent of the next one."""
    held_until: datetime | None = None
    held_for: VMOutcome | None = None
    window: int | None = None
    """Unproven VMs allowed at once; None: no ramp (the queue is open)."""
    recent: tuple[EndedVM, ...] = ()


def classify_deletion(
    vm: ObservedVM, reason: DeleteReason, now: datetime, fizzle_seconds: int
) -> VMOutcome | None:
    """The outcome of a VM the planner deletes, or None when we end it (scale-down)."""
    if reason is DeleteReason.PILOT_DONE:
        age = _age(vm, now)
        return VMOutcome.FIZZLED if age < fizzle_seconds else VMOutcome.WORKED
    if reason in (DeleteReason.VM_FAILED, DeleteReason.BOOT_TIMEOUT):
        return VMOutcome.FAILED
    if reason is DeleteReason.MAX_LIFETIME:
        return VMOutcome.WORKED if vm.phase is Phase.RUNNING else VMOutcome.FAILED
    return None


def classify_vanished(vm: ObservedVM) -> VMOutcome:
    """A VM listed last cycle, gone now, that we did not delete."""
    return VMOutcome.FAILED if vm.phase is Phase.STARTING else VMOutcome.RECLAIMED


def ended(vm: ObservedVM, outcome: VMOutcome, now: datetime) -> EndedVM:
    return EndedVM(vm.id, vm.queue, outcome, _age(vm, now), now)


def _age(vm: ObservedVM, now: datetime) -> float:
    return max((now - vm.created_at).total_seconds(), 0.0) if vm.created_at else 0.0


def record(
    loop: QueueLoop,
    endings: Sequence[EndedVM],
    now: datetime,
    settings: LoopSettings,
    *,
    ceiling: int,
    error_initial: float = constants.BACKOFF_INITIAL,
    error_maximum: float = constants.BACKOFF_MAX,
    jitter: float = 0.0,
) -> QueueLoop:
    """The queue's loop after this cycle's ``endings``. ``ceiling``: the queue's desired
    count; a ramp whose window reaches it is over (the queue is open again)."""
    for end in endings:
        held = loop.held_until is not None and loop.held_until > now
        if end.outcome is VMOutcome.WORKED:
            window = None if loop.window is None or loop.window * 2 >= ceiling else loop.window * 2
            loop = replace(
                loop, fizzles=0, failures=0, holds=0, held_until=None, held_for=None, window=window
            )
        elif end.outcome is VMOutcome.FIZZLED:
            loop = replace(loop, fizzles=loop.fizzles + 1, window=1)
            if not held:
                delay = min(
                    settings.backoff_seconds * 2 ** min(loop.holds, 32),
                    settings.max_backoff_seconds,
                )
                loop = replace(
                    loop,
                    holds=loop.holds + 1,
                    held_until=now + timedelta(seconds=delay),
                    held_for=VMOutcome.FIZZLED,
                )
        elif end.outcome is VMOutcome.FAILED:
            loop = replace(loop, failures=loop.failures + 1, window=1)
            if not held:
                delay = backoff_delay(
                    loop.failures,
                    ErrorKind.TRANSIENT,
                    initial=error_initial,
                    maximum=error_maximum,
                    jitter=jitter,
                )
                loop = replace(
                    loop, held_until=now + timedelta(seconds=delay), held_for=VMOutcome.FAILED
                )
    horizon = now - timedelta(seconds=settings.window_seconds)
    recent = tuple(e for e in (*loop.recent, *endings) if e.ended_at > horizon)[-MAX_RECENT:]
    return replace(loop, recent=recent)


def unproven(vms: Iterable[ObservedVM], pending: int, now: datetime, fizzle_seconds: int) -> int:
    """VMs that have not yet shown whether their pilot finds work: pending creations and
    live VMs younger than ``fizzle_seconds`` (Vcycle's "not passed fizzle_seconds")."""
    return pending + sum(
        1
        for vm in vms
        if vm.phase in (Phase.STARTING, Phase.RUNNING, Phase.UNKNOWN)
        and _age(vm, now) < fizzle_seconds
    )


def gate(
    loop: QueueLoop,
    unproven_now: int,
    now: datetime,
    settings: LoopSettings,
    capacity_room: int | None = None,
) -> QueueGate:
    """What the planner may do for the queue: nothing while held; while ramping up, only
    as many new VMs as the window has room for beside the unproven ones."""
    if not settings.enabled:
        return QueueGate(capacity_room=capacity_room)
    if loop.held_until is not None and loop.held_until > now:
        return QueueGate(held=True, capacity_room=capacity_room)
    if loop.window is None:
        return QueueGate(capacity_room=capacity_room)
    return QueueGate(starting_room=max(loop.window - unproven_now, 0), capacity_room=capacity_room)


@dataclass(frozen=True)
class Verdict:
    """A queue's loop as status shows it."""

    state: LoopState
    message: str
    target: int
    counts: Mapping[str, int] = field(default_factory=dict)
    efficiency: float | None = None


def verdict(
    loop: QueueLoop,
    now: datetime,
    settings: LoopSettings,
    *,
    desired: int,
    live: int,
    quota_allows: int | None = None,
) -> Verdict:
    """The state, the target and why. ``quota_allows``: the VMs the cloud's learned quota
    leaves this queue (None: not limited)."""
    counts = {o.value: 0 for o in VMOutcome}
    worked_seconds = all_seconds = 0.0
    horizon = now - timedelta(seconds=settings.window_seconds)
    for end in loop.recent:
        if end.ended_at <= horizon:
            continue
        counts[end.outcome.value] += 1
        all_seconds += end.seconds
        if end.outcome is VMOutcome.WORKED:
            worked_seconds += end.seconds
    efficiency = round(worked_seconds / all_seconds, 3) if all_seconds > 0 else None

    def done(state: LoopState, message: str, target: int) -> Verdict:
        return Verdict(state, message, target, counts, efficiency)

    if not settings.enabled:
        return done(LoopState.DISABLED, "closed loop disabled: replicas obeyed as set", desired)
    if loop.held_until is not None and loop.held_until > now:
        until = loop.held_until.strftime("%Y-%m-%dT%H:%M:%SZ")
        if loop.held_for is VMOutcome.FIZZLED:
            why = (
                f"{loop.fizzles} pilot(s) fizzled in a row (ended within "
                f"{settings.fizzle_seconds}s: no work)"
            )
            return done(LoopState.HELD_AFTER_FIZZLES, f"held until {until} because {why}", live)
        why = f"{loop.failures} VM(s) failed in a row"
        return done(LoopState.HELD_AFTER_FAILURES, f"held until {until} because {why}", live)
    if quota_allows is not None and quota_allows < desired:
        return done(
            LoopState.QUOTA_LIMITED,
            f"{quota_allows} of {desired}: the cloud's quota allows {quota_allows}",
            quota_allows,
        )
    if loop.window is not None:
        return done(
            LoopState.RAMPING_UP,
            f"ramping up: at most {loop.window} unproven VM(s) at a time, doubling with each "
            "pilot that works",
            min(desired, live + loop.window),
        )
    return done(LoopState.OPEN, f"{desired} desired", desired)


def to_status(loop: QueueLoop, v: Verdict, settings: LoopSettings) -> dict[str, object]:
    """The queue's ``closedLoop`` status block; also what :func:`from_status` reads back."""
    entry: dict[str, object] = {
        "state": v.state.value,
        "target": v.target,
        "message": v.message,
        "recent": {"windowSeconds": settings.window_seconds, **v.counts},
        "consecutiveFizzles": loop.fizzles,
        "consecutiveFailures": loop.failures,
    }
    if v.efficiency is not None:
        entry["efficiency"] = v.efficiency
    if loop.held_until is not None and v.state in (
        LoopState.HELD_AFTER_FIZZLES,
        LoopState.HELD_AFTER_FAILURES,
    ):
        entry["heldUntil"] = loop.held_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    if loop.window is not None:
        entry["startingWindow"] = loop.window
    if loop.holds:
        entry["holds"] = loop.holds
    return entry


def from_status(block: Mapping[str, object] | None) -> QueueLoop:
    """A queue's loop as a previous process left it in status: after a restart a queue that
    was held stays held, with its counts and window (the recent window starts empty)."""
    if not block:
        return QueueLoop()

    def number(key: str) -> int:
        value = block.get(key)
        return int(value) if isinstance(value, int | float) else 0

    held_until: datetime | None = None
    raw = block.get("heldUntil")
    if isinstance(raw, str):
        try:
            held_until = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            held_until = None
    state = block.get("state")
    held_for = (
        VMOutcome.FIZZLED
        if state == LoopState.HELD_AFTER_FIZZLES.value
        else VMOutcome.FAILED
        if state == LoopState.HELD_AFTER_FAILURES.value
        else None
    )
    window = block.get("startingWindow")
    return QueueLoop(
        fizzles=number("consecutiveFizzles"),
        failures=number("consecutiveFailures"),
        holds=number("holds"),
        held_until=held_until if held_for is not None else None,
        held_for=held_for,
        window=int(window) if isinstance(window, int) and window > 0 else None,
    )
