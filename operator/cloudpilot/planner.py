"""The pure planner: (desired queues, observed VMs, memory, clock) -> what to do.

No I/O happens here. The reconciler lists the cloud, calls :func:`plan`, carries the plan
out, and writes the status; everything that is a *decision* is in this module and is unit
tested without a cluster or a cloud.

Rules, in the order they apply:

1. A VM whose pilot ended (``Done``) or that broke (``Failed``) is deleted: the cloud does
   not remove stopped VMs by itself and they still cost quota.
2. A VM older than its queue's maximum lifetime is deleted whatever its state: it is
   taken as stuck or lost, as in DIRAC.
3. A VM still starting after the queue's boot timeout is deleted: it will never run a pilot.
4. A VM we already asked to destroy is neither counted nor destroyed again until its TTL
   ends (clouds keep listing a destroyed VM for a while).
5. Missing VMs are created up to each queue's desired count, within the queue's and the
   pool's ``maxInstances`` / ``maxStarting``, shared fairly (round robin) between queues,
   and not for a queue that is backing off after failures, nor beyond what the closed
   loop allows (``gates``: held after fizzles, ramping up, the cloud's quota). At most
   ``max_creates`` per cycle (the operator's ``maxCreatesPerCycle``): the rest comes in
   the next cycles.
6. Surplus VMs are removed newest first, starting ones first. Running pilots are only
   killed when the queue's ``scaleDownPolicy`` is ``DeleteRunning``: by default they are
   left to finish their job and the pool drains.
7. VMs of a queue that is no longer in the spec are handled as a queue scaled to zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from cloudpilot import constants
from cloudpilot import memory as mem
from cloudpilot.capacity import water_fill
from cloudpilot.models.queues import QueueConfig
from cloudpilot.models.spec import ScaleDownPolicy
from cloudpilot.models.vms import ObservedVM, Phase


class DeleteReason(StrEnum):
    PILOT_DONE = "PilotDone"
    VM_FAILED = "VMFailed"
    MAX_LIFETIME = "MaxLifetimeExceeded"
    BOOT_TIMEOUT = "BootTimeout"
    SCALE_DOWN = "ScaleDown"
    QUEUE_REMOVED = "QueueRemoved"
    POOL_DELETED = "PoolDeleted"


class Hold(StrEnum):
    """Why a queue got fewer new VMs than it is missing."""

    MAX_INSTANCES = "MaxInstances"
    MAX_STARTING = "MaxStarting"
    BACKOFF = "BackOff"
    CLOSED_LOOP = "ClosedLoop"
    """Held by the closed loop after pilots fizzled or failed (cloudpilot.outcomes)."""
    RAMP_UP = "RampUp"
    """The closed loop's ramp-up: unproven VMs limited while pilots prove they work."""
    QUOTA = "CloudQuota"
    """The account's learned quota, shared between its pools (cloudpilot.capacity)."""


@dataclass(frozen=True)
class QueueGate:
    """What the closed loop lets one queue do this cycle (decided in cloudpilot.outcomes
    and cloudpilot.capacity; the planner only applies it)."""

    held: bool = False
    starting_room: int | None = None
    capacity_room: int | None = None


@dataclass(frozen=True)
class Deletion:
    vm: ObservedVM
    reason: DeleteReason


@dataclass(frozen=True)
class Creation:
    queue: str
    count: int


@dataclass(frozen=True)
class PoolLimits:
    max_instances: int | None = None
    max_starting: int | None = None


@dataclass(frozen=True)
class QueueSummary:
    """One queue's numbers after the plan is carried out (as far as it can be known)."""

    name: str
    desired: int
    starting: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    unknown: int = 0
    creating: int = 0
    deleting: int = 0
    draining: int = 0
    """Running pilots above the desired count, left to finish (``Drain`` policy)."""
    held: Hold | None = None
    in_spec: bool = True

    @property
    def live(self) -> int:
        return self.starting + self.running


@dataclass(frozen=True)
class Plan:
    creations: tuple[Creation, ...] = ()
    deletions: tuple[Deletion, ...] = ()
    queues: tuple[QueueSummary, ...] = field(default_factory=tuple)

    @property
    def idle(self) -> bool:
        return not self.creations and not self.deletions


@dataclass
class _QueueState:
    config: QueueConfig | None
    name: str
    vms: list[ObservedVM] = field(default_factory=list)
    pending: int = 0
    deletions: list[Deletion] = field(default_factory=list)
    create: int = 0
    held: Hold | None = None

    @property
    def desired(self) -> int:
        return self.config.replicas if self.config else 0

    def kept(self) -> list[ObservedVM]:
        gone = {d.vm.id for d in self.deletions}
        return [vm for vm in self.vms if vm.id not in gone]

    def occupying(self) -> int:
        """VMs that fill a slot: starting, running or unknown, plus pending creations."""
        return self.pending + sum(
            1 for vm in self.kept() if vm.phase in (Phase.STARTING, Phase.RUNNING, Phase.UNKNOWN)
        )

    def starting(self) -> int:
        return self.pending + sum(1 for vm in self.kept() if vm.phase is Phase.STARTING)


def _age(vm: ObservedVM, now: datetime) -> timedelta | None:
    return now - vm.created_at if vm.created_at is not None else None


def _expiry_reason(
    vm: ObservedVM, config: QueueConfig | None, now: datetime, removed_lifetime: int
) -> DeleteReason | None:
    """``removed_lifetime`` is the maximum lifetime of a VM whose queue left the spec."""
    if vm.phase is Phase.DONE:
        return DeleteReason.PILOT_DONE
    if vm.phase is Phase.FAILED:
        return DeleteReason.VM_FAILED
    age = _age(vm, now)
    if age is None:
        return None
    lifetime = config.max_lifetime if config is not None else removed_lifetime
    if age > timedelta(seconds=lifetime):
        return DeleteReason.MAX_LIFETIME
    if (
        config is not None
        and vm.phase is Phase.STARTING
        and age > timedelta(seconds=config.boot_timeout)
    ):
        return DeleteReason.BOOT_TIMEOUT
    return None


def _newest_first(vms: Iterable[ObservedVM]) -> list[ObservedVM]:
    return sorted(vms, key=lambda vm: (vm.created_at is None, vm.created_at), reverse=True)


def _scale_down(state: _QueueState, policy: ScaleDownPolicy, reason: DeleteReason) -> int:
    """Delete surplus VMs; returns how many running pilots are left to drain."""
    surplus = state.occupying() - state.desired
    if surplus <= 0:
        return 0
    kept = state.kept()
    candidates = _newest_first(vm for vm in kept if vm.phase is Phase.STARTING)
    if policy is ScaleDownPolicy.DELETE_RUNNING:
        candidates += _newest_first(vm for vm in kept if vm.phase is Phase.RUNNING)
    for vm in candidates[:surplus]:
        state.deletions.append(Deletion(vm, reason))
    # Only running pilots drain: surplus made of Unknown VMs or of pending creations is not
    # a pilot finishing its job (and under DeleteRunning no running pilot is left over).
    surplus = state.occupying() - state.desired
    running = sum(1 for vm in state.kept() if vm.phase is Phase.RUNNING)
    return max(min(surplus, running), 0)


def _allocate(
    states: Sequence[_QueueState],
    limits: PoolLimits,
    memory: mem.PoolMemory,
    now: datetime,
    max_creates: int | None,
    gates: Mapping[str, QueueGate],
) -> None:
    """Hand out new VMs round robin between queues, so a big queue cannot starve others.

    Computed as numbers, not one VM at a time: the work is O(queues), whatever the counts
    asked for (a loop per VM took seconds on the event loop for 10^7). The result is what
    handing out one VM per queue per round would give: every queue gets ``min(want, L)``
    for the largest level ``L`` the budget allows, and what is left goes one each to the
    first queues in spec order that want more.
    """
    pool_room = _room(limits.max_instances, sum(s.occupying() for s in states))
    pool_start_room = _room(limits.max_starting, sum(s.starting() for s in states))
    budget = _smallest(pool_room, pool_start_room, max_creates)
    # Why a queue that gets less than its share of the budget waits: the pool's limit
    # that the budget came from (MaxInstances first, as when both run out together), or
    # nothing when only the per-cycle cap held it (it is paced, not held).
    if budget is not None and budget == pool_room:
        pool_hold: Hold | None = Hold.MAX_INSTANCES
    elif budget is not None and budget == pool_start_room:
        pool_hold = Hold.MAX_STARTING
    else:
        pool_hold = None
    wanting: list[tuple[_QueueState, int, int | None, int | None, QueueGate]] = []
    for state in states:
        config = state.config
        if config is None:
            continue
        occupying = state.occupying()
        need = state.desired - occupying
        if need <= 0:
            continue
        if mem.in_backoff(memory, state.name, now):
            state.held = Hold.BACKOFF
            continue
        gate = gates.get(state.name, QueueGate())
        if gate.held:
            state.held = Hold.CLOSED_LOOP
            continue
        room = _room(config.max_instances, occupying)
        start_room = _room(config.max_starting, state.starting())
        wanting.append((state, need, room, start_room, gate))
    wants = [
        _smallest(need, room, start_room, gate.starting_room, gate.capacity_room) or 0
        for _, need, room, start_room, gate in wanting
    ]
    shares = _fill(wants, budget)
    for (state, need, room, start_room, gate), share in zip(wanting, shares, strict=True):
        state.create = share
        if share >= need:
            continue
        if gate.capacity_room is not None and share >= gate.capacity_room:
            state.held = Hold.QUOTA
        elif room is not None and share >= room:
            state.held = Hold.MAX_INSTANCES
        elif start_room is not None and share >= start_room:
            state.held = Hold.MAX_STARTING
        elif gate.starting_room is not None and share >= gate.starting_room:
            state.held = Hold.RAMP_UP
        else:
            state.held = pool_hold


def _fill(wants: Sequence[int], budget: int | None) -> list[int]:
    """Round-robin shares of ``budget`` (None: unlimited) between queues wanting ``wants``:
    the same max-min fair shares the closed loop gives pools of one account's quota.
    O(queues log queues), whatever the numbers.
    """
    if budget is None:
        return list(wants)
    return water_fill(budget, wants)


def _smallest(*values: int | None) -> int | None:
    """The smallest of the values that are set; None if none is (no limit)."""
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _room(limit: int | None, used: int) -> int | None:
    """Free slots under a limit; None means unlimited."""
    return None if limit is None else max(limit - used, 0)


@dataclass(frozen=True)
class Pruned:
    """The plan's first half: rules 1-4, 6 and 7 applied, the VMs that go and what each
    queue keeps. None of it depends on the closed loop's gates, which only limit creations
    (rule 5): the loop counts how these VMs ended before it says what each queue may
    create, and the plan is then finished with its gates (:func:`plan` given this), not
    made again (cloudpilot.decision.groundwork)."""

    deletions: tuple[Deletion, ...]
    states: tuple[_QueueState, ...]
    """In plan order: the spec's queues, then removed ones. Not changed once pruned."""
    deleting: Mapping[str, int]
    ended: Mapping[str, tuple[ObservedVM, ...]]
    draining: Mapping[str, int]


def prune(
    queues: Sequence[QueueConfig],
    observed: Sequence[ObservedVM],
    memory: mem.PoolMemory,
    now: datetime,
    *,
    removed_queue_policy: ScaleDownPolicy = ScaleDownPolicy.DRAIN,
) -> Pruned:
    """What goes this cycle (expired and surplus VMs), before any creation is decided."""
    states = {q.name: _QueueState(config=q, name=q.name) for q in queues}
    for pending in memory.pending.values():
        if pending.queue in states:
            states[pending.queue].pending += 1
    deleting_count: dict[str, int] = {}
    ended: dict[str, list[ObservedVM]] = {}
    for vm in observed:
        if vm.id in memory.pending:
            continue  # listed now; memory.observe() forgets it on the next cycle
        state = states.get(vm.queue)
        if state is None:
            state = states[vm.queue] = _QueueState(config=None, name=vm.queue)
        if vm.id in memory.deleting:
            deleting_count[vm.queue] = deleting_count.get(vm.queue, 0) + 1
            ended.setdefault(vm.queue, []).append(vm)
            continue
        state.vms.append(vm)

    # Rules 1-3: expired VMs go, whatever the counts say. A removed queue's VMs keep the
    # longest lifetime the pool allows: never forever, never shorter than any queue's.
    removed_lifetime = max((q.max_lifetime for q in queues), default=constants.DEFAULT_MAX_LIFETIME)
    for state in states.values():
        for vm in state.vms:
            reason = _expiry_reason(vm, state.config, now, removed_lifetime)
            if reason is not None:
                state.deletions.append(Deletion(vm, reason))

    # Rule 6 and 7: surplus.
    draining: dict[str, int] = {}
    for state in states.values():
        if state.config is None:
            draining[state.name] = _scale_down(
                state, removed_queue_policy, DeleteReason.QUEUE_REMOVED
            )
        else:
            draining[state.name] = _scale_down(
                state, state.config.scale_down_policy, DeleteReason.SCALE_DOWN
            )

    ordered = [states[q.name] for q in queues] + [s for s in states.values() if s.config is None]
    return Pruned(
        deletions=tuple(d for s in ordered for d in s.deletions),
        states=tuple(ordered),
        deleting=deleting_count,
        ended={q: tuple(vms) for q, vms in ended.items()},
        draining=draining,
    )


def plan(
    queues: Sequence[QueueConfig],
    observed: Sequence[ObservedVM],
    memory: mem.PoolMemory,
    now: datetime,
    *,
    limits: PoolLimits = PoolLimits(),
    removed_queue_policy: ScaleDownPolicy = ScaleDownPolicy.DRAIN,
    max_creates: int | None = None,
    gates: Mapping[str, QueueGate] | None = None,
    pruned: Pruned | None = None,
) -> Plan:
    """Decide one reconcile of one pool. ``observed`` holds only VMs the pool owns.

    ``max_creates`` caps the VMs this cycle asks for, all queues together (shared round
    robin as the limits are): a pool scaling up by thousands converges over several
    cycles, each a bounded amount of work. The work done here grows with the VMs observed
    and the queues, never with the counts asked for.

    ``pruned``: :func:`prune` of the same queues, VMs, memory and clock, already made
    (None: pruned here); only rule 5 is applied then.
    """
    if pruned is None:
        pruned = prune(queues, observed, memory, now, removed_queue_policy=removed_queue_policy)
    # Rule 5: missing VMs. On copies: a Pruned is never changed, whoever finishes it.
    ordered = [replace(s) for s in pruned.states]
    _allocate(ordered, limits, memory, now, max_creates, gates or {})

    creations = tuple(Creation(s.name, s.create) for s in ordered if s.create > 0)
    summaries = tuple(
        _summarise(
            s,
            pruned.deleting.get(s.name, 0),
            pruned.draining.get(s.name, 0),
            pruned.ended.get(s.name, ()),
        )
        for s in ordered
    )
    return Plan(creations=creations, deletions=pruned.deletions, queues=summaries)


def _summarise(
    state: _QueueState, already_deleting: int, draining: int, being_deleted: Sequence[ObservedVM]
) -> QueueSummary:
    """Starting/running count what stays; done/failed count what the cloud still lists in
    that phase, including VMs being deleted, so a finished pilot shows until it is gone."""
    kept = state.kept()
    count = {phase: sum(1 for vm in kept if vm.phase is phase) for phase in Phase}
    for vm in [*being_deleted, *(d.vm for d in state.deletions)]:
        if vm.phase in (Phase.DONE, Phase.FAILED):
            count[vm.phase] += 1
    return QueueSummary(
        name=state.name,
        desired=state.desired,
        starting=count[Phase.STARTING] + state.pending,
        running=count[Phase.RUNNING],
        done=count[Phase.DONE],
        failed=count[Phase.FAILED],
        unknown=count[Phase.UNKNOWN],
        creating=state.create,
        deleting=len(state.deletions) + already_deleting,
        draining=draining,
        held=state.held,
        in_spec=state.config is not None,
    )


def plan_teardown(observed: Sequence[ObservedVM], memory: mem.PoolMemory) -> tuple[Deletion, ...]:
    """Deleting a pool with ``deletionPolicy: Delete``: every owned VM goes."""
    return tuple(
        Deletion(vm, DeleteReason.POOL_DELETED) for vm in observed if vm.id not in memory.deleting
    )
