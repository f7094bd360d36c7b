"""A replica that lost its Lease between deciding and writing sends nothing, and says so
as what it is: no failed create or delete in the metrics, the audit trail or the Events,
no back-off for the queue. Nothing failed; another replica acts now.

The Lease is lost right after the cycle's decision (the elector says "leading" once, to the
observation, and never again), the most exposed moment the fence guards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from libcloud.compute.base import Node, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from cloudpilot import leader, naming
from cloudpilot import metrics as metrics_module
from cloudpilot.kube import events, handlers
from cloudpilot.metrics import OperatorMetrics
from tests.support.builders import NAMESPACE
from tests.support.stub_reconciler import StubDriver, pool_body, pool_ref, stub_reconciler

pytestmark = pytest.mark.usefixtures("forget_registered_secrets")

POOL = "fenced"
SENT: list[str] = []
"""Every write the driver received: must stay empty."""


class WriteRecordingDriver(StubDriver):
    """Lists one finished pilot of the pool (to be deleted); records any create or destroy."""

    def list_nodes(self) -> list[Node]:
        name = naming.new_vm_name(naming.queue_prefix(NAMESPACE, POOL, "default"))
        done = Node("i-done", name, NodeState.STOPPED, [], [], self)
        done.created_at = datetime.now(UTC) - timedelta(minutes=5)
        return [done]

    def create_node(self, name: str, size: NodeSize, image: NodeImage, **kw: Any) -> Node:
        SENT.append(f"create {name}")
        raise AssertionError("a fenced create was sent")

    def destroy_node(self, node: Node) -> bool:
        SENT.append(f"destroy {node.id}")
        raise AssertionError("a fenced destroy was sent")


class LostAfterDeciding:
    """An elector that leads for the cycle's observation only."""

    def __init__(self) -> None:
        self.asked = 0

    def is_leading(self) -> bool:
        self.asked += 1
        return self.asked == 1


@contextmanager
def _elected(elector: Any) -> Iterator[None]:
    """``elector`` says whether this replica leads (leader.may_act), for the block."""
    token = leader._current.set(elector)
    try:
        yield
    finally:
        leader._current.reset(token)


@pytest.fixture
def lost_lease() -> Iterator[LostAfterDeciding]:
    elector = LostAfterDeciding()
    with _elected(elector):
        yield elector


async def test_a_fenced_create_and_delete_are_no_failures(
    lost_lease: LostAfterDeciding,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    SENT.clear()
    m = OperatorMetrics(version="test")
    monkeypatch.setattr(metrics_module, "_default", m)

    reconciler = stub_reconciler(WriteRecordingDriver, on_cloud_call=m.observe_cloud_call)
    # The open loop: the finished VM is replaced in the same cycle (the closed loop would
    # hold its replacement as a fizzle), so the fence must stop a create and a delete.
    body = pool_body(WriteRecordingDriver, POOL, replicas=2, closedLoop={"enabled": False})
    with caplog.at_level(logging.INFO, logger="cloudpilot.audit"):
        outcome = await reconciler.reconcile(pool_ref(POOL), body)

    assert lost_lease.asked > 1, "the fence was never asked"
    assert SENT == []
    planned = {getattr(r, "reason", "") for r in caplog.records if r.name == "cloudpilot.audit"}
    assert {"ScaleUpPlanned", "ScaleDownPlanned"} <= planned  # the cycle did get that far
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [e for e in outcome.events if e.type == "Warning"] == []
    assert outcome.memory.backoff == {}
    assert outcome.memory.deleting == {}  # the finished VM is deleted by whoever leads now
    for name in ("cloudpilot_vm_failures_total", "cloudpilot_cloud_api_errors_total"):
        assert [s for f in m.registry.collect() for s in f.samples if s.name == name] == []


# -- teardown ---------------------------------------------------------------------------


class Lease:
    """An elector whose Lease lapses when told (here: while the cloud is being listed)."""

    leading = True

    def is_leading(self) -> bool:
        return self.leading


LEASE = Lease()


class LapsingWhileListedDriver(StubDriver):
    """Lists one VM of the pool, and the Lease lapses while that listing is on the wire."""

    def list_nodes(self) -> list[Node]:
        LEASE.leading = False
        name = naming.new_vm_name(naming.queue_prefix(NAMESPACE, POOL, "default"))
        return [Node("i-left", name, NodeState.RUNNING, [], [], self)]

    def destroy_node(self, node: Node) -> bool:
        SENT.append(f"destroy {node.id}")
        raise AssertionError("a fenced destroy was sent")


async def test_a_teardown_that_lost_the_lease_writes_no_status_and_posts_no_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The new leader tears the pool down and writes its teardown status: the replica
    whose Lease lapsed during its own attempt must not overwrite it, nor post Events."""
    SENT.clear()
    LEASE.leading = True
    written: list[str] = []

    class EventsApi:
        async def create(self, namespace: str, event: dict[str, Any]) -> str:
            written.append(f"event {event['reason']}")
            return "e-1"

        async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
            written.append("event patch")

    async def patch_status(namespace: str, name: str, patch: dict[str, Any]) -> bool:
        written.append(f"status {sorted(patch)}")
        return True

    monkeypatch.setattr(events, "recorder", events.EventRecorder(EventsApi()))
    monkeypatch.setattr(handlers, "patch_status", patch_status)
    reconciler = stub_reconciler(LapsingWhileListedDriver)
    body = pool_body(LapsingWhileListedDriver, POOL)
    body["metadata"]["deletionTimestamp"] = "2026-12-03T12:00:00Z"
    with _elected(LEASE), pytest.raises(kopf.TemporaryError):  # the pool waits: the leader goes on
        await handlers.tear_down(reconciler, body)

    assert not LEASE.leading, "the teardown never listed the cloud"
    assert SENT == []
    assert written == []
