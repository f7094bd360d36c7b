"""Deleting a pool: the pure decisions of cloudpilot.teardown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cloudpilot import constants
from cloudpilot.memory import CloudError, ErrorKind
from cloudpilot.teardown import (
    TEARDOWN_BACKOFF_MAX,
    Attempt,
    Facts,
    Source,
    TeardownState,
    Verdict,
    choose_source,
    decide,
    status_patch,
    status_shows_vms,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
OUTAGE = CloudError(ErrorKind.TRANSIENT, "InternalError: An internal error has occurred.", "list")
NO_SECRET = CloudError(ErrorKind.CONFIG, "Secret ec2-credentials not found", "list")
INVALID = Facts(current_error="spec.cloudType: no such provider 'Nope'", recorded=False)
RECORDED = Facts(current_error="spec.cloudType: no such provider 'Nope'", recorded=True)


def _decide(
    facts: Facts,
    attempt: Attempt | None,
    state: TeardownState | None = None,
    previous: list[dict[str, Any]] | None = None,
    jitter: float = 0.999999,
) -> Verdict:
    return decide(
        facts,
        choose_source(facts),
        attempt,
        state or TeardownState(),
        previous_conditions=previous or [],
        initial_delay=2.0,
        progress_delay=1.0,
        jitter=jitter,
    )


def _conditions(verdict: Verdict) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in verdict.conditions}


# -- which spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "source"),
    [
        (INVALID, Source.NONE),
        (Facts(current_error=None, recorded=False), Source.CURRENT),
        (RECORDED, Source.RECORDED),  # the current spec is broken: the record made the VMs
        (Facts(current_error=None, recorded=True), Source.RECORDED),
        (Facts(current_error=None, recorded=True, recorded_error="x"), Source.NONE),
        (Facts(current_error=None, recorded=True, orphan=True), Source.NONE),
    ],
)
def test_the_recorded_spec_wins_and_a_broken_one_is_never_listed_with(
    facts: Facts, source: Source
) -> None:
    assert choose_source(facts) is source


# -- released at once ------------------------------------------------------------------------


def test_a_pool_whose_spec_was_never_usable_is_released_at_once_saying_why() -> None:
    verdict = _decide(INVALID, None)
    assert verdict.release
    assert verdict.conditions == ()
    (event,) = verdict.events
    assert (event.type, event.reason) == ("Normal", "Released")
    assert "never created a VM" in event.message
    assert "no such provider 'Nope'" in event.message


def test_a_valid_spec_never_listed_is_released_when_its_one_try_fails() -> None:
    """Missing credentials Secret: the spec parses, the listing cannot happen, and nothing
    was ever recorded, so nothing was ever created."""
    facts = Facts(current_error=None, recorded=False)
    verdict = _decide(facts, Attempt(error=NO_SECRET))
    assert verdict.release
    assert "Secret ec2-credentials not found" in verdict.events[0].message


def test_a_pool_with_nothing_left_is_released_without_a_word() -> None:
    verdict = _decide(Facts(current_error=None, recorded=True), Attempt(remaining=0))
    assert verdict == Verdict(release=True)


def test_orphan_releases_without_touching_the_cloud() -> None:
    facts = Facts(current_error=None, recorded=True, orphan=True)
    verdict = _decide(facts, None)
    assert verdict.release
    assert [(e.type, e.reason) for e in verdict.events] == [("Normal", "Orphaned")]


# -- never released blindly ------------------------------------------------------------------


def test_a_recorded_pool_that_cannot_be_listed_waits_and_says_why() -> None:
    verdict = _decide(RECORDED, Attempt(error=OUTAGE))
    assert not verdict.release
    assert _conditions(verdict) == {
        "Ready": ("False", "TeardownBlocked"),
        "Reconciling": ("True", "TeardownBlocked"),
    }
    assert verdict.conditions[0].message.startswith("cannot list the pool's VMs: Transient: ")
    assert [(e.type, e.reason) for e in verdict.events] == [("Warning", "TeardownBlocked")]
    assert verdict.error is not None and verdict.error.kind is ErrorKind.TRANSIENT


def test_an_error_that_needs_a_human_stalls_and_names_the_way_out() -> None:
    verdict = _decide(RECORDED, Attempt(error=NO_SECRET))
    assert not verdict.release
    assert _conditions(verdict) == {
        "Ready": ("False", "TeardownBlocked"),
        "Stalled": ("True", "TeardownBlocked"),
    }
    assert constants.FINALIZER in verdict.conditions[0].message


def test_a_legacy_pool_whose_status_shows_vms_is_not_released_on_an_invalid_spec() -> None:
    """No record (made by an operator before it), VMs in status, spec broken: waiting is
    the only safe answer."""
    facts = Facts(current_error="spec.ce: required", recorded=False, status_shows_vms=True)
    verdict = _decide(facts, None)
    assert not verdict.release
    assert _conditions(verdict)["Stalled"] == ("True", "TeardownBlocked")
    assert "no valid spec of it is recorded" in verdict.conditions[0].message


def test_a_legacy_pool_whose_status_shows_vms_waits_for_the_cloud() -> None:
    facts = Facts(current_error=None, recorded=False, status_shows_vms=True)
    assert not _decide(facts, Attempt(error=OUTAGE)).release


def test_a_record_that_no_longer_parses_blocks() -> None:
    facts = Facts(current_error="bad", recorded=True, recorded_error="spec.x: unknown")
    verdict = _decide(facts, None)
    assert not verdict.release
    assert "recorded spec no longer parses" in verdict.conditions[0].message


def test_vms_being_destroyed_show_as_deleting_and_are_looked_at_soon() -> None:
    verdict = _decide(RECORDED, Attempt(remaining=3))
    assert not verdict.release
    assert _conditions(verdict) == {
        "Ready": ("False", "Deleting"),
        "Reconciling": ("True", "Deleting"),
    }
    assert "3 VM(s)" in verdict.conditions[0].message
    assert verdict.retry_in == 1.0
    assert verdict.events == ()


# -- one event per cause, back-off ------------------------------------------------------------


def test_a_cause_is_posted_once_not_once_per_retry() -> None:
    state = TeardownState()
    posted = []
    for _ in range(5):
        verdict = _decide(RECORDED, Attempt(error=OUTAGE), state)
        posted += verdict.events
        state = verdict.state
    assert len(posted) == 1
    # A new cause is news; the old one coming back is not.
    verdict = _decide(RECORDED, Attempt(error=NO_SECRET), state)
    assert [e.reason for e in verdict.events] == ["TeardownBlocked"]
    verdict = _decide(RECORDED, Attempt(error=OUTAGE), verdict.state)
    assert verdict.events == ()


def test_a_restarted_operator_does_not_repeat_the_event_its_status_already_shows() -> None:
    first = _decide(RECORDED, Attempt(error=OUTAGE))
    stored = status_patch(first, {}, generation=1, now=NOW)["conditions"]
    again = _decide(RECORDED, Attempt(error=OUTAGE), TeardownState(), stored)
    assert again.events == ()


def test_retries_back_off_from_the_initial_delay_and_stay_short() -> None:
    state = TeardownState()
    delays = []
    for _ in range(8):
        verdict = _decide(RECORDED, Attempt(error=OUTAGE), state)
        delays.append(verdict.retry_in)
        state = verdict.state
    assert delays[0] == pytest.approx(2.0, rel=1e-3)
    assert delays[1] == pytest.approx(4.0, rel=1e-3)
    assert max(d or 0 for d in delays) == pytest.approx(TEARDOWN_BACKOFF_MAX, rel=1e-3)
    # Rejected credentials back off for half an hour when creating; not when deleting.
    rejected = CloudError(ErrorKind.BAD_CREDENTIALS, "AuthFailure", "list")
    verdict = _decide(RECORDED, Attempt(error=rejected), TeardownState(failures=20))
    assert verdict.retry_in is not None and verdict.retry_in <= TEARDOWN_BACKOFF_MAX


def test_a_successful_attempt_resets_the_back_off() -> None:
    blocked = _decide(RECORDED, Attempt(error=OUTAGE), TeardownState(failures=6))
    progressing = _decide(RECORDED, Attempt(remaining=2), blocked.state)
    assert progressing.state.failures == 0
    assert progressing.state.warned == blocked.state.warned


# -- status ------------------------------------------------------------------------------------


def test_the_status_patch_replaces_ready_and_drops_creation_retries() -> None:
    previous = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "PilotsProvisioned",
                "message": "10 of 10 desired VMs exist",
                "observedGeneration": 1,
                "lastTransitionTime": "2024-05-01T11:00:00Z",
            }
        ],
        "nextRetryAt": "2024-05-01T12:01:00Z",
        "replicas": 10,
    }
    patch = status_patch(_decide(RECORDED, Attempt(error=OUTAGE)), previous, generation=1, now=NOW)
    ready = patch["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "TeardownBlocked",
    )
    assert ready["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert patch["lastError"]["reason"] == "Transient"
    assert patch["nextRetryAt"] is None
    assert "replicas" not in patch  # what was last seen of the VMs stays
    assert status_patch(Verdict(release=True), previous, generation=1, now=NOW) == {}


@pytest.mark.parametrize(
    ("status", "shows"),
    [
        ({}, False),
        ({"replicas": 0, "instanceCount": 0, "instances": []}, False),
        ({"instanceCount": 2}, True),
        ({"instances": [{"id": "i-1"}]}, True),
        ({"unknown": 1}, True),
    ],
)
def test_status_shows_vms(status: dict[str, Any], shows: bool) -> None:
    assert status_shows_vms(status) is shows
