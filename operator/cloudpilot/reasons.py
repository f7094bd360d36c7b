"""The one vocabulary of reasons: Events, condition reasons and audit lines all use these.

A site reads the same failure in three places (``kubectl describe``'s Events, the pool's
conditions, the audit log): it must have the same name in all three, or an alert on one
misses the others. Error classes (:class:`cloudpilot.memory.ErrorKind`) and proxy states
(:class:`cloudpilot.credentials.proxy.ProxyReason`) take their values from here; a unit
test keeps every emitted reason inside :class:`Reason`, and the table in
``docs/reasons.md`` is generated from :data:`EXPLAINED` (a golden-file test compares them).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Reason(StrEnum):
    # The pool as it stands (Ready / Reconciling).
    PILOTS_PROVISIONED = "PilotsProvisioned"
    LIMIT_REACHED = "LimitReached"
    DRAINING = "Draining"
    SCALING_UP = "ScalingUp"
    DELETING_VMS = "DeletingVMs"
    # Failures: the error classes of cloudpilot.memory.ErrorKind.
    TRANSIENT = "Transient"
    ENDPOINT_UNREACHABLE = "EndpointUnreachable"
    BAD_CREDENTIALS = "BadCredentials"
    NOT_FOUND = "NotFound"
    QUOTA_EXCEEDED = "QuotaExceeded"
    INVALID_REQUEST = "InvalidRequest"
    INVALID_CONFIG = "InvalidConfig"
    PROXY_EXPIRED = "ProxyExpired"
    INVALID_PROXY = "InvalidProxy"
    # The pilot proxy (the ProxyExpiring condition and its events).
    PROXY_VALID = "ProxyValid"
    PROXY_EXPIRING = "ProxyExpiring"
    PROXY_NOT_YET_VALID = "ProxyNotYetValid"
    PROXY_RENEWED = "ProxyRenewed"
    # Actions and the decisions before them.
    CREATED = "Created"
    DELETED = "Deleted"
    SCALE_UP_PLANNED = "ScaleUpPlanned"
    SCALE_DOWN_PLANNED = "ScaleDownPlanned"
    # The closed loop (cloudpilot.closedloop): Ready's and the conditions' reasons, Events.
    QUOTA_LIMITED = "QuotaLimited"
    PILOTS_HELD = "PilotsHeld"
    CLOUD_QUOTA = "CloudQuota"
    CLOSED_LOOP_HOLD = "ClosedLoopHold"
    RECLAIMED = "Reclaimed"
    CLOSED_LOOP_OPEN = "ClosedLoopOpen"
    CLOSED_LOOP_HELD_AFTER_FIZZLES = "ClosedLoopHeldAfterFizzles"
    CLOSED_LOOP_HELD_AFTER_FAILURES = "ClosedLoopHeldAfterFailures"
    CLOSED_LOOP_RAMPING_UP = "ClosedLoopRampingUp"
    CLOSED_LOOP_QUOTA_LIMITED = "ClosedLoopQuotaLimited"
    CLOSED_LOOP_DISABLED = "ClosedLoopDisabled"
    # Deleting the pool.
    DELETING = "Deleting"
    TEARDOWN_BLOCKED = "TeardownBlocked"
    ORPHANED = "Orphaned"
    RELEASED = "Released"


class Explained(NamedTuple):
    where: str
    """Where the reason shows: Event, condition, audit (decisions only)."""
    meaning: str
    action: str


_FAILURE = "Event (Warning), Ready/Stalled or Reconciling, `lastError`, audit"

EXPLAINED: dict[Reason, Explained] = {
    Reason.PILOTS_PROVISIONED: Explained(
        "Ready=True", "every desired VM exists (starting or running)", "nothing"
    ),
    Reason.LIMIT_REACHED: Explained(
        "Ready=True",
        "desired VMs are missing because of `maxInstances`",
        "raise `maxInstances` if the VMs are wanted",
    ),
    Reason.DRAINING: Explained(
        "Ready=True",
        "running pilots above the desired count are left to finish their job",
        "wait, or set `scaleDownPolicy: DeleteRunning`",
    ),
    Reason.SCALING_UP: Explained(
        "Reconciling", "VMs are still to be created", "wait; the message names held queues"
    ),
    Reason.DELETING_VMS: Explained("Reconciling", "surplus VMs are being destroyed", "wait"),
    Reason.TRANSIENT: Explained(
        _FAILURE,
        "a transient cloud error (throttling, a server error, a timeout); retried with back-off",
        "nothing unless it lasts; then look at the cloud's status",
    ),
    Reason.ENDPOINT_UNREACHABLE: Explained(
        _FAILURE,
        "the cloud endpoint refuses connections or has no address; Stalled once it lasts "
        "`CLOUDPILOT_UNREACHABLE_STALL_AFTER`",
        "check the driver host, port and the network",
    ),
    Reason.BAD_CREDENTIALS: Explained(
        _FAILURE,
        "the cloud refused the credentials (or they may not do this call)",
        "fix the credentials Secret; a changed Secret clears the back-off at once",
    ),
    Reason.NOT_FOUND: Explained(
        _FAILURE,
        "the cloud has no such image, flavor or network",
        "fix `spec.instance`",
    ),
    Reason.QUOTA_EXCEEDED: Explained(
        _FAILURE, "the cloud refused for quota", "raise the quota or lower the replicas"
    ),
    Reason.INVALID_REQUEST: Explained(
        _FAILURE, "the cloud refused the request as invalid", "read the message; fix the spec"
    ),
    Reason.INVALID_CONFIG: Explained(
        _FAILURE,
        "the spec cannot be used, or a Secret, ConfigMap or key it names is missing",
        "fix the spec or the object the message names",
    ),
    Reason.PROXY_EXPIRED: Explained(
        _FAILURE + ", ProxyExpiring",
        "the pilot proxy has expired: no VM is created, running pilots are left alone",
        "renew the proxy Secret",
    ),
    Reason.INVALID_PROXY: Explained(
        _FAILURE + ", ProxyExpiring",
        "the pilot proxy is not a PEM certificate chain with its key (or doubtful as a proxy)",
        "replace the proxy Secret",
    ),
    Reason.PROXY_VALID: Explained("ProxyExpiring=False", "the pilot proxy is in date", "nothing"),
    Reason.PROXY_EXPIRING: Explained(
        "ProxyExpiring=True, Event (Warning)",
        "the pilot proxy expires within the warning margin",
        "renew the proxy Secret before it expires",
    ),
    Reason.PROXY_NOT_YET_VALID: Explained(
        "ProxyExpiring=False, Event (Warning)",
        "the pilot proxy's validity starts in the future",
        "check the clocks",
    ),
    Reason.PROXY_RENEWED: Explained("Event (Normal)", "the pilot proxy is valid again", "nothing"),
    Reason.CREATED: Explained("Event (Normal), audit", "a VM was created", "nothing"),
    Reason.DELETED: Explained(
        "Event (Normal), audit",
        "a VM was destroyed; the message says why (`PilotDone`, `VMFailed`, ...)",
        "nothing",
    ),
    Reason.SCALE_UP_PLANNED: Explained(
        "audit",
        'a cycle decided to create VMs (a Warning "planned, not sent" when '
        "`status.teardownSpec` could not be recorded: nothing was created)",
        "nothing; if not sent, see the pool's `lastError`",
    ),
    Reason.SCALE_DOWN_PLANNED: Explained("audit", "a cycle decided to delete VMs", "nothing"),
    Reason.QUOTA_LIMITED: Explained(
        "Ready=True",
        "a queue runs fewer VMs than `replicas`: the cloud's quota, learned from a refusal or "
        "a partial create, allows no more (docs/closed-loop.md)",
        "raise the quota, or lower the replicas",
    ),
    Reason.PILOTS_HELD: Explained(
        "Ready=True",
        "the closed loop holds new pilots of a queue after fizzles or failed VMs",
        "nothing if the task queue is empty; else look at why the pilots end (image, work)",
    ),
    Reason.CLOUD_QUOTA: Explained(
        "QuotaLimited=True", "the message says how many VMs of how many the quota allows", "-"
    ),
    Reason.CLOSED_LOOP_HOLD: Explained(
        "PilotsHeld=True", "the message says until when new pilots are held, and why", "-"
    ),
    Reason.RECLAIMED: Explained(
        "Event (Warning)",
        "VMs vanished or were terminated by the cloud, not by CloudPilot (spot reclaims)",
        "nothing for spot; else ask the cloud's operators",
    ),
    Reason.CLOSED_LOOP_OPEN: Explained(
        "Event (Normal)", "a queue's closed loop is open again: replicas are served", "nothing"
    ),
    Reason.CLOSED_LOOP_HELD_AFTER_FIZZLES: Explained(
        "Event (Warning)",
        "pilots found no work (halted within `fizzleSeconds`): new ones are held",
        "nothing if the task queue is empty",
    ),
    Reason.CLOSED_LOOP_HELD_AFTER_FAILURES: Explained(
        "Event (Warning)",
        "VMs failed (ERROR, boot timeout, gone before starting): new ones are held",
        "look at the image and the cloud",
    ),
    Reason.CLOSED_LOOP_RAMPING_UP: Explained(
        "Event (Normal)",
        "after a hold, unproven VMs are started a few at a time, more as pilots work",
        "nothing",
    ),
    Reason.CLOSED_LOOP_QUOTA_LIMITED: Explained(
        "Event (Warning)", "a queue's target is now what the cloud's quota allows", "-"
    ),
    Reason.CLOSED_LOOP_DISABLED: Explained(
        "Event (Normal)", "`closedLoop.enabled: false`: replicas obeyed as set", "nothing"
    ),
    Reason.DELETING: Explained(
        "Ready=False, Reconciling", "the deleted pool's VMs are being destroyed", "wait"
    ),
    Reason.TEARDOWN_BLOCKED: Explained(
        "Event (Warning), Ready=False, Stalled or Reconciling",
        "the deleted pool's VMs cannot be listed or destroyed",
        "fix the Secret or spec the message names, or remove the finalizer by hand",
    ),
    Reason.ORPHANED: Explained(
        "Event (Normal), audit", "the pool went, its VMs were left (`deletionPolicy: Orphan`)", "-"
    ),
    Reason.RELEASED: Explained(
        "Event (Normal), audit", "the pool went; it never had a VM to destroy", "nothing"
    ),
}


def markdown_table() -> str:
    """The reference table of ``docs/reasons.md`` (kept identical by a unit test)."""
    rows = ["| reason | where | meaning | what to do |", "|---|---|---|---|"]
    rows += [
        f"| `{r.value}` | {e.where} | {e.meaning} | {e.action} |" for r, e in EXPLAINED.items()
    ]
    return "\n".join(rows) + "\n"
