"""A cycle decides once, the closed loop's gates included (decision.groundwork): the loop
counts how the plan's deletions ended before the plan is finished, and the plan it gates
is the one carried out. Here a pilot that fizzled is deleted, the loop holds its queue for
it, and the replacement the open loop would send is not even planned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from libcloud.compute.base import Node, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from cloudpilot import decision, naming, planner
from tests.support.builders import NAMESPACE
from tests.support.stub_reconciler import StubDriver, pool_body, pool_ref, stub_reconciler

pytestmark = pytest.mark.usefixtures("forget_registered_secrets")

POOL = "decided-once"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SENT: list[str] = []


class FizzledPilotDriver(StubDriver):
    """Lists one pilot of the pool that halted five minutes after boot (no work found)."""

    def list_nodes(self) -> list[Node]:
        name = naming.new_vm_name(naming.queue_prefix(NAMESPACE, POOL, "default"))
        done = Node("i-fizzled", name, NodeState.STOPPED, [], [], self)
        done.created_at = NOW - timedelta(minutes=5)
        return [done]

    def create_node(self, name: str, size: NodeSize, image: NodeImage, **kw: Any) -> Node:
        SENT.append("create")
        return Node(f"i-{len(SENT)}", name, NodeState.PENDING, [], [], self)

    def destroy_node(self, node: Node) -> bool:
        SENT.append(f"destroy {node.id}")
        return True


def _counted(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


async def test_a_cycle_the_closed_loop_gates_is_decided_and_planned_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    SENT.clear()
    decides = _counted(monkeypatch, decision, "decide")
    plans = _counted(monkeypatch, planner, "plan")
    reconciler = stub_reconciler(FizzledPilotDriver, clock=lambda: NOW)

    outcome = await reconciler.reconcile(
        pool_ref(POOL), pool_body(FizzledPilotDriver, POOL, replicas=1)
    )

    [queue] = outcome.status_patch["queues"]
    assert queue["closedLoop"]["state"] == "HeldAfterFizzles", "the loop gated the queue"
    assert SENT == ["destroy i-fizzled"], "the gated plan is the one carried out"
    assert (len(decides), len(plans)) == (1, 1)
