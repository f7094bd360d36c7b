"""A cycle whose ``status.teardownSpec`` write fails creates nothing: its audit trail must not
say a scale-up was sent (cycle_events.as_sent, and the reconciler that logs its result)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize

from cloudpilot import cycle_events, planner, redaction
from cloudpilot.reasons import Reason
from cloudpilot.reconciler import PoolRef, Reconciler, ReconcilerSettings
from tests.support.builders import NAMESPACE, pool_spec

POOL = "unrecorded"
DRIVER = f"{__name__}.CreateRecordingDriver"
CREATED: list[str] = []
SECRETS = {
    "cloud-creds": {"key": b"access-key", "secret": b"secret-value"},
    "pilot": {"pilot.sh": b"#!/bin/sh\necho pilot\n"},
}


class CreateRecordingDriver(NodeDriver):
    """An empty cloud that records every create it is sent."""

    name = "create-recording"

    def __init__(self, key: str, secret: str | None = None, **options: object) -> None:
        self.key, self.secret = key, secret

    def list_nodes(self) -> list[Node]:
        return []

    def list_images(self, location: object = None) -> list[NodeImage]:
        return [NodeImage("ami-12345678", "image", self)]

    def list_sizes(self, location: object = None) -> list[NodeSize]:
        return [NodeSize("m5.large", "m5.large", 8192, 0, 0, 0.0, self)]

    def create_node(self, name: str, size: NodeSize, image: NodeImage, **kw: Any) -> Node:
        CREATED.append(name)
        raise AssertionError("a create was sent without a recorded teardownSpec")


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    before = set(redaction._secrets)
    yield
    for owner in set(redaction._secrets) - before:
        redaction.forget(owner)


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


async def test_the_audit_trail_says_no_scale_up_was_sent_when_the_spec_was_not_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    CREATED.clear()

    async def read_secret(namespace: str, name: str) -> dict[str, bytes]:
        return SECRETS[name]

    async def refuse_status(pool: PoolRef, patch: Mapping[str, Any]) -> None:
        raise RuntimeError("status.teardownSpec: unknown field")  # a CRD older than the operator

    reconciler = Reconciler(
        ReconcilerSettings(allowed_driver_classes=frozenset({DRIVER})),
        read_secret=read_secret,
        write_status=refuse_status,
    )
    spec = pool_spec(
        replicas=2,
        cloudType=DRIVER,
        driver={},
        pilot={"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
    )
    body = {
        "metadata": {"name": POOL, "namespace": NAMESPACE, "uid": "uid-u", "generation": 1},
        "spec": spec,
        "status": {},
    }
    with caplog.at_level(logging.INFO, logger="cloudpilot.audit"):
        outcome = await reconciler.reconcile(PoolRef(NAMESPACE, POOL, "uid-u"), body)

    assert CREATED == []
    assert "teardownSpec" in outcome.status_patch["lastError"]["message"]
    [line] = [r for r in caplog.records if getattr(r, "reason", "") == "ScaleUpPlanned"]
    assert line.levelno == logging.WARNING
    assert "planned, not sent" in line.getMessage() and "teardownSpec" in line.getMessage()
