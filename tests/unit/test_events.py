"""The Events CloudPilot posts about a pool: what ``kubectl describe`` shows a site admin."""

from __future__ import annotations

from datetime import UTC, datetime

from cloudpilot import redaction
from cloudpilot.kube.events import MAX_EVENT_MESSAGE, build_event

POOL = {
    "apiVersion": "cloudpilot.io/v1alpha1",
    "kind": "CloudPilotPool",
    "metadata": {"name": "lhcb", "namespace": "grid", "uid": "u-1", "generation": 2},
}
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_an_event_points_at_the_pool_and_says_who_posted_it() -> None:
    event = build_event(POOL, "Normal", "Created", "created 3 VM(s)", NOW)

    assert event["involvedObject"] == {
        "apiVersion": "cloudpilot.io/v1alpha1",
        "kind": "CloudPilotPool",
        "name": "lhcb",
        "namespace": "grid",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"], event["message"]) == (
        "Normal",
        "Created",
        "created 3 VM(s)",
    )
    assert event["source"] == {"component": "cloudpilot"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-21T12:00:00Z"
    assert event["metadata"] == {"generateName": "cloudpilot-event-"}


def test_a_secret_in_a_message_is_masked_and_a_long_message_cut() -> None:
    redaction.register("test-events", ["s3cr3t-access-key-value"])
    try:
        event = build_event(
            POOL,
            "Warning",
            "CloudError",
            "rejected s3cr3t-access-key-value " + "retry. " * 500,
            NOW,
        )
    finally:
        redaction.forget("test-events")

    assert "s3cr3t-access-key-value" not in event["message"]
    assert len(event["message"]) == MAX_EVENT_MESSAGE
