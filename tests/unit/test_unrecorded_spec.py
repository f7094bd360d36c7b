"""A cycle whose ``status.teardownSpec`` write fails creates nothing: its audit trail must not
say a scale-up was sent (cycle_events.as_sent, and the reconciler that logs its result)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from libcloud.compute.base import Node, NodeImage, NodeSize

from cloudpilot import cycle_events, planner
from cloudpilot.reasons import Reason
from cloudpilot.reconciler import PoolRef
from tests.support.stub_reconciler import StubDriver, pool_body, pool_ref, stub_reconciler

POOL = "unrecorded"
CREATED: list[str] = []


class CreateRecordingDriver(StubDriver):
    """An empty cloud that records every create it is sent."""

    def create_node(self, name: str, size: NodeSize, image: NodeImage, **kw: Any) -> Node:
        CREATED.append(name)
        raise AssertionError("a create was sent without a recorded teardownSpec")


def test_planned_lines_stay_as_they_are_when_the_spec_was_recorded() -> None:
    lines = cycle_events.planned((planner.Creation("default", 2),), ())
    assert cycle_events.as_sent(lines, None) == lines


def test_a_scale_up_not_sent_says_so_and_why() -> None:
    up = cycle_events.planned((planner.Creation("default", 2),), ())
    down = [cycle_events.Event("Normal", Reason.SCALE_DOWN_PLANNED, "queue q2: deleting 1 VM(s)")]
    [sent_up, sent_down] = cycle_events.as_sent([*up, *down], "RuntimeError: unknown field")
    assert sent_up.reason is Reason.SCALE_UP_PLANNED and sent_up.type == "Warning"
    assert sent_up.message == (
        "queue default: creating 2 VM(s): planned, not sent: "
        "status.teardownSpec not recorded: RuntimeError: unknown field"
    )
    assert sent_up.queue == "default"
    assert sent_down == down[0], "deletions go on: their lines are unchanged"


@pytest.mark.usefixtures("forget_registered_secrets")
async def test_the_audit_trail_says_no_scale_up_was_sent_when_the_spec_was_not_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    CREATED.clear()

    async def refuse_status(pool: PoolRef, patch: Mapping[str, Any]) -> None:
        raise RuntimeError("status.teardownSpec: unknown field")  # a CRD older than the operator

    reconciler = stub_reconciler(CreateRecordingDriver, write_status=refuse_status)
    body = pool_body(CreateRecordingDriver, POOL, replicas=2)
    with caplog.at_level(logging.INFO, logger="cloudpilot.audit"):
        outcome = await reconciler.reconcile(pool_ref(POOL), body)

    assert CREATED == []
    assert "teardownSpec" in outcome.status_patch["lastError"]["message"]
    [line] = [r for r in caplog.records if getattr(r, "reason", "") == "ScaleUpPlanned"]
    assert line.levelno == logging.WARNING
    assert "planned, not sent" in line.getMessage() and "teardownSpec" in line.getMessage()
