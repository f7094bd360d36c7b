"""Deleting a pool: which spec to tear down with, what to say, when to look again (pure).

**The safe rule.** The operator creates VMs only from a *usable* spec: one that parsed and
whose every cloud account it has just listed. Before it acts with such a spec for the first
time it records it in ``status.teardownSpec`` (a status write that must succeed before any
create; see ``Reconciler._record_spec``) and keeps it in process. So, when a pool is deleted:

* a recorded spec exists (in this process, or in status after a restart): VMs may exist,
  and were made with it. Teardown lists and destroys with the recorded spec, whatever the
  current spec says (an edit may have broken it since); the pool is released only once a
  listing of every account shows none of its VMs.
* nothing is recorded and the status shows no VM: this operator never created a VM for the
  pool (its spec was never usable, or it was deleted before its first cycle). Teardown
  still tries the current spec once if it parses (harmless, and it covers pools made by an
  operator older than the record); if that fails, the pool is released at once, with a
  Normal event saying why nothing was destroyed.
* nothing is recorded but the status shows VMs (a pool from an operator version before the
  record existed): never released blindly. The current spec is tried; while it cannot list
  the VMs, teardown waits and says so.

The in-process record matters when a deletion arrives while the pool's first cycle is
creating: the kopf body the delete handler sees may predate the status write.

**Every wait explains itself.** A teardown that cannot go on sets ``Ready=False`` with reason
``TeardownBlocked`` (and ``Stalled`` for errors that need a human, ``Reconciling`` for those
that pass), posts one Warning event per distinct cause (not one per retry), and retries on
the project's capped exponential back-off, capped low (:data:`TEARDOWN_BACKOFF_MAX`) so that
teardown ends within seconds of the cloud coming back. A teardown still destroying VMs says
``Ready=False`` reason ``Deleting``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudpilot import constants
from cloudpilot.memory import PERSISTENT_KINDS, CloudError, ErrorKind, backoff_delay
from cloudpilot.reasons import Reason
from cloudpilot.status import Condition, merge_conditions

TEARDOWN_BACKOFF_MAX = 20.0
"""Longest wait between two teardown attempts of a blocked deletion. A blocked teardown
costs one listing per account per attempt, so waiting long saves little, while the user
waits for the pool to go; 20 s bounds how long after the cloud comes back teardown ends."""


class Source(enum.Enum):
    """The spec a teardown attempt lists the pool's VMs with."""

    RECORDED = "recorded"
    CURRENT = "current"
    NONE = "none"


@dataclass(frozen=True)
class Facts:
    """What is known about a deleted pool before touching the cloud."""

    current_error: str | None
    """Why the current spec cannot be parsed (None: it parses)."""
    recorded: bool
    """A usable spec is recorded (``status.teardownSpec`` or this process)."""
    recorded_error: str | None = None
    """Why the recorded spec no longer parses (an operator upgrade changed the model)."""
    orphan: bool = False
    """``deletionPolicy: Orphan`` (from the current spec if it parses, else the record)."""
    status_shows_vms: bool = False
    """The pool's status lists VMs or counts some."""
    recorded_differs: bool = False
    """The recorded spec is not the current one (an edit since the last usable cycle)."""


@dataclass(frozen=True)
class Attempt:
    """What one teardown attempt saw (None for ``Source.NONE``: nothing was tried)."""

    error: CloudError | None = None
    """The listing (or spec, secret, driver) failure that stopped the attempt."""
    remaining: int = 0
    """The pool's VMs still listed after this attempt's destroys."""


@dataclass(frozen=True)
class TeardownState:
    """What one teardown remembers between attempts (in process)."""

    failures: int = 0
    warned: frozenset[str] = field(default_factory=frozenset)
    """Causes a Warning event was posted for already."""


@dataclass(frozen=True)
class Notice:
    type: str
    reason: Reason
    message: str


@dataclass(frozen=True)
class Verdict:
    release: bool
    """Remove the finalizer now."""
    conditions: tuple[Condition, ...] = ()
    events: tuple[Notice, ...] = ()
    retry_in: float | None = None
    error: CloudError | None = None
    """The cause of the wait, for ``status.lastError``."""
    state: TeardownState = field(default_factory=TeardownState)


def choose_source(facts: Facts) -> Source:
    """The recorded spec if there is one that parses; else the current spec if it parses."""
    if facts.orphan:
        return Source.NONE
    if facts.recorded:
        return Source.RECORDED if facts.recorded_error is None else Source.NONE
    return Source.CURRENT if facts.current_error is None else Source.NONE


def decide(
    facts: Facts,
    source: Source,
    attempt: Attempt | None,
    state: TeardownState,
    *,
    previous_conditions: Sequence[Mapping[str, Any]] = (),
    initial_delay: float,
    progress_delay: float,
    jitter: float,
) -> Verdict:
    """Release, or wait: with which conditions, which new events, and for how long."""
    if facts.orphan:
        return Verdict(
            release=True,
            events=(
                Notice("Normal", Reason.ORPHANED, "VMs left running (deletionPolicy: Orphan)"),
            ),
        )
    error = attempt.error if attempt is not None else None
    if attempt is not None and error is None:
        if attempt.remaining == 0:
            return Verdict(release=True)
        message = f"waiting for {attempt.remaining} VM(s) of the pool to be destroyed"
        if source is Source.RECORDED and facts.recorded_differs:
            message += " (with the last usable spec: the current one was never acted on)"
        return Verdict(
            release=False,
            conditions=(
                Condition("Ready", "False", Reason.DELETING, message),
                Condition("Reconciling", "True", Reason.DELETING, message),
            ),
            retry_in=progress_delay,
            state=TeardownState(warned=state.warned),
        )
    if not facts.recorded and not facts.status_shows_vms:
        why = facts.current_error or (error.message if error else "") or "no usable spec"
        return Verdict(
            release=True,
            events=(
                Notice(
                    "Normal",
                    Reason.RELEASED,
                    "released without destroying anything: the operator never created a VM "
                    f"for this pool (no spec of it was ever usable: {why})",
                ),
            ),
        )
    cause, blocking = _blocking(facts, source, error)
    failures = state.failures + 1
    # The project's back-off, as for creations, but capped low and never the longer one
    # of rejected credentials: a fixed Secret should end the teardown at once.
    delay = backoff_delay(
        failures,
        ErrorKind.TRANSIENT,
        initial=initial_delay,
        maximum=TEARDOWN_BACKOFF_MAX,
        jitter=jitter,
    )
    conditions = [Condition("Ready", "False", Reason.TEARDOWN_BLOCKED, blocking.message)]
    if blocking.kind in PERSISTENT_KINDS:
        conditions.append(Condition("Stalled", "True", Reason.TEARDOWN_BLOCKED, blocking.message))
    else:
        conditions.append(
            Condition("Reconciling", "True", Reason.TEARDOWN_BLOCKED, blocking.message)
        )
    already = cause in state.warned or any(
        c.get("type") == "Ready"
        and c.get("reason") == Reason.TEARDOWN_BLOCKED
        and c.get("message") == blocking.message[: constants.MAX_MESSAGE_LENGTH]
        for c in previous_conditions
    )
    events = () if already else (Notice("Warning", Reason.TEARDOWN_BLOCKED, blocking.message),)
    return Verdict(
        release=False,
        conditions=tuple(conditions),
        events=events,
        retry_in=delay,
        error=blocking,
        state=TeardownState(failures=failures, warned=state.warned | {cause}),
    )


def _blocking(facts: Facts, source: Source, error: CloudError | None) -> tuple[str, CloudError]:
    """The cause of a wait (a key for de-duplicating its event) and what status says."""
    hint = (
        f"; fix it, or remove the finalizer {constants.FINALIZER} to leave the pool's VMs running"
    )
    if source is Source.NONE and facts.recorded:
        return "recorded-spec", CloudError(
            ErrorKind.CONFIG,
            f"cannot delete the pool's VMs: its recorded spec no longer parses "
            f"({facts.recorded_error}) and the current one is not the one they were made "
            f"with{hint}",
        )
    if source is Source.NONE:
        return "no-spec", CloudError(
            ErrorKind.CONFIG,
            f"cannot delete the pool's VMs: its status shows VMs but its spec is invalid "
            f"({facts.current_error}) and no valid spec of it is recorded{hint}",
        )
    assert error is not None
    message = f"cannot list the pool's VMs: {error.kind.value}: {error.message}"
    if error.kind in PERSISTENT_KINDS:
        message += hint
    return f"list:{error.kind.value}", CloudError(error.kind, message, error.operation)


def status_patch(
    verdict: Verdict,
    previous: Mapping[str, Any],
    *,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """The status merge patch while a deletion waits (empty when nothing changed)."""
    if verdict.release:
        return {}
    conditions = merge_conditions(
        previous.get("conditions"), verdict.conditions, generation=generation, now=now
    )
    new: dict[str, Any] = {"conditions": conditions}
    if verdict.error is not None:
        new["lastError"] = {
            "reason": verdict.error.kind.value,
            "message": verdict.error.message[: constants.MAX_MESSAGE_LENGTH],
            **({"operation": verdict.error.operation} if verdict.error.operation else {}),
        }
    patch = {k: v for k, v in new.items() if previous.get(k) != v}
    for key in ("lastError", "nextRetryAt"):
        if key in previous and key not in new:
            patch[key] = None
    return patch


def status_shows_vms(status: Mapping[str, Any]) -> bool:
    """Whether an operator ever reported VMs for the pool in its status."""
    counts = ("replicas", "instanceCount", "starting", "running", "unknown")
    return bool(status.get("instances")) or any(
        isinstance(status.get(k), int) and status[k] > 0 for k in counts
    )
