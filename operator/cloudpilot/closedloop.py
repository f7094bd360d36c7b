"""The closed loop's memory across cycles and pools, and its hooks into one reconcile.

Decisions are in :mod:`cloudpilot.outcomes` (how VMs ended, holds, ramp-up, the status
block) and :mod:`cloudpilot.capacity` (learned quota, fair share); this holds their state
and hands the reconciler what it needs, so that the reconciler's own changes stay a few
well-delimited calls (and move with it into ``decide``).

What survives a restart: each queue's hold, consecutive counts and ramp window are read
back from ``status.queues[].closedLoop`` on a pool's first cycle. What is lost: the recent
window of ended pilots (the counts and efficiency start again), the VMs listed last cycle
(a VM that vanished while the operator was down is not counted as reclaimed), and the
learned quotas (relearned from the first refusal or partial create).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudpilot import capacity, metrics, nova_quota, outcomes, planner
from cloudpilot.cloud.results import CreateResult
from cloudpilot.cycle_events import Event
from cloudpilot.early_create import LastLook
from cloudpilot.memory import ErrorKind, PoolMemory
from cloudpilot.models.queues import QueueConfig
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.reasons import Reason
from cloudpilot.status import Condition

_LIVE = (Phase.STARTING, Phase.RUNNING, Phase.UNKNOWN)
_WARNING_STATES = frozenset(
    {
        outcomes.LoopState.HELD_AFTER_FIZZLES,
        outcomes.LoopState.HELD_AFTER_FAILURES,
        outcomes.LoopState.QUOTA_LIMITED,
    }
)
"""Loop states whose Event is a Warning: the pool runs short of replicas. Open, RampingUp
and Disabled (the admin's own choice) are Normal."""


@dataclass(frozen=True)
class LoopReport:
    """What the loop adds to a cycle's conclusion (:func:`cloudpilot.decision.conclude`):
    each queue's ``closedLoop`` status block, the conditions, the Events, and when a hold
    ends (the cycle that lifts it)."""

    blocks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    events: tuple[Event, ...] = ()
    wake: float | None = None


@dataclass
class _PoolLoop:
    queues: dict[str, outcomes.QueueLoop] = field(default_factory=dict)
    known: dict[str, ObservedVM] = field(default_factory=dict)
    """The pool's live VMs as last listed and not deleted by us: vanished ones were
    reclaimed (or failed, if they had not started)."""
    classified: set[str] = field(default_factory=set)
    """VMs already counted (a failed delete is retried without counting them twice)."""
    accounts: dict[str, str] = field(default_factory=dict)
    """Queue -> account key, as of the last cycle."""


class ClosedLoop:
    """Per-pool loops and per-account headroom, for one Reconciler."""

    def __init__(self) -> None:
        self._pools: dict[str, _PoolLoop] = {}
        self._headroom: dict[str, capacity.Headroom] = {}
        self._usage: dict[str, dict[str, capacity.Usage]] = {}

    def forget(self, pool_uid: str) -> None:
        self._pools.pop(pool_uid, None)
        for usage in self._usage.values():
            usage.pop(pool_uid, None)

    def set_headroom(self, account: str, headroom: capacity.Headroom) -> None:
        """Where a :class:`capacity.HeadroomSource` (OpenStack limits) feeds a known quota."""
        self._headroom[account] = headroom

    def _feed_nova(self, readings: Mapping[str, nova_quota.NovaReading], now: datetime) -> None:
        """Each account's quota from Nova's limits, with CloudPilot's usage as just noted
        (Nova's own usage counts those VMs too); see :func:`nova_quota.merged` for how it
        meets a quota learned from a refusal."""
        for account, reading in readings.items():
            ours = sum(u.live for u in self._usage.get(account, {}).values())
            read = nova_quota.account_limit(reading, ours_live=ours, now=now)
            limit = nova_quota.merged(self._headroom.get(account), read, now)
            if limit is not None:
                self.set_headroom(account, limit)
            else:
                self._headroom.pop(account, None)

    # -- the two seams of a cycle (cloudpilot.reconciler) ------------------------------

    def steer(
        self,
        pool_uid: str,
        pool_key: str,
        queues: Sequence[QueueConfig],
        observed: Sequence[ObservedVM],
        memory: PoolMemory,
        accounts: Mapping[str, str],
        previous_status: Mapping[str, Any],
        deletions: Sequence[planner.Deletion],
        now: datetime,
        *,
        listed: bool,
        nova: Mapping[str, nova_quota.NovaReading] | None = None,
    ) -> tuple[dict[str, planner.QueueGate] | None, list[Event]]:
        """Before deciding: count how VMs ended (vanished since last cycle, or deleted by
        this cycle's plan: ``deletions``, from :func:`cloudpilot.decision.groundwork`), and
        say what each queue may create. None: nothing is known this cycle
        (an account could not be listed), decide without the loop. ``nova``: account ->
        Nova's limits read beside this listing (OpenStack), the account's known quota."""
        events = self.observe(
            pool_uid,
            pool_key,
            queues,
            observed,
            memory,
            accounts,
            previous_status,
            now,
            listed=listed,
        )
        if not listed:
            return None, events
        self._feed_nova(nova or {}, now)
        events += self.classify_deletions(pool_key, pool_uid, deletions, queues, now)
        return self.gates(pool_uid, queues, observed, memory, now), events

    def account_for(
        self,
        pool_uid: str,
        pool_key: str,
        queues: Sequence[QueueConfig],
        observed: Sequence[ObservedVM],
        after: planner.Plan,
        created: Sequence[CreateResult],
        deleting: Collection[str],
        previous_status: Mapping[str, Any],
        now: datetime,
        events: Sequence[Event] = (),
    ) -> LoopReport:
        """After acting: learn each account's headroom from the creates, remember the VMs
        left, and report (``after``: the plan as the pool now stands)."""
        if pool_uid not in self._pools:
            return LoopReport(events=tuple(events))
        for result in created:
            refused = result.error is not None and result.error.kind is ErrorKind.QUOTA
            if result.error is not None and not refused:
                continue  # a fault (bad config, a timeout), not the cloud's capacity
            self.learn(
                pool_uid,
                result.queue,
                requested=result.requested,
                created=len(result.created),
                refused=refused,
                now=now,
            )
        self.remember_listed(pool_uid, observed, deleting)
        blocks, conditions, notices = self.report(
            pool_uid, pool_key, queues, after, previous_status, now
        )
        return LoopReport(
            blocks, tuple(conditions), (*events, *notices), self.next_wake(pool_uid, now)
        )

    def early_gates(
        self,
        pool_uid: str,
        queues: Sequence[QueueConfig],
        last: LastLook | None,
        memory: PoolMemory,
        now: datetime,
    ) -> dict[str, planner.QueueGate] | None:
        """The gates for an early scale-up (before the listing), from the last look: a
        queue held after the last cycle's fizzles stays held. None: the loop does not know
        the pool (no early creation then)."""
        if last is None or pool_uid not in self._pools:
            return None
        return self.gates(pool_uid, queues, last.observed, memory, now)

    # -- before planning ---------------------------------------------------------------

    def observe(
        self,
        pool_uid: str,
        pool_key: str,
        queues: Sequence[QueueConfig],
        observed: Sequence[ObservedVM],
        memory: PoolMemory,
        accounts: Mapping[str, str],
        previous_status: Mapping[str, Any],
        now: datetime,
        *,
        listed: bool = True,
    ) -> list[Event]:
        """Count vanished VMs, note each account's usage; the first cycle reads holds back.
        ``listed`` False (the cloud could not be listed): nothing is known to have vanished."""
        state = self._pools.get(pool_uid)
        if state is None:
            state = self._pools[pool_uid] = _PoolLoop(queues=_from_status(previous_status))
        if not listed:
            state.known = {}
            return []
        state.accounts = dict(accounts)
        ids = {vm.id for vm in observed}
        vanished = [vm for vm_id, vm in state.known.items() if vm_id not in ids]
        state.classified &= ids
        endings = [outcomes.ended(vm, outcomes.classify_vanished(vm), now) for vm in vanished]
        by_name = {q.name: q for q in queues}
        notices = self._record(pool_key, state, endings, by_name, now)
        reclaimed = Counter(e.queue for e in endings if e.outcome is outcomes.VMOutcome.RECLAIMED)
        for queue, count in sorted(reclaimed.items()):
            spot = " spot" if queue in by_name and by_name[queue].spot else ""
            notices.append(
                Event(
                    "Warning",
                    Reason.RECLAIMED,
                    f"queue {queue}: {count}{spot} VM(s) reclaimed by the cloud "
                    "(gone, and not deleted by CloudPilot)",
                    queue,
                )
            )
        self._note_usage(pool_uid, queues, observed, memory, accounts)
        return notices

    def _note_usage(
        self,
        pool_uid: str,
        queues: Sequence[QueueConfig],
        observed: Sequence[ObservedVM],
        memory: PoolMemory,
        accounts: Mapping[str, str],
    ) -> None:
        live: Counter[str] = Counter()
        desired: Counter[str] = Counter()
        for q in queues:
            if q.name in accounts:
                desired[accounts[q.name]] += q.replicas
        for vm in observed:
            if vm.phase in _LIVE and vm.queue in accounts and vm.id not in memory.deleting:
                live[accounts[vm.queue]] += 1
        for pending in memory.pending.values():
            if pending.queue in accounts:
                live[accounts[pending.queue]] += 1
        for account in set(accounts.values()):
            self._usage.setdefault(account, {})[pool_uid] = capacity.Usage(
                live[account], desired[account]
            )

    def classify_deletions(
        self,
        pool_key: str,
        pool_uid: str,
        deletions: Sequence[planner.Deletion],
        queues: Sequence[QueueConfig],
        now: datetime,
    ) -> list[Event]:
        """Count how the VMs the plan deletes ended, once each, before the plan is made
        again with the gates: a fizzle seen now holds the replacement it would have had."""
        state = self._pools[pool_uid]
        by_name = {q.name: q for q in queues}
        endings: list[outcomes.EndedVM] = []
        for deletion in deletions:
            vm = deletion.vm
            state.known.pop(vm.id, None)
            if vm.id in state.classified:
                continue
            config = by_name.get(vm.queue)
            fizzle = config.closed_loop.fizzle_seconds if config else 0
            outcome = outcomes.classify_deletion(vm, deletion.reason, now, fizzle)
            if outcome is not None:
                state.classified.add(vm.id)
                endings.append(outcomes.ended(vm, outcome, now))
        return self._record(pool_key, state, endings, by_name, now)

    def _record(
        self,
        pool_key: str,
        state: _PoolLoop,
        endings: Sequence[outcomes.EndedVM],
        queues: Mapping[str, QueueConfig],
        now: datetime,
    ) -> list[Event]:
        for end in endings:
            metrics.count_vm_seconds(pool_key, end.queue, end.outcome.value, end.seconds)
        for name, config in queues.items():
            mine = [e for e in endings if e.queue == name]
            loop = state.queues.get(name, outcomes.QueueLoop())
            state.queues[name] = outcomes.record(
                loop, mine, now, config.closed_loop, ceiling=max(config.replicas, 1)
            )
        return []

    def gates(
        self,
        pool_uid: str,
        queues: Sequence[QueueConfig],
        observed: Sequence[ObservedVM],
        memory: PoolMemory,
        now: datetime,
    ) -> dict[str, planner.QueueGate]:
        state = self._pools[pool_uid]
        pending: Counter[str] = Counter(p.queue for p in memory.pending.values())
        rooms = self._rooms(pool_uid, queues, observed, memory, now)
        result: dict[str, planner.QueueGate] = {}
        for q in queues:
            settings = q.closed_loop
            mine = [vm for vm in observed if vm.queue == q.name and vm.id not in memory.deleting]
            unproven = outcomes.unproven(mine, pending[q.name], now, settings.fizzle_seconds)
            loop = state.queues.get(q.name, outcomes.QueueLoop())
            result[q.name] = outcomes.gate(loop, unproven, now, settings, rooms.get(q.name))
        return result

    def _rooms(
        self,
        pool_uid: str,
        queues: Sequence[QueueConfig],
        observed: Sequence[ObservedVM],
        memory: PoolMemory,
        now: datetime,
    ) -> dict[str, int]:
        """Each queue's room under its account's learned quota (split between the pool's
        queues on one account as the pool's share is between pools)."""
        state = self._pools[pool_uid]
        rooms: dict[str, int] = {}
        for account in set(state.accounts.values()):
            limit = capacity.effective_limit(self._headroom.get(account), now)
            room = capacity.room_for(pool_uid, limit, self._usage.get(account, {}))
            if room is None:
                continue
            names = [q for q in queues if state.accounts.get(q.name) == account]
            wants = [max(q.replicas - _occupying(q.name, observed, memory), 0) for q in names]
            for q, share in zip(names, capacity.water_fill(room, wants), strict=True):
                rooms[q.name] = share
        return rooms

    # -- after creating ----------------------------------------------------------------

    def learn(
        self,
        pool_uid: str,
        queue: str,
        *,
        requested: int,
        created: int,
        refused: bool,
        now: datetime,
    ) -> None:
        """What one create told about its account's headroom."""
        state = self._pools.get(pool_uid)
        account = state.accounts.get(queue) if state else None
        if account is None:
            return
        usage = self._usage.setdefault(account, {})
        live_before = sum(u.live for u in usage.values())
        learned = capacity.learn(
            self._headroom.get(account),
            live_before=live_before,
            requested=requested,
            created=created,
            refused=refused,
            now=now,
        )
        if learned is None:
            self._headroom.pop(account, None)
        else:
            self._headroom[account] = learned
        mine = usage.get(pool_uid, capacity.Usage(0, 0))
        usage[pool_uid] = capacity.Usage(mine.live + created, mine.desired)

    # -- status ------------------------------------------------------------------------

    def report(
        self,
        pool_uid: str,
        pool_key: str,
        queues: Sequence[QueueConfig],
        plan: planner.Plan,
        previous_status: Mapping[str, Any],
        now: datetime,
    ) -> tuple[dict[str, dict[str, Any]], list[Condition], list[Event]]:
        """Per queue ``closedLoop`` blocks, the conditions, and one Event per queue whose
        loop changed state since the status last written."""
        state = self._pools[pool_uid]
        before = {
            q.get("name"): (q.get("closedLoop") or {})
            for q in previous_status.get("queues") or []
            if isinstance(q, Mapping)
        }
        summaries = {s.name: s for s in plan.queues}
        blocks: dict[str, dict[str, Any]] = {}
        notices: list[Event] = []
        quota_messages: list[str] = []
        held_messages: list[str] = []
        for q in queues:
            summary = summaries.get(q.name)
            live = summary.live if summary else 0
            loop = state.queues.get(q.name, outcomes.QueueLoop())
            quota = live if summary is not None and summary.held is planner.Hold.QUOTA else None
            v = outcomes.verdict(
                loop, now, q.closed_loop, desired=q.replicas, live=live, quota_allows=quota
            )
            blocks[q.name] = outcomes.to_status(loop, v, q.closed_loop)
            metrics.set_queue_efficiency(pool_key, q.name, v.efficiency)
            if v.state is outcomes.LoopState.QUOTA_LIMITED:
                quota_messages.append(f"queue {q.name}: {v.message}")
            elif v.state in (
                outcomes.LoopState.HELD_AFTER_FIZZLES,
                outcomes.LoopState.HELD_AFTER_FAILURES,
            ):
                held_messages.append(f"queue {q.name}: {v.message}")
            old = before.get(q.name, {})
            if old.get("state", outcomes.LoopState.OPEN.value) != v.state.value:
                kind = "Warning" if v.state in _WARNING_STATES else "Normal"
                reason = Reason(f"ClosedLoop{v.state.value}")
                notices.append(Event(kind, reason, v.message, queue=q.name))
        conditions: list[Condition] = []
        if quota_messages:
            conditions.append(
                Condition("QuotaLimited", "True", Reason.CLOUD_QUOTA, "; ".join(quota_messages))
            )
        if held_messages:
            conditions.append(
                Condition("PilotsHeld", "True", Reason.CLOSED_LOOP_HOLD, "; ".join(held_messages))
            )
        return blocks, conditions, notices

    def next_wake(self, pool_uid: str, now: datetime) -> float | None:
        """Seconds until the first hold of the pool ends (the cycle that lifts it)."""
        state = self._pools.get(pool_uid)
        if state is None:
            return None
        ends = [
            (loop.held_until - now).total_seconds()
            for loop in state.queues.values()
            if loop.held_until is not None and loop.held_until > now
        ]
        return max(min(ends), 1.0) if ends else None

    def remember_listed(
        self, pool_uid: str, observed: Sequence[ObservedVM], deleting: Collection[str]
    ) -> None:
        """After acting: the live VMs we did not delete, to tell next cycle which vanished."""
        state = self._pools[pool_uid]
        state.known = {
            vm.id: vm
            for vm in observed
            if vm.phase in _LIVE and vm.id not in deleting and vm.id not in state.classified
        }


def attach(status: dict[str, Any], blocks: Mapping[str, Mapping[str, Any]]) -> None:
    """Put each queue's ``closedLoop`` block into ``status.queues``."""
    for entry in status.get("queues") or []:
        block = blocks.get(entry.get("name"))
        if block is not None:
            entry["closedLoop"] = dict(block)


def _occupying(queue: str, observed: Sequence[ObservedVM], memory: PoolMemory) -> int:
    listed = sum(
        1
        for vm in observed
        if vm.queue == queue and vm.phase in _LIVE and vm.id not in memory.deleting
    )
    return listed + sum(1 for p in memory.pending.values() if p.queue == queue)


def _from_status(status: Mapping[str, Any]) -> dict[str, outcomes.QueueLoop]:
    loops: dict[str, outcomes.QueueLoop] = {}
    for entry in status.get("queues") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            loops[entry["name"]] = outcomes.from_status(entry.get("closedLoop"))
    return loops
