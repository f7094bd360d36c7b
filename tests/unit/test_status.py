"""``status``: kstatus conditions, counts, instances, and the patch that writes them.

Flux, Argo CD and ``kubectl wait`` read these conditions without custom code, dashboards
read the counts, and DIRAC's side reads pilot references and stamps from ``instances``. A
quiet cycle must produce an empty patch, or every pool would write its status every minute
and wake every watcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cloudpilot import constants
from cloudpilot.memory import CloudError, ErrorKind, Outage, PoolMemory
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.naming import pilot_stamp, queue_prefix
from cloudpilot.planner import Hold, Plan, PoolLimits, QueueSummary, plan
from cloudpilot.status import (
    Condition,
    StatusInputs,
    build_status,
    conditions_for,
    merge_conditions,
    status_patch,
    timestamp,
)
from tests.support.builders import (
    NAMESPACE,
    NOW,
    POOL,
    backoff,
    cloud_error,
    memory,
    pending,
    queue,
    vm,
    vms,
)


def _inputs(
    queues: Sequence[Any] = (),
    observed: Sequence[ObservedVM] = (),
    mem: PoolMemory | None = None,
    *,
    error: CloudError | None = None,
    limits: PoolLimits | None = None,
    now: datetime = NOW,
    generation: int = 3,
    extra: dict[str, Any] | None = None,
) -> StatusInputs:
    """Status inputs as the reconciler makes them: a plan on the memory after acting."""
    mem = mem or PoolMemory()
    return StatusInputs(
        generation=generation,
        plan=plan(list(queues), list(observed), mem, now, limits=limits or PoolLimits()),
        observed=list(observed),
        memory=mem,
        now=now,
        error=error,
        prefixes={q.name: queue_prefix(NAMESPACE, POOL, q.name) for q in queues},
        extra=extra,
    )


def _conditions(inputs: StatusInputs) -> dict[str, Condition]:
    return {c.type: c for c in conditions_for(inputs)}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status["conditions"] if c["type"] == kind), None)


# --- Conditions ------------------------------------------------------------------------


def test_healthy_pool_has_only_ready_true() -> None:
    """kstatus: Reconciling and Stalled are absent when false, Ready is always there."""
    conditions = _conditions(_inputs([queue(replicas=2)], vms(2)))
    assert list(conditions) == ["Ready"]
    assert conditions["Ready"].status == "True"
    assert conditions["Ready"].reason == "PilotsProvisioned"


def test_ready_counts_starting_vms_as_existing() -> None:
    """Pilots are replaced all the time; Ready must not flap with every boot."""
    observed = [vm(phase=Phase.STARTING), vm()]
    assert _conditions(_inputs([queue(replicas=2)], observed))["Ready"].status == "True"


def test_ready_true_for_a_pool_that_wants_nothing() -> None:
    assert _conditions(_inputs([queue(replicas=0)]))["Ready"].status == "True"


def test_pending_creations_make_the_pool_ready() -> None:
    """After ``create`` returned, the VMs exist even if the listing does not show them yet."""
    mem = memory(pending=[pending(), pending()])
    conditions = _conditions(_inputs([queue(replicas=2)], [], mem))
    assert list(conditions) == ["Ready"]
    assert conditions["Ready"].status == "True"


def test_missing_vms_make_the_pool_reconciling_and_not_ready() -> None:
    conditions = _conditions(_inputs([queue(replicas=3)], vms(1)))
    assert conditions["Reconciling"].status == "True"
    assert conditions["Reconciling"].reason == "ScalingUp"
    assert "2 VM(s)" in conditions["Reconciling"].message
    assert conditions["Ready"].status == "False"
    assert conditions["Ready"].reason == "ScalingUp"
    assert "Stalled" not in conditions


def test_max_starting_hold_is_explained_while_scaling_up() -> None:
    q = queue("slow", replicas=10, max_starting=2)
    conditions = _conditions(_inputs([q], vms(2, "slow", phase=Phase.STARTING)))
    assert conditions["Reconciling"].reason == "ScalingUp"
    assert "maxStarting reached in slow" in conditions["Reconciling"].message


def test_deleting_vms_make_the_pool_reconciling() -> None:
    done = vm(phase=Phase.DONE)
    conditions = _conditions(_inputs([queue(replicas=0)], [done], memory(deleting=[done.id])))
    assert conditions["Reconciling"].reason == "DeletingVMs"
    assert conditions["Ready"].status == "False"


def test_draining_pool_is_ready_and_says_why_it_has_more_vms() -> None:
    """Scaled down under Drain: extra running pilots are expected, not a failure."""
    conditions = _conditions(_inputs([queue(replicas=1)], vms(3)))
    assert list(conditions) == ["Ready"]
    assert conditions["Ready"].status == "True"
    assert conditions["Ready"].reason == "Draining"
    assert "2 running pilot(s)" in conditions["Ready"].message


def test_pool_capped_by_max_instances_is_ready_with_limit_reached() -> None:
    """A limit the admin set is a state, not progress: no endless Reconciling."""
    inputs = _inputs([queue("a", 10)], vms(4, "a"), limits=PoolLimits(max_instances=4))
    conditions = _conditions(inputs)
    assert list(conditions) == ["Ready"]
    assert conditions["Ready"].reason == "LimitReached"
    assert "maxInstances reached in a" in conditions["Ready"].message


@pytest.mark.parametrize(
    "kind",
    [
        ErrorKind.QUOTA,
        ErrorKind.BAD_CREDENTIALS,
        ErrorKind.NOT_FOUND,
        ErrorKind.INVALID_REQUEST,
        ErrorKind.CONFIG,
    ],
)
def test_errors_needing_a_human_make_the_pool_stalled(kind: ErrorKind) -> None:
    """Quota and credentials will not fix themselves; kstatus says so with Stalled."""
    mem = memory(backoff={"default": backoff(kind, retry_in=60)})
    conditions = _conditions(_inputs([queue(replicas=2)], [], mem))
    assert set(conditions) == {"Ready", "Stalled"}
    assert conditions["Stalled"].status == "True"
    assert conditions["Stalled"].reason == kind.value
    assert conditions["Ready"].status == "False"
    assert conditions["Ready"].reason == kind.value


def test_transient_error_makes_the_pool_reconciling_retrying() -> None:
    mem = memory(backoff={"default": backoff(ErrorKind.TRANSIENT, retry_in=60)})
    conditions = _conditions(_inputs([queue(replicas=2)], [], mem))
    assert set(conditions) == {"Ready", "Reconciling"}
    assert conditions["Reconciling"].reason == "Transient"
    assert "Transient: boom" in conditions["Reconciling"].message
    assert conditions["Ready"].reason == "Transient"


def test_pool_wide_error_makes_the_pool_stalled() -> None:
    """An invalid spec or unreadable Secret blocks the whole pool, whatever the counts."""
    error = CloudError(ErrorKind.CONFIG, "queue 'a': instance.image must be set")
    conditions = _conditions(_inputs([queue(replicas=0)], [], error=error))
    assert conditions["Stalled"].reason == "InvalidConfig"
    assert conditions["Stalled"].message == error.message
    assert conditions["Ready"].status == "False"


def test_pool_wide_transient_error_makes_the_pool_reconciling() -> None:
    error = CloudError(ErrorKind.TRANSIENT, "timed out listing nodes", "list")
    conditions = _conditions(_inputs([queue(replicas=1)], vms(1), error=error))
    assert conditions["Reconciling"].reason == "Transient"
    assert "Stalled" not in conditions


def test_backoff_of_a_queue_that_wants_nothing_does_not_stall_the_pool() -> None:
    """An old failure of a queue now full (or scaled to zero) is history, not a block."""
    mem = memory(backoff={"default": backoff(ErrorKind.QUOTA, retry_in=60)})
    conditions = _conditions(_inputs([queue(replicas=1)], vms(1), mem))
    assert list(conditions) == ["Ready"]


def test_conditions_are_ready_reconciling_stalled_in_that_order() -> None:
    kinds = [c.type for c in conditions_for(_inputs([queue(replicas=3)]))]
    assert kinds == ["Ready", "Reconciling"]


# --- Condition bookkeeping ----------------------------------------------------------------


def test_last_transition_time_is_kept_while_status_is_unchanged() -> None:
    first = merge_conditions(None, [Condition("Ready", "True", "A", "one")], generation=1, now=NOW)
    later = merge_conditions(
        first,
        [Condition("Ready", "True", "B", "two")],
        generation=2,
        now=NOW + timedelta(hours=1),
    )
    assert later[0]["lastTransitionTime"] == timestamp(NOW)
    assert (later[0]["reason"], later[0]["message"], later[0]["observedGeneration"]) == (
        "B",
        "two",
        2,
    )


def test_last_transition_time_moves_when_status_flips() -> None:
    first = merge_conditions(None, [Condition("Ready", "True", "A", "")], generation=1, now=NOW)
    later_time = NOW + timedelta(minutes=5)
    flipped = merge_conditions(
        first, [Condition("Ready", "False", "A", "")], generation=1, now=later_time
    )
    assert flipped[0]["lastTransitionTime"] == timestamp(later_time)


def test_condition_that_reappears_gets_a_new_transition_time() -> None:
    first = merge_conditions(
        None, [Condition("Reconciling", "True", "ScalingUp", "")], generation=1, now=NOW
    )
    gone = merge_conditions(first, [], generation=1, now=NOW + timedelta(minutes=1))
    back_at = NOW + timedelta(minutes=2)
    back = merge_conditions(
        gone, [Condition("Reconciling", "True", "ScalingUp", "")], generation=1, now=back_at
    )
    assert back[0]["lastTransitionTime"] == timestamp(back_at)


def test_condition_has_the_kubernetes_shape() -> None:
    (merged,) = merge_conditions(
        None, [Condition("Ready", "True", "R", "m")], generation=7, now=NOW
    )
    assert merged == {
        "type": "Ready",
        "status": "True",
        "reason": "R",
        "message": "m",
        "observedGeneration": 7,
        "lastTransitionTime": "2025-03-01T12:00:00Z",
    }


def test_condition_message_is_bounded() -> None:
    long = "x" * 10_000
    (merged,) = merge_conditions(
        None, [Condition("Stalled", "True", "R", long)], generation=1, now=NOW
    )
    assert len(merged["message"]) == constants.MAX_MESSAGE_LENGTH


def test_timestamp_is_utc_with_z() -> None:
    moment = datetime(2025, 3, 1, 14, 30, 5, 999, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(moment) == "2025-03-01T12:30:05Z"


# --- The status document --------------------------------------------------------------------


def test_status_counts_phases_and_live_replicas() -> None:
    """``status.replicas`` is the scale subresource's view: starting plus running."""
    observed = (
        vms(2, phase=Phase.STARTING)
        + vms(3)
        + [vm(phase=Phase.DONE), vm(phase=Phase.FAILED), vm(phase=Phase.UNKNOWN)]
    )
    mem = memory(pending=[pending()])
    status = build_status(_inputs([queue(replicas=7)], observed, mem), None)
    assert status["observedGeneration"] == 3
    assert status["replicas"] == 6
    assert status["desiredReplicas"] == 7
    assert (status["starting"], status["running"], status["unknown"]) == (3, 3, 1)
    # Finished VMs are being deleted, but the cloud still lists them: status says so.
    assert (status["done"], status["failed"]) == (1, 1)


def test_status_lists_each_queue_with_its_prefix_and_holds() -> None:
    queues = [queue("a", 2, max_instances=1), queue("b", 0)]
    status = build_status(_inputs(queues, [vm("a"), vm("gone")]), None)
    by_name = {q["name"]: q for q in status["queues"]}
    assert list(by_name) == ["a", "b", "gone"]
    assert by_name["a"]["namePrefix"] == queue_prefix(NAMESPACE, POOL, "a")
    assert by_name["a"]["held"] == "MaxInstances"
    assert (by_name["a"]["desired"], by_name["a"]["replicas"]) == (2, 1)
    assert "held" not in by_name["b"]
    assert by_name["gone"]["removedFromSpec"] is True
    assert "namePrefix" not in by_name["gone"]
    assert "removedFromSpec" not in by_name["a"]


def test_instances_carry_what_dirac_needs_to_find_its_pilots() -> None:
    running = vm(age=60)
    status = build_status(_inputs([queue(replicas=1)], [running]), None)
    (entry,) = status["instances"]
    assert entry == {
        "id": running.id,
        "name": running.name,
        "queue": "default",
        "phase": "Running",
        "createdAt": timestamp(running.created_at),
        "pilotReference": f"cloud://{running.id}",
        "pilotStamp": pilot_stamp(running.id),
    }


def test_instances_show_pending_creations_as_starting() -> None:
    entry = pending(age=2)
    status = build_status(_inputs([queue(replicas=1)], [], memory(pending=[entry])), None)
    (shown,) = status["instances"]
    assert (shown["id"], shown["phase"]) == (entry.id, "Starting")
    assert status["instanceCount"] == 1


def test_listed_vm_wins_over_its_pending_entry() -> None:
    entry = pending()
    listed = vm(id=entry.id, phase=Phase.RUNNING)
    status = build_status(_inputs([queue(replicas=1)], [listed], memory(pending=[entry])), None)
    assert [i["phase"] for i in status["instances"]] == ["Running"]
    assert status["instanceCount"] == 1


def test_instances_leave_out_vms_being_deleted() -> None:
    going, staying = vm(), vm()
    status = build_status(
        _inputs([queue(replicas=1)], [going, staying], memory(deleting=[going.id])), None
    )
    assert [i["id"] for i in status["instances"]] == [staying.id]
    assert status["instanceCount"] == 1


def test_instances_are_bounded_and_newest_first() -> None:
    """A pool of thousands must not make a multi-megabyte object watchers re-download."""
    observed = vms(constants.MAX_STATUS_INSTANCES + 50, age=100)
    status = build_status(_inputs([queue(replicas=len(observed))], observed), None)
    shown = status["instances"]
    assert len(shown) == constants.MAX_STATUS_INSTANCES
    assert status["instanceCount"] == len(observed)
    times = [i["createdAt"] for i in shown]
    assert times == sorted(times, reverse=True)
    assert shown[0]["id"] == observed[0].id


def test_instances_without_creation_time_are_shown_last_with_null() -> None:
    undated, dated = vm(age=None), vm(age=10)
    status = build_status(_inputs([queue(replicas=2)], [undated, dated]), None)
    assert [i["id"] for i in status["instances"]] == [dated.id, undated.id]
    assert status["instances"][1]["createdAt"] is None


def test_last_error_and_next_retry_come_from_backoff() -> None:
    mem = memory(backoff={"default": backoff(ErrorKind.QUOTA, retry_in=90)})
    status = build_status(_inputs([queue(replicas=1)], [], mem), None)
    assert status["lastError"] == {
        "reason": "QuotaExceeded",
        "message": "QuotaExceeded: boom",
        "operation": "create",
    }
    assert status["nextRetryAt"] == timestamp(NOW + timedelta(seconds=90))


def test_next_retry_is_the_soonest_of_several_backoffs() -> None:
    mem = memory(backoff={"a": backoff(retry_in=300), "b": backoff(retry_in=30)})
    status = build_status(_inputs([queue("a", 1), queue("b", 1)], [], mem), None)
    assert status["nextRetryAt"] == timestamp(NOW + timedelta(seconds=30))


def test_pool_wide_error_is_the_last_error() -> None:
    error = CloudError(ErrorKind.BAD_CREDENTIALS, "AuthFailure: x" * 100)
    status = build_status(_inputs([queue()], [], error=error), None)
    assert status["lastError"]["reason"] == "BadCredentials"
    assert "operation" not in status["lastError"]
    assert len(status["lastError"]["message"]) <= constants.MAX_MESSAGE_LENGTH


def test_healthy_status_has_no_error_or_retry() -> None:
    status = build_status(_inputs([queue(replicas=1)], vms(1)), None)
    assert "lastError" not in status
    assert "nextRetryAt" not in status


def test_sections_owned_by_others_are_passed_through() -> None:
    extra = {"proxy": {"expiresAt": "2025-03-02T00:00:00Z"}}
    status = build_status(_inputs([queue()], extra=extra), None)
    assert status["proxy"] == extra["proxy"]


def test_build_status_is_pure() -> None:
    inputs = _inputs([queue(replicas=3)], vms(2), memory(pending=[pending()]))
    assert build_status(inputs, None) == build_status(inputs, None)


# --- The patch --------------------------------------------------------------------------------


def test_quiet_cycle_writes_nothing() -> None:
    """Same pool, a minute later: the patch is empty, so no write and no watch event."""
    queues, observed = [queue(replicas=2)], vms(2)
    mem = memory(backoff={"x": backoff(retry_in=3600)})
    first = build_status(_inputs(queues, observed, mem), None)
    again = build_status(_inputs(queues, observed, mem, now=NOW + timedelta(minutes=1)), first)
    assert status_patch(first, again) == {}


def test_quiet_cycle_of_a_stalled_pool_writes_nothing() -> None:
    mem = memory(backoff={"default": backoff(ErrorKind.QUOTA, retry_in=3600)})
    first = build_status(_inputs([queue(replicas=2)], [], mem), None)
    later = _inputs([queue(replicas=2)], [], mem, now=NOW + timedelta(minutes=1))
    assert status_patch(first, build_status(later, first)) == {}


def test_patch_holds_only_what_changed() -> None:
    queues = [queue(replicas=2)]
    first = build_status(_inputs(queues, vms(2)), None)
    second = build_status(_inputs(queues, vms(2), generation=4), first)
    patch = status_patch(first, second)
    assert patch["observedGeneration"] == 4
    assert "conditions" in patch  # observedGeneration inside each condition
    assert "queues" not in patch
    assert "desiredReplicas" not in patch


def test_patch_nulls_keys_no_longer_set() -> None:
    """A merge patch removes a key by nulling it: ``lastError`` goes once the pool recovers."""
    mem = memory(backoff={"default": backoff(ErrorKind.TRANSIENT, retry_in=60)})
    failing = build_status(_inputs([queue(replicas=1)], [], mem), None)
    recovered = build_status(_inputs([queue(replicas=1)], vms(1)), failing)
    patch = status_patch(failing, recovered)
    assert patch["lastError"] is None
    assert patch["nextRetryAt"] is None


def test_patch_nulls_nested_keys_no_longer_set() -> None:
    """A merge patch merges objects: a nested key the new status lacks must be nulled, or
    ``status.dirac.lastError`` would stay after DiracX recovered."""
    previous = {"dirac": {"registeredPilots": 0, "lastError": "down", "demand": {"target": 1}}}
    new = {"dirac": {"registeredPilots": 2, "demand": {}}}
    assert status_patch(previous, new) == {
        "dirac": {"registeredPilots": 2, "lastError": None, "demand": {"target": None}}
    }
    assert status_patch(new, new) == {}


def test_patch_leaves_keys_owned_by_others_alone() -> None:
    previous = {"someoneElses": {"x": 1}, "replicas": 1}
    assert status_patch(previous, {"replicas": 1}) == {}


def test_patch_removes_the_proxy_section_when_the_pool_no_longer_has_a_proxy() -> None:
    previous = {"proxy": {"notAfter": "x"}, "replicas": 1}
    assert status_patch(previous, {"replicas": 1}) == {"proxy": None}


def test_first_patch_writes_everything() -> None:
    status = build_status(_inputs([queue(replicas=1)], vms(1)), None)
    assert status_patch(None, status) == status


def test_ready_transition_time_survives_a_round_trip_through_the_patch() -> None:
    """The stored status is what the next cycle compares against: applying the patch and
    building again must keep Ready's lastTransitionTime."""
    queues = [queue(replicas=2)]
    first = build_status(_inputs(queues, vms(1)), None)
    stored = {**first, **status_patch(first, first)}
    later = NOW + timedelta(minutes=3)
    second = build_status(_inputs(queues, vms(2), now=later), stored)
    stored = {k: v for k, v in {**stored, **status_patch(stored, second)}.items() if v is not None}
    third = build_status(_inputs(queues, vms(2), now=later + timedelta(minutes=1)), stored)
    ready = _condition(third, "Ready")
    assert ready is not None and ready["status"] == "True"
    assert ready["lastTransitionTime"] == timestamp(later)
    assert _condition(third, "Reconciling") is None


def test_summary_driven_conditions_from_a_hand_made_plan() -> None:
    """Conditions depend only on the summaries, so a hand-made plan gives the same answer."""
    hand = Plan(queues=(QueueSummary("a", desired=2, running=2, held=Hold.MAX_INSTANCES),))
    inputs = StatusInputs(
        generation=1, plan=hand, observed=[], memory=PoolMemory(), now=NOW.astimezone(UTC)
    )
    assert conditions_for(inputs)[0].reason == "LimitReached"


def test_cloud_error_helper_matches_status_wording() -> None:
    """Guard for the builders: messages used above keep their ``Kind: text`` shape."""
    assert cloud_error(ErrorKind.QUOTA).message == "QuotaExceeded: boom"


# --- An endpoint that takes no connection: retried, then Stalled after a bound -----------

REFUSED = CloudError(ErrorKind.UNREACHABLE, "ConnectionError: [Errno 111] Connection refused")


def _unreachable(lasted: float, bound: float = 600.0) -> dict[str, Condition]:
    outage = Outage(since=NOW - timedelta(seconds=lasted), failures=3, error=REFUSED)
    inputs = _inputs([queue(replicas=2)], [], error=REFUSED)
    return _conditions(replace(inputs, outage=outage, unreachable_stall_after=bound))


def test_an_unreachable_endpoint_is_retried_within_the_bound() -> None:
    conditions = _unreachable(lasted=599)
    assert set(conditions) == {"Ready", "Reconciling"}
    assert conditions["Reconciling"].reason == "EndpointUnreachable"
    assert conditions["Ready"].reason == "EndpointUnreachable"
    message = conditions["Reconciling"].message
    assert "since 2025-03-01T11:50:01Z" in message
    assert "Stalled if it lasts 600s" in message and "Connection refused" in message


def test_an_unreachable_endpoint_stalls_once_the_bound_has_passed() -> None:
    conditions = _unreachable(lasted=600)
    assert set(conditions) == {"Ready", "Stalled"}
    assert conditions["Stalled"].reason == "EndpointUnreachable"
    assert "longer than 600s" in conditions["Stalled"].message
    assert "still retrying" in conditions["Stalled"].message


def test_the_bound_is_a_setting() -> None:
    assert "Stalled" in _unreachable(lasted=3, bound=2)
    assert "Stalled" not in _unreachable(lasted=1, bound=2)


def test_the_unreachable_message_does_not_change_while_the_outage_lasts() -> None:
    """The start instant, not the time elapsed: a quiet outage writes no status."""
    outage = Outage(since=NOW, failures=1, error=REFUSED)

    def at(seconds: float) -> list[Condition]:
        later = NOW + timedelta(seconds=seconds)
        inputs = _inputs([queue(replicas=2)], [], error=REFUSED, now=later)
        return conditions_for(replace(inputs, outage=outage))

    assert at(10) == at(200)
    assert "since 2025-03-01T12:00:00Z" in at(10)[1].message


def test_an_unreachable_create_without_an_outage_is_reconciling() -> None:
    """Met by a create while the listing worked: its back-off retries it."""
    mem = memory(backoff={"default": backoff(ErrorKind.UNREACHABLE, retry_in=60)})
    conditions = _conditions(_inputs([queue(replicas=2)], [], mem))
    assert set(conditions) == {"Ready", "Reconciling"}
    assert conditions["Reconciling"].reason == "EndpointUnreachable"


def test_an_outage_of_another_kind_does_not_count_towards_the_bound() -> None:
    outage = Outage(
        since=NOW - timedelta(hours=1),
        failures=9,
        error=CloudError(ErrorKind.TRANSIENT, "timed out"),
    )
    inputs = replace(_inputs([queue(replicas=2)], [], error=REFUSED), outage=outage)
    assert "Stalled" not in _conditions(inputs)


def test_an_unusable_proxy_stalls_the_pool() -> None:
    """Not ProxyExpiring=False alone (kstatus reads that as healthy): Stalled, Ready=False."""
    error = CloudError(ErrorKind.INVALID_PROXY, "the pilot proxy is unusable: ...")
    conditions = _conditions(_inputs([queue(replicas=1)], [], error=error))
    assert conditions["Stalled"].reason == "InvalidProxy"
    assert conditions["Ready"].status == "False"
