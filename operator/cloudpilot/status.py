"""What ``status`` says, built from plain data by pure functions.

Status follows kstatus, so Flux and Argo CD read it without custom code:
``observedGeneration`` at the top; ``Ready`` always present; ``Reconciling`` and
``Stalled`` present only while true. A condition keeps its ``lastTransitionTime`` while its
status does not change, so a quiet cycle produces exactly the status already stored and the
reconciler writes nothing.

``Ready`` means every desired VM exists in the cloud (starting or running): a pool of
pilots always has some VMs booting, since each finished pilot is replaced, and a health
that flapped with every replacement would be useless to GitOps tools. ``status.running``
says how many pilots have booted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudpilot import constants
from cloudpilot.memory import (
    PERSISTENT_KINDS,
    CloudError,
    ErrorKind,
    Outage,
    PoolMemory,
    outage_lasted,
    pending_as_observed,
    reason_of,
)
from cloudpilot.models.vms import ObservedVM
from cloudpilot.naming import pilot_reference, pilot_stamp
from cloudpilot.planner import Hold, Plan, QueueSummary
from cloudpilot.reasons import Reason

_SETTLED_HOLDS = frozenset({Hold.MAX_INSTANCES, Hold.QUOTA, Hold.CLOSED_LOOP})
"""Holds that leave a queue short on purpose: a limit, the cloud's quota, the closed loop
after fizzles. The pool is not converging towards more VMs, so it is not Reconciling."""


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class StatusInputs:
    generation: int
    plan: Plan
    """A plan made *after* this cycle's actions, on the updated memory: its summaries are
    the pool as it now stands, and its creations are what is still missing."""
    observed: Sequence[ObservedVM]
    memory: PoolMemory
    now: datetime
    error: CloudError | None = None
    """The error that blocks the whole pool this cycle (invalid spec, credentials ...)."""
    prefixes: Mapping[str, str] | None = None
    extra: Mapping[str, Any] | None = None
    extra_conditions: Sequence[Condition] = ()
    """Conditions other parts decide (``ProxyExpiring``), shown after the kstatus ones."""
    outage: Outage | None = None
    """Since when the pool's accounts cannot be listed (``memory.outage`` of this cycle)."""
    unreachable_stall_after: float = constants.DEFAULT_UNREACHABLE_STALL_AFTER
    """Seconds an unreachable endpoint is retried as Reconciling before it is Stalled."""


def _queue_status(summary: QueueSummary, prefix: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": summary.name,
        "desired": summary.desired,
        "replicas": summary.live,
        "starting": summary.starting,
        "running": summary.running,
        "done": summary.done,
        "failed": summary.failed,
        "unknown": summary.unknown,
        "deleting": summary.deleting,
        "draining": summary.draining,
    }
    if prefix:
        entry["namePrefix"] = prefix
    if summary.held is not None:
        entry["held"] = summary.held.value
    if not summary.in_spec:
        entry["removedFromSpec"] = True
    return entry


def _instances(observed: Sequence[ObservedVM], memory: PoolMemory) -> list[dict[str, Any]]:
    """Newest first, bounded; VMs being destroyed are left out, pending ones shown."""
    listed = {vm.id: vm for vm in observed if vm.id not in memory.deleting}
    for vm in pending_as_observed(memory):
        listed.setdefault(vm.id, vm)
    ordered = sorted(
        listed.values(),
        key=lambda vm: vm.created_at or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )
    return [
        {
            "id": vm.id,
            "name": vm.name,
            "queue": vm.queue,
            "phase": vm.phase.value,
            "createdAt": timestamp(vm.created_at) if vm.created_at else None,
            "pilotReference": pilot_reference(vm.id),
            "pilotStamp": pilot_stamp(vm.id),
        }
        for vm in ordered[: constants.MAX_STATUS_INSTANCES]
    ]


def conditions_for(inputs: StatusInputs) -> list[Condition]:
    """The kstatus conditions: Stalled, Reconciling, then Ready summarising both."""
    plan = inputs.plan
    stalled: Condition | None = None
    reconciling: Condition | None = None
    blocking = inputs.error
    if blocking is None:
        for summary in plan.queues:
            backoff = inputs.memory.backoff.get(summary.name)
            if summary.held is Hold.BACKOFF and backoff is not None:
                blocking = backoff.error
                break
    if blocking is not None and blocking.kind is ErrorKind.UNREACHABLE:
        stalled, reconciling = _unreachable(blocking, inputs)
    elif blocking is not None and (
        blocking.kind in PERSISTENT_KINDS or blocking.kind is ErrorKind.QUOTA
    ):
        stalled = Condition("Stalled", "True", reason_of(blocking.kind), blocking.message)
    elif blocking is not None:
        # The error's own class, as in its Event and lastError (one vocabulary of reasons).
        reconciling = Condition(
            "Reconciling",
            "True",
            reason_of(blocking.kind),
            f"retrying after a transient error: {blocking.message}",
        )
    else:
        missing = sum(c.count for c in plan.creations)
        held_starting = [q.name for q in plan.queues if q.held is Hold.MAX_STARTING]
        scaling_down = sum(q.deleting for q in plan.queues)
        short = sum(
            max(q.desired - q.live - q.unknown, 0)
            for q in plan.queues
            if q.in_spec and q.held not in _SETTLED_HOLDS
        )
        if missing or short:
            reconciling = Condition(
                "Reconciling",
                "True",
                Reason.SCALING_UP,
                f"{max(missing, short)} VM(s) still to create"
                + (
                    f" (maxStarting reached in {', '.join(held_starting)})" if held_starting else ""
                ),
            )
        elif scaling_down:
            reconciling = Condition(
                "Reconciling", "True", Reason.DELETING_VMS, f"{scaling_down} VM(s) being deleted"
            )
    if stalled is not None:
        ready = Condition("Ready", "False", stalled.reason, stalled.message)
    elif reconciling is not None:
        ready = Condition("Ready", "False", reconciling.reason, reconciling.message)
    else:
        ready = _ready(plan)
    return [c for c in (ready, reconciling, stalled) if c is not None] + list(
        inputs.extra_conditions
    )


def _unreachable(
    error: CloudError, inputs: StatusInputs
) -> tuple[Condition | None, Condition | None]:
    """(Stalled, Reconciling) for an endpoint that takes no connection: retried while it
    may be a restart or a blip, Stalled once it has lasted ``unreachable_stall_after``
    (a wrong host or port, a decommissioned cloud). Messages hold the start instant, not
    the time elapsed, so the status does not change on every retry."""
    bound = inputs.unreachable_stall_after
    outage = inputs.outage if inputs.outage and inputs.outage.error.kind is error.kind else None
    reason = Reason.ENDPOINT_UNREACHABLE
    if outage is None:
        # Met by a create while the listing worked: the create's own back-off handles it.
        message = f"cloud endpoint unreachable: retrying with back-off: {error.message}"
        return None, Condition("Reconciling", "True", reason, message)
    since = timestamp(outage.since)
    if outage_lasted(outage, inputs.now, bound):
        message = (
            f"cloud endpoint unreachable since {since} (longer than {bound:g}s): check the "
            f"driver host, port and network; still retrying with back-off: {error.message}"
        )
        return Condition("Stalled", "True", reason, message), None
    message = (
        f"cloud endpoint unreachable since {since}: retrying with back-off, Stalled if it "
        f"lasts {bound:g}s: {error.message}"
    )
    return None, Condition("Reconciling", "True", reason, message)


def _ready(plan: Plan) -> Condition:
    live = sum(q.live for q in plan.queues)
    desired = sum(q.desired for q in plan.queues)
    draining = sum(q.draining for q in plan.queues)
    capped = [q.name for q in plan.queues if q.held is Hold.MAX_INSTANCES]
    quota = [q.name for q in plan.queues if q.held is Hold.QUOTA]
    held = [q.name for q in plan.queues if q.held is Hold.CLOSED_LOOP]
    if quota:
        return Condition(
            "Ready",
            "True",
            Reason.QUOTA_LIMITED,
            f"{live} of {desired} desired VMs: the cloud's quota allows {live} "
            f"(in {', '.join(quota)})",
        )
    if held:
        return Condition(
            "Ready",
            "True",
            Reason.PILOTS_HELD,
            f"{live} of {desired} desired VMs: new pilots held by the closed loop in "
            f"{', '.join(held)} (pilots found no work or failed)",
        )
    if capped:
        return Condition(
            "Ready",
            "True",
            Reason.LIMIT_REACHED,
            f"{live} of {desired} desired VMs: maxInstances reached in {', '.join(capped)}",
        )
    if draining:
        return Condition(
            "Ready",
            "True",
            Reason.DRAINING,
            f"{desired} desired; {draining} running pilot(s) above it left to finish their job",
        )
    return Condition(
        "Ready", "True", Reason.PILOTS_PROVISIONED, f"{live} of {desired} desired VMs exist"
    )


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    current: Sequence[Condition],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Kubernetes Condition dicts, keeping ``lastTransitionTime`` where status is unchanged."""
    before = {c.get("type"): c for c in previous or []}
    merged = []
    for condition in current:
        old = before.get(condition.type)
        changed = old is None or old.get("status") != condition.status
        merged.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message[: constants.MAX_MESSAGE_LENGTH],
                "observedGeneration": generation,
                "lastTransitionTime": (
                    timestamp(now) if old is None or changed else old["lastTransitionTime"]
                ),
            }
        )
    return merged


def build_status(inputs: StatusInputs, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The whole ``status`` for this cycle (pure: same inputs, same dict)."""
    previous = previous or {}
    plan = inputs.plan
    prefixes = inputs.prefixes or {}
    queues = [_queue_status(q, prefixes.get(q.name)) for q in plan.queues]
    status: dict[str, Any] = {
        "observedGeneration": inputs.generation,
        "replicas": sum(q.live for q in plan.queues),
        "desiredReplicas": sum(q.desired for q in plan.queues),
        "starting": sum(q.starting for q in plan.queues),
        "running": sum(q.running for q in plan.queues),
        "done": sum(q.done for q in plan.queues),
        "failed": sum(q.failed for q in plan.queues),
        "unknown": sum(q.unknown for q in plan.queues),
        "queues": queues,
        "instances": _instances(inputs.observed, inputs.memory),
        "conditions": merge_conditions(
            previous.get("conditions"),
            conditions_for(inputs),
            generation=inputs.generation,
            now=inputs.now,
        ),
    }
    listed = {vm.id for vm in inputs.observed if vm.id not in inputs.memory.deleting}
    status["instanceCount"] = len(listed | set(inputs.memory.pending))
    error = inputs.error or _latest_backoff_error(inputs.memory)
    if error is not None:
        status["lastError"] = {
            "reason": error.kind.value,
            "message": error.message[: constants.MAX_MESSAGE_LENGTH],
            **({"operation": error.operation} if error.operation else {}),
        }
    retry = _next_retry(inputs.memory, inputs.now)
    if retry is not None:
        status["nextRetryAt"] = timestamp(retry)
    if inputs.extra:
        status.update(inputs.extra)
    return status


def _latest_backoff_error(memory: PoolMemory) -> CloudError | None:
    entries = sorted(memory.backoff.values(), key=lambda b: b.retry_at)
    return entries[-1].error if entries else None


def _next_retry(memory: PoolMemory, now: datetime) -> datetime | None:
    upcoming = [b.retry_at for b in memory.backoff.values() if b.retry_at > now]
    return min(upcoming) if upcoming else None


OBSERVATION_KEYS = (
    "replicas",
    "desiredReplicas",
    "starting",
    "running",
    "done",
    "failed",
    "unknown",
    "queues",
    "instances",
    "instanceCount",
    "dirac",
    "selector",
)
"""What the operator last saw of the VMs: kept as is while the spec cannot be acted on."""

STATUS_KEYS = (
    "observedGeneration",
    "replicas",
    "desiredReplicas",
    "starting",
    "running",
    "done",
    "failed",
    "unknown",
    "queues",
    "instances",
    "instanceCount",
    "conditions",
    "lastError",
    "nextRetryAt",
    "proxy",
    "dirac",
    "selector",
)


RECORD_KEYS = ("teardownSpec",)
"""Status CloudPilot writes apart from a cycle's status (``Reconciler._record_spec``):
never in ``build_status``'s output, so never nulled by :func:`status_patch`."""


def status_patch(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``previous`` into ``new``; empty when nothing changed.

    Keys CloudPilot owns but no longer sets (``lastError`` after a recovery) are nulled,
    which is how a JSON merge patch removes them.
    """
    previous = previous or {}
    patch = {k: _merge_patch(previous.get(k), v) for k, v in new.items() if previous.get(k) != v}
    for key in STATUS_KEYS:
        if key in previous and key not in new:
            patch[key] = None
    return patch


def _merge_patch(old: Any, new: Any) -> Any:
    """``new`` as a merge patch over ``old``: an object's keys that ``new`` lacks are nulled
    (``status.dirac.lastError`` after a recovery, ``lastError.operation`` of an error
    without one); else a merge patch would keep them. Lists and scalars are replaced."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch = {k: _merge_patch(old.get(k), v) for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch
