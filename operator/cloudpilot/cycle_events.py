"""The Events one cycle posts about a pool, built as plain data from what happened.

Pure functions: the reconciler hands in the outcome of its cloud calls and posts what comes
back. Every reason is a :class:`~cloudpilot.reasons.Reason`; a failure's Event carries its
error class (``QuotaExceeded``, ``InvalidConfig`` ...), the reason its condition and
``lastError`` show too, and says in its message which action failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cloudpilot import constants, planner
from cloudpilot import memory as mem
from cloudpilot.cloud.results import CreateResult
from cloudpilot.reasons import Reason


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the pool; ``queue`` and ``vm_ids`` are for the audit log
    only (not compared: they do not change what ``kubectl describe`` shows)."""

    type: str
    reason: Reason
    message: str
    queue: str = field(default="", compare=False)
    vm_ids: tuple[str, ...] = field(default=(), compare=False)
    audited: bool = field(default=False, compare=False)


def failure(error: mem.CloudError, message: str, queue: str = "", vm_id: str = "") -> Event:
    """A Warning about a failed action, with the error class's reason."""
    return Event(
        "Warning",
        mem.reason_of(error.kind),
        message,
        queue=queue,
        vm_ids=(vm_id,) if vm_id else (),
    )


def capped(events: list[Event], summary: str) -> list[Event]:
    """At most MAX_VM_EVENTS_PER_CYCLE per-VM Events; one more sums up the rest. Each VM
    still has its own audit line (the summary is marked audited: it is for Events only)."""
    limit = constants.MAX_VM_EVENTS_PER_CYCLE
    if len(events) <= limit:
        return events
    first = events[0]
    rest = Event(first.type, first.reason, summary.format(n=len(events) - limit), audited=True)
    return [*events[:limit], rest]


def deletion_events(
    deletions: Sequence[planner.Deletion], results: Mapping[str, mem.CloudError | None]
) -> list[Event]:
    """``Deleted`` per destroyed VM (with why), a failure Event per VM that was not."""
    by_id = {d.vm.id: d for d in deletions}
    done = [by_id[i] for i, error in results.items() if error is None and i in by_id]
    failed = [(by_id[i], e) for i, e in results.items() if e is not None and i in by_id]
    events = capped(
        [
            Event(
                "Normal",
                Reason.DELETED,
                f"Deleted VM {d.vm.name} ({d.vm.id}) of queue {d.vm.queue}: {d.reason.value}",
                queue=d.vm.queue,
                vm_ids=(d.vm.id,),
            )
            for d in done
        ],
        "Deleted {n} more VM(s)",
    )
    return events + capped(
        [
            failure(
                e, f"Could not delete VM {d.vm.name} ({d.vm.id}): {e.message}", d.vm.queue, d.vm.id
            )
            for d, e in failed
        ],
        "{n} more deletions failed",
    )


def creation_events(result: CreateResult) -> list[Event]:
    """``Created`` per new VM, then the failure (if any) of the rest of the request."""
    queue = result.queue
    events = capped(
        [
            Event(
                "Normal",
                Reason.CREATED,
                f"Created VM {n.name} ({n.id}) in queue {queue}",
                queue=queue,
                vm_ids=(n.id,),
            )
            for n in result.created
        ],
        "Created {n} more VM(s)",
    )
    error = result.error
    if error is None:
        return events
    if result.created:
        said = (
            f"create in queue {queue} failed: created {len(result.created)} of {result.requested}"
        )
    else:
        said = f"create in queue {queue} failed"
    return [*events, failure(error, f"{said}: {error.message}", queue)]


def blocking_event(
    previous_error: Mapping[str, object] | None, blocking: mem.CloudError
) -> list[Event]:
    """One Warning per distinct problem that blocks the pool, not one every cycle: none when
    ``status.lastError`` already says the same."""
    if (previous_error or {}).get("message") == blocking.message[: constants.MAX_MESSAGE_LENGTH]:
        return []
    return [failure(blocking, blocking.message)]


def stall_events(
    previous: Mapping[str, object], status: Mapping[str, object], blocking: mem.CloudError | None
) -> list[Event]:
    """A Warning when an unreachable endpoint turns from retried to Stalled: the error's
    own event came at its first failure, and this is the moment a human is needed."""
    if blocking is None or blocking.kind is not mem.ErrorKind.UNREACHABLE:
        return []
    now, before = _stalled(status.get("conditions")), _stalled(previous.get("conditions"))
    if now is None or (before is not None and before.get("reason") == now.get("reason")):
        return []
    return [Event("Warning", Reason(str(now["reason"])), str(now["message"]))]


def _stalled(conditions: object) -> Mapping[str, object] | None:
    if not isinstance(conditions, list):
        return None
    return next(
        (
            c
            for c in conditions
            if isinstance(c, Mapping) and c.get("type") == "Stalled" and c.get("status") == "True"
        ),
        None,
    )


def planned(
    creations: Sequence[planner.Creation], deletions: Sequence[planner.Deletion]
) -> list[Event]:
    """The decision before the action, for the audit log only (already ``audited`` is
    False; these are never posted): one line per creation, one per queue and reason of
    deletion."""
    lines = [
        Event(
            "Normal",
            Reason.SCALE_UP_PLANNED,
            f"queue {c.queue}: creating {c.count} VM(s)",
            queue=c.queue,
        )
        for c in creations
    ]
    grouped: dict[tuple[str, str], list[str]] = {}
    for deletion in deletions:
        grouped.setdefault((deletion.vm.queue, deletion.reason.value), []).append(deletion.vm.id)
    lines += [
        Event(
            "Normal",
            Reason.SCALE_DOWN_PLANNED,
            f"queue {queue}: deleting {len(ids)} VM(s): {why}",
            queue=queue,
            vm_ids=tuple(ids),
        )
        for (queue, why), ids in grouped.items()
    ]
    return lines


def as_sent(audit: Sequence[Event], record_error: str | None) -> list[Event]:
    """The planned lines as they went out: when ``status.teardownSpec`` could not be
    recorded, no VM was created, and a plain "creating" line would tell the audit trail a
    scale-up happened that never reached the cloud. Those lines say so instead (a Warning:
    planned work was dropped); deletions go on either way and keep their lines."""
    if record_error is None:
        return list(audit)
    return [
        Event(
            "Warning",
            e.reason,
            f"{e.message}: planned, not sent: status.teardownSpec not recorded: {record_error}",
            queue=e.queue,
            vm_ids=e.vm_ids,
        )
        if e.reason is Reason.SCALE_UP_PLANNED
        else e
        for e in audit
    ]
