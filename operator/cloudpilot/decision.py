"""The whole brain of one pool cycle, as pure functions over plain data.

The reconciler gathers an :class:`Observation` (the spec, the cloud's listing, the stored
status, whether this replica leads), calls :func:`decide`, carries the decision out, and
hands what happened (:class:`Results`) to :func:`conclude`, which says what status to
write, which Events to post and when to come back. Nothing here does I/O, reads a clock or
draws a random number: each rule is a unit test without a cloud (tests/unit/test_decision.py).

The plan is made once per cycle, in :func:`decide`; the closed loop's gates go into it, not
into a second plan: the loop looks at the cycle's :func:`groundwork` (memory after
observing, the VMs the plan deletes), which the gates do not change, and :func:`decide`
finishes that same groundwork with them. The status then shows the pool *as it
now stands*: :func:`as_it_stands` moves the plan's queue summaries on by what the actions
did (new VMs are starting, a failed queue is backing off) instead of planning again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cloudpilot import constants, early_create, planner
from cloudpilot import memory as mem
from cloudpilot.account_tick import Tick
from cloudpilot.closedloop import LoopReport, attach
from cloudpilot.cloud.results import CreateResult
from cloudpilot.credentials.proxy import ProxyReason, ProxyReport
from cloudpilot.cycle_events import (
    Event,
    blocking_event,
    creation_events,
    deletion_events,
    planned,
    stall_events,
)
from cloudpilot.inventory import queue_prefixes
from cloudpilot.models.queues import CloudAccount, QueueConfig
from cloudpilot.models.spec import PoolSpec, ScaleDownPolicy
from cloudpilot.models.vms import ObservedVM
from cloudpilot.reasons import Reason
from cloudpilot.status import OBSERVATION_KEYS, StatusInputs, build_status, status_patch

NO_PROXY = ProxyReport(frozenset(), None, None, None)
NO_LOOP = LoopReport()


@dataclass(frozen=True)
class Tuning:
    """The operator's settings that decisions depend on."""

    interval: float = constants.DEFAULT_RECONCILE_INTERVAL
    converging_interval: float = constants.DEFAULT_CONVERGING_INTERVAL
    max_creates_per_cycle: int = constants.DEFAULT_MAX_CREATES_PER_CYCLE
    unreachable_stall_after: float = constants.DEFAULT_UNREACHABLE_STALL_AFTER


@dataclass(frozen=True)
class AccountListing:
    """One cloud account of the pool as this cycle found it."""

    account: CloudAccount
    error: mem.CloudError | None = None
    fingerprint: str | None = None
    """Of the credentials it was listed with (None: they could not be read)."""
    listed_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Observation:
    """Everything one cycle knows about the pool, gathered before anything is decided."""

    generation: int
    previous: Mapping[str, Any]
    """``status`` as stored."""
    problem: mem.CloudError | None = None
    """Why the spec (or what it names) cannot be used; nothing else was gathered then."""
    spec: PoolSpec | None = None
    queues: tuple[QueueConfig, ...] = ()
    proxy: ProxyReport = NO_PROXY
    accounts: tuple[AccountListing, ...] = ()
    observed: tuple[ObservedVM, ...] = ()
    leading: bool = True
    """This replica holds the Lease (the cloud writes are fenced again right before each)."""
    jitter: float = 0.5
    early: tuple[CreateResult, ...] = ()
    """Creations sent before this cycle's listing came back (:func:`early_scale_up`)."""
    """In [0, 1), drawn by the caller: spreads the retries of pools that failed together."""
    extra_status: Mapping[str, Any] = field(default_factory=dict)
    """Status other parts own, shown as they say (``selector``, ``dirac``: cloudpilot.dirac)."""
    gates: Mapping[str, planner.QueueGate] = field(default_factory=dict)
    """What the closed loop lets each queue create (held, ramping up, the cloud's quota):
    :meth:`cloudpilot.closedloop.ClosedLoop.steer`. Empty: the plan is not gated."""


@dataclass(frozen=True)
class Decision:
    plan: planner.Plan
    """What to create and delete (made once per cycle)."""
    memory: mem.PoolMemory
    """The pool's memory after this cycle's observation, before any action."""
    blocking: mem.CloudError | None = None
    """The error that blocks the whole pool this cycle, if any."""
    act: bool = False
    """Carry the plan out (False: blocked, or another replica leads)."""
    record_spec: bool = False
    """Record ``status.teardownSpec`` first; if that fails, create nothing."""
    audit: tuple[Event, ...] = ()
    """The decisions, for the audit log (never posted as Events)."""
    by_account: Mapping[CloudAccount, tuple[planner.Deletion, ...]] = field(default_factory=dict)
    """The plan's deletions grouped by the account each VM is destroyed through."""


@dataclass(frozen=True)
class Results:
    """What carrying a decision out did."""

    record_error: str | None = None
    """Why ``status.teardownSpec`` could not be written (no creation was attempted)."""
    deleted: Mapping[str, mem.CloudError | None] = field(default_factory=dict)
    """VM id -> None (destroyed) or why not."""
    created: tuple[CreateResult, ...] = ()
    """One per creation attempted."""


@dataclass(frozen=True)
class Outcome:
    status_patch: dict[str, Any]
    events: list[Event]
    next_delay: float
    memory: mem.PoolMemory
    tick: Tick | None = None
    """The ticks of the pool's first account: a quiet pool comes due on one (set by the
    reconciler, which knows the account's listing; :mod:`cloudpilot.account_tick`)."""


def queues_to_prepare(queues: Sequence[QueueConfig], memory: mem.PoolMemory) -> set[str]:
    """Queues that may create VMs this cycle: their image, flavor and network lookups run
    beside the listing, so a new pool pays one round trip for both."""
    return {q.name for q in queues if q.replicas > 0 and q.name not in memory.backoff}


def speakers(
    queues: Sequence[QueueConfig], with_proxy: Collection[str]
) -> dict[CloudAccount, QueueConfig]:
    """One queue speaks for each account: one with a pilot proxy if any has one, since
    ``secret = PROXY`` credentials need one (whatever order the queues come in)."""
    accounts: dict[CloudAccount, QueueConfig] = {}
    for q in sorted(queues, key=lambda q: q.name not in with_proxy):
        accounts.setdefault(q.account, q)
    return accounts


@dataclass(frozen=True)
class Groundwork:
    """A cycle's decision before the closed loop's gates are known: the memory after
    observing, what blocks the pool, and the plan's first half (the VMs it deletes).

    The loop needs these to say what each queue may create (how the deleted VMs ended
    moves its holds: :meth:`cloudpilot.closedloop.ClosedLoop.steer`), and the gates change
    only creations, so :func:`decide` finishes this same groundwork with them: one decision
    per cycle, not one to learn the deletions and another to act."""

    memory: mem.PoolMemory
    blocking: mem.CloudError | None = None
    """The spec's problem or an account's listing error (an expired proxy comes later)."""
    pruned: planner.Pruned | None = None
    """None: nothing is planned this cycle (see ``blocking``)."""

    @property
    def deletions(self) -> tuple[planner.Deletion, ...]:
        return self.pruned.deletions if self.pruned is not None else ()


def groundwork(observation: Observation, memory: mem.PoolMemory, now: datetime) -> Groundwork:
    """What :func:`decide` starts from; it depends on neither the gates nor the tuning."""
    obs = observation
    if obs.problem is not None:
        # The spec cannot be acted on: touch nothing, remember nothing new.
        return Groundwork(memory, obs.problem)
    memory = mem.for_generation(memory, obs.generation)
    for result in obs.early:  # pending before the listing is applied, like any creation
        memory = _record_creation(memory, result, now, obs)
    memory = mem.observe(memory, (vm.id for vm in obs.observed), now)
    memory = _note_credentials(memory, obs.accounts)
    # An account that could not be listed blocks the whole pool's plan this cycle.
    blocking = next((a.error for a in obs.accounts if a.error is not None), None)
    memory = mem.record_outage(memory, blocking, now)
    if blocking is not None:
        return Groundwork(memory, blocking)
    pruned = planner.prune(
        obs.queues, obs.observed, memory, now, removed_queue_policy=_removed_queue_policy(obs)
    )
    return Groundwork(memory, None, pruned)


def decide(
    observation: Observation,
    memory: mem.PoolMemory,
    now: datetime,
    tuning: Tuning = Tuning(),
    *,
    ground: Groundwork | None = None,
) -> Decision:
    """What this cycle does: the plan, the memory it acts with, what blocks the pool.
    ``ground``: :func:`groundwork` of the same observation (bar its gates) and memory,
    already made for the closed loop (None: made here)."""
    obs = observation
    if ground is None:
        ground = groundwork(obs, memory, now)
    if obs.problem is not None:
        return Decision(planner.Plan(), ground.memory, blocking=obs.problem)
    memory, blocking = ground.memory, ground.blocking
    pruned = ground.pruned
    plan = _plan(obs, memory, now, tuning, pruned) if pruned is not None else planner.Plan()
    report = obs.proxy
    if report.stopped_queues and blocking is None and report.stop is not None:
        expired = report.stop.reason is ProxyReason.EXPIRED
        kind = mem.ErrorKind.PROXY_EXPIRED if expired else mem.ErrorKind.INVALID_PROXY
        blocking = mem.CloudError(kind, report.stop.message)
    listed = bool(obs.accounts) and all(a.error is None for a in obs.accounts)
    act = obs.leading and listed
    return Decision(
        plan=plan,
        memory=memory,
        blocking=blocking,
        act=act,
        # Every account listed: this spec may create VMs now (in the queues an expired
        # proxy does not stop, too). Recorded first, so that a deletion can always find
        # the spec the pool's VMs were made with.
        record_spec=act and (blocking is None or bool(plan.creations)),
        audit=tuple(planned(plan.creations, plan.deletions)) if act else (),
        by_account=by_account(plan.deletions, obs) if act else {},
    )


def early_scale_up(
    last: early_create.LastLook | None,
    queues: Sequence[QueueConfig],
    spec: PoolSpec,
    proxy: ProxyReport,
    memory: mem.PoolMemory,
    now: datetime,
    tuning: Tuning = Tuning(),
    gates: Mapping[str, planner.QueueGate] | None = None,
) -> tuple[planner.Creation, ...]:
    """Creations to send at once, beside this cycle's listing, decided from the pool's last
    look and memory (:mod:`cloudpilot.early_create` says why that cannot duplicate a VM);
    none when the last look cannot be trusted. The same limits and proxy stop as a cycle,
    and the same closed loop: ``gates`` as of the last look (None: the loop does not know
    the pool yet, so nothing goes out early)."""
    if gates is None:
        return ()
    limits = spec.limits
    creations = early_create.early_creations(
        last,
        queues,
        memory,
        now,
        limits=planner.PoolLimits(
            limits.max_instances if limits else None, limits.max_starting if limits else None
        ),
        removed_queue_policy=spec.scale_down_policy or ScaleDownPolicy.DRAIN,
        max_creates=tuning.max_creates_per_cycle,
        gates=gates,
    )
    return tuple(c for c in creations if c.queue not in proxy.stopped_queues)


def last_look(observation: Observation, now: datetime) -> early_create.LastLook | None:
    """What the next cycle's early scale-up may start from: this cycle's view, when every
    account was listed."""
    obs = observation
    if obs.problem is not None or not obs.accounts or any(a.error for a in obs.accounts):
        return None
    return early_create.LastLook(early_create.shape_of(obs.queues), obs.observed, now)


def _note_credentials(memory: mem.PoolMemory, accounts: Sequence[AccountListing]) -> mem.PoolMemory:
    """Rotated credentials (a fixed key, a widened IAM policy) clear the back-off their
    predecessors earned: the next create is tried now, not in an hour. The hold after an
    uncertain create stays: it guards against a duplicate, not a fault."""
    seen = {a.account: a.fingerprint for a in accounts if a.fingerprint is not None}
    if not seen:
        return memory
    rotated = any(memory.fingerprints.get(acc) not in (None, fp) for acc, fp in seen.items())
    backoff = memory.backoff
    if rotated:
        backoff = {q: b for q, b in backoff.items() if b.error.uncertain}
    return replace(memory, backoff=backoff, fingerprints={**memory.fingerprints, **seen})


def _plan(
    obs: Observation,
    memory: mem.PoolMemory,
    now: datetime,
    tuning: Tuning,
    pruned: planner.Pruned,
) -> planner.Plan:
    spec = obs.spec
    limits = spec.limits if spec is not None else None
    plan = planner.plan(
        obs.queues,
        obs.observed,
        memory,
        now,
        limits=planner.PoolLimits(
            limits.max_instances if limits else None, limits.max_starting if limits else None
        ),
        removed_queue_policy=_removed_queue_policy(obs),
        # The early scale-up's creations count against this cycle's cap.
        max_creates=max(tuning.max_creates_per_cycle - sum(r.requested for r in obs.early), 0),
        gates=obs.gates,
        pruned=pruned,
    )
    # An expired pilot proxy: new pilots could not work. Deletions go on.
    stopped = obs.proxy.stopped_queues
    return replace(plan, creations=tuple(c for c in plan.creations if c.queue not in stopped))


def _removed_queue_policy(obs: Observation) -> ScaleDownPolicy:
    spec = obs.spec
    return (spec.scale_down_policy if spec else None) or ScaleDownPolicy.DRAIN


def by_account(
    deletions: Sequence[planner.Deletion], obs: Observation
) -> dict[CloudAccount, tuple[planner.Deletion, ...]]:
    """A VM is destroyed through its queue's account; a removed queue's VM through the
    account that listed it. A VM no account claims is left for the next cycle."""
    queues = {q.name: q.account for q in obs.queues}
    grouped: dict[CloudAccount, list[planner.Deletion]] = {}
    for deletion in deletions:
        account = queues.get(deletion.vm.queue) or next(
            (a.account for a in obs.accounts if deletion.vm.id in a.listed_ids), None
        )
        if account is not None:
            grouped.setdefault(account, []).append(deletion)
    return {a: tuple(ds) for a, ds in grouped.items()}


def conclude(
    observation: Observation,
    decision: Decision,
    results: Results,
    now: datetime,
    tuning: Tuning = Tuning(),
    loop: LoopReport = NO_LOOP,
) -> Outcome:
    """The status, Events, next delay and memory after the decision was carried out.
    ``loop``: what the closed loop adds (its status blocks, conditions, Events, wake-up)."""
    obs = observation
    if obs.problem is not None:
        return _blocked(obs, decision.memory, obs.problem, now, tuning)
    blocking = decision.blocking
    if results.record_error is not None and blocking is None:
        # No record, no new VM; deletions and replacements of stuck VMs go on, and the
        # condition says why (e.g. a CRD older than the operator: upgrade it). An expired
        # proxy's block wins: it stops its queues whatever is recorded, and needs a human.
        blocking = mem.CloudError(
            mem.ErrorKind.TRANSIENT,
            "cannot record status.teardownSpec before creating VMs "
            f"(is the CRD up to date?): {results.record_error}",
        )
    memory = mem.record_deleting(
        decision.memory, [i for i, e in results.deleted.items() if e is None], now
    )
    events = deletion_events(decision.plan.deletions, results.deleted)
    for result in obs.early:  # already in decision.memory (see decide)
        events += creation_events(result)
    for result in results.created:
        memory = _record_creation(memory, result, now, obs)
        events += creation_events(result)
    after = as_it_stands(decision.plan, results)
    if blocking is not None:
        events += blocking_event(obs.previous.get("lastError"), blocking)
    if obs.proxy.event is not None:
        kind, reason, message = obs.proxy.event
        events.append(Event(kind, Reason(reason), message))
    status = build_status(
        StatusInputs(
            generation=obs.generation,
            plan=after,
            observed=obs.observed,
            memory=memory,
            now=now,
            error=blocking,
            prefixes=queue_prefixes(obs.queues),
            extra={**obs.extra_status, **({"proxy": obs.proxy.status} if obs.proxy.status else {})},
            extra_conditions=[
                *([obs.proxy.verdict.condition] if obs.proxy.verdict else ()),
                *loop.conditions,
            ],
            outage=memory.outage,
            unreachable_stall_after=tuning.unreachable_stall_after,
        ),
        obs.previous,
    )
    attach(status, loop.blocks)
    events += loop.events
    events += stall_events(obs.previous, status, blocking)
    delay = next_delay(after, memory, now, blocking, outage_delay(memory, obs), tuning)
    return Outcome(
        status_patch=status_patch(obs.previous, status),
        events=events,
        next_delay=min(delay, loop.wake) if loop.wake is not None else delay,
        memory=memory,
    )


def _record_creation(
    memory: mem.PoolMemory, result: CreateResult, now: datetime, obs: Observation
) -> mem.PoolMemory:
    """New VMs are pending until listed; a failure backs the queue off, a success ends it."""
    memory = mem.record_created(
        memory,
        (
            mem.PendingVM(id=n.id, name=n.name, queue=result.queue, created_at=now)
            for n in result.created
        ),
    )
    if result.error is not None:
        if _quota_refusal_learned(result, obs):
            return memory
        return mem.record_failure(memory, result.queue, result.error, now, **backoff_args(obs))
    if result.fenced:
        return memory  # not all of it was tried: no success, no failure (see CreateResult)
    return mem.record_success(memory, result.queue)


def _quota_refusal_learned(result: CreateResult, obs: Observation) -> bool:
    """A quota refusal is no fault to back off from when the closed loop is on: it learned
    the account's headroom from it (cloudpilot.capacity) and plans within it from now on."""
    if result.error is None or result.error.kind is not mem.ErrorKind.QUOTA:
        return False
    queue = next((q for q in obs.queues if q.name == result.queue), None)
    return queue is not None and queue.closed_loop.enabled


def as_it_stands(plan: planner.Plan, results: Results) -> planner.Plan:
    """The plan's summaries moved on by the actions: the pool as it now stands.

    A queue's new VMs are starting (pending until a listing shows them); a queue whose
    create failed is held by its back-off. Deletions change no count (a VM being destroyed
    is counted as deleting, destroyed or not: a failed one is planned again). Creations
    not attempted (another replica leads, the spec could not be recorded) are still
    missing, and so is what the leadership fence stopped; attempted ones are not, whatever
    came of them.

    Not planned again, so room a failed create frees under a pool-level ``maxInstances`` /
    ``maxStarting`` is not re-shared here: another queue keeps its ``held`` for this cycle,
    which is true (it got no more VMs this cycle), and gets the room at the next one, a
    converging interval later (new VMs are starting, the failed queue backs off). Exact
    would mean planning twice, or the summaries telling a pool's hold from a queue's.
    """
    created = {r.queue: len(r.created) for r in results.created}
    failed = {r.queue for r in results.created if r.error is not None}
    fenced = {r.queue for r in results.created if r.fenced and r.error is None}
    queues = tuple(
        replace(
            q,
            starting=q.starting + created.get(q.name, 0),
            creating=0 if q.name in created else q.creating,
            held=planner.Hold.BACKOFF if q.name in failed else q.held,
        )
        for q in plan.queues
    )
    missing = tuple(
        replace(c, count=c.count - created[c.queue]) if c.queue in fenced else c
        for c in plan.creations
        if c.queue not in created or c.queue in fenced
    )
    return planner.Plan(creations=missing, deletions=plan.deletions, queues=queues)


def _blocked(
    obs: Observation, memory: mem.PoolMemory, error: mem.CloudError, now: datetime, tuning: Tuning
) -> Outcome:
    """The spec cannot be acted on: say why, once, and touch nothing in the cloud."""
    status = build_status(
        StatusInputs(
            generation=obs.generation,
            plan=planner.Plan(),
            observed=[],
            memory=memory,
            now=now,
            error=error,
        ),
        obs.previous,
    )
    # Keep what is known about the VMs: an invalid edit must not make them look gone.
    status.update({k: obs.previous[k] for k in OBSERVATION_KEYS if k in obs.previous})
    return Outcome(
        status_patch=status_patch(obs.previous, status),
        events=blocking_event(obs.previous.get("lastError"), error),
        next_delay=tuning.interval,
        memory=memory,
    )


def next_delay(
    after: planner.Plan,
    memory: mem.PoolMemory,
    now: datetime,
    blocking: mem.CloudError | None,
    outage: float | None,
    tuning: Tuning,
) -> float:
    """When to look again: a minute when quiet, sooner while converging or backing off."""
    if outage is not None:
        # An unreachable endpoint: back off (capped by the interval), not every
        # converging interval, however the plan looks.
        return max(min(outage, tuning.interval), 1.0)
    delays = [tuning.interval]
    converging = (
        after.creations
        or memory.pending
        or memory.deleting
        or any(q.starting or q.deleting for q in after.queues)
    )
    if converging:
        delays.append(tuning.converging_interval)
    if blocking and blocking.kind is mem.ErrorKind.TRANSIENT:
        delays.append(min(tuning.converging_interval, constants.TRANSIENT_LISTING_RETRY))
    for backoff in memory.backoff.values():
        delays.append(max((backoff.retry_at - now).total_seconds(), 1.0))
        if backoff.error.uncertain:
            # The failed create may have been carried out (a timeout, a lost answer):
            # look at the cloud again soon; the back-off still holds new creations.
            delays.append(constants.TRANSIENT_LISTING_RETRY)
    return min(delays)


def outage_delay(memory: mem.PoolMemory, obs: Observation) -> float | None:
    """The next retry of an unreachable endpoint: the pool's back-off, by failed cycle."""
    outage = memory.outage
    if outage is None or outage.error.kind is not mem.ErrorKind.UNREACHABLE:
        return None
    args = backoff_args(obs)
    return mem.backoff_delay(
        outage.failures,
        outage.error.kind,
        initial=args.get("initial", constants.BACKOFF_INITIAL),
        maximum=args.get("maximum", constants.BACKOFF_MAX),
        jitter=args["jitter"],
    )


def backoff_args(obs: Observation) -> dict[str, Any]:
    """The pool's ``spec.backoff`` as arguments of :func:`cloudpilot.memory.record_failure`."""
    args: dict[str, Any] = {"jitter": obs.jitter}
    backoff = obs.spec.backoff if obs.spec is not None else None
    if backoff and backoff.initial_seconds:
        args["initial"] = backoff.initial_seconds
    if backoff and backoff.max_seconds:
        args["maximum"] = backoff.max_seconds
    return args
