"""The closed loop's memory across cycles (cloudpilot.closedloop), without a cloud: what
vanished, what the plan deleted, what creates taught about the account, and what it reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cloudpilot import planner
from cloudpilot.closedloop import ClosedLoop, LoopReport
from cloudpilot.cloud.gateway import CreateResult, ListedNode
from cloudpilot.memory import CloudError, ErrorKind, PoolMemory
from cloudpilot.models.queues import QueueConfig
from cloudpilot.models.vms import ObservedVM, Phase
from tests.support.builders import NOW, queue, vm

ACCOUNT = {"default": "ec2|fp"}


def steer(
    loop: ClosedLoop,
    queues: list[QueueConfig],
    observed: list[ObservedVM],
    *,
    uid: str = "uid-a",
    deletions: tuple[planner.Deletion, ...] = (),
    previous: dict[str, Any] | None = None,
    listed: bool = True,
    now: datetime = NOW,
) -> tuple[dict[str, planner.QueueGate] | None, list[str]]:
    gates, events = loop.steer(
        uid,
        f"ns/{uid}",
        queues,
        observed,
        PoolMemory(),
        {q.name: ACCOUNT["default"] for q in queues},
        previous or {},
        deletions,
        now,
        listed=listed,
    )
    return gates, [str(e.reason) for e in events]


def after(
    loop: ClosedLoop,
    queues: list[QueueConfig],
    observed: list[ObservedVM],
    *,
    uid: str = "uid-a",
    created: tuple[CreateResult, ...] = (),
    plan: planner.Plan | None = None,
) -> LoopReport:
    return loop.account_for(
        uid, f"ns/{uid}", queues, observed, plan or planner.Plan(), created, set(), {}, NOW
    )


def test_a_running_vm_that_vanished_was_reclaimed_one_event_per_queue() -> None:
    loop = ClosedLoop()
    q = [queue("default", 2, spot=True)]
    first = [vm("default", Phase.RUNNING), vm("default", Phase.RUNNING)]
    steer(loop, q, first)
    after(loop, q, first)
    gates, reasons = steer(loop, q, [], now=NOW + timedelta(seconds=60))
    assert reasons == ["Reclaimed"]  # two VMs, one Event
    assert gates is not None and not gates["default"].held  # a reclaim holds nothing


def test_a_starting_vm_that_vanished_failed_and_holds_the_queue() -> None:
    loop = ClosedLoop()
    q = [queue("default", 1)]
    booting = [vm("default", Phase.STARTING, age=30)]
    steer(loop, q, booting)
    after(loop, q, booting)
    gates, reasons = steer(loop, q, [], now=NOW + timedelta(seconds=10))
    assert reasons == []
    assert gates is not None and gates["default"].held


def test_nothing_vanishes_from_a_cycle_that_could_not_list() -> None:
    loop = ClosedLoop()
    q = [queue("default", 1)]
    running = [vm("default", Phase.RUNNING)]
    steer(loop, q, running)
    after(loop, q, running)
    gates, reasons = steer(loop, q, [], listed=False)
    assert gates is None and reasons == []
    # Nor once listing works again: what was known was dropped, not counted late.
    gates, reasons = steer(loop, q, [])
    assert reasons == [] and gates is not None and not gates["default"].held


def test_a_deletion_retried_after_a_failure_is_counted_once() -> None:
    loop = ClosedLoop()
    q = [queue("default", 1)]
    done = vm("default", Phase.DONE, age=90)
    deletion = (planner.Deletion(done, planner.DeleteReason.PILOT_DONE),)
    steer(loop, q, [done], deletions=deletion)
    after(loop, q, [done])
    steer(loop, q, [done], deletions=deletion)  # the destroy failed; planned again
    report = after(loop, q, [done])
    block = report.blocks["default"]
    assert block["recent"]["fizzled"] == 1
    assert block["state"] == "HeldAfterFizzles"


def test_a_partial_create_teaches_the_quota_and_the_next_plan_stays_within_it() -> None:
    loop = ClosedLoop()
    q = [queue("default", 8)]
    steer(loop, q, [])
    nodes = tuple(
        ListedNode(id=f"i-{n}", name=f"vm-{n}", state="pending", created_at=NOW) for n in range(5)
    )
    after(loop, q, [], created=(CreateResult("default", 8, nodes),))
    five = [vm("default", Phase.RUNNING, id=n.id) for n in nodes]
    gates, _ = steer(loop, q, five)
    assert gates is not None and gates["default"].capacity_room == 0


def test_a_quota_refusal_with_nothing_created_teaches_the_quota_too() -> None:
    loop = ClosedLoop()
    q = [queue("default", 3)]
    running = [vm("default", Phase.RUNNING) for _ in range(2)]
    steer(loop, q, running)
    refused = CloudError(ErrorKind.QUOTA, "InstanceLimitExceeded", "create")
    after(loop, q, running, created=(CreateResult("default", 1, (), refused),))
    gates, _ = steer(loop, q, running)
    assert gates is not None and gates["default"].capacity_room == 0


def test_two_pools_on_one_account_get_fair_shares_of_its_learned_quota() -> None:
    loop = ClosedLoop()
    q = [queue("default", 8)]
    a = [vm("default", Phase.RUNNING) for _ in range(2)]
    steer(loop, q, a, uid="uid-a")
    steer(loop, q, [], uid="uid-b")
    refused = CloudError(ErrorKind.QUOTA, "InstanceLimitExceeded", "create")
    after(loop, q, [], uid="uid-b", created=(CreateResult("default", 8, (), refused),))
    # The account holds 2 (a's): b may not create until a's pilots end and free room.
    gates_b, _ = steer(loop, q, [], uid="uid-b")
    assert gates_b is not None and gates_b["default"].capacity_room == 0
    gates_a, _ = steer(loop, q, a, uid="uid-a")
    assert gates_a is not None and gates_a["default"].capacity_room == 0


def test_a_hold_read_back_from_status_survives_a_restart() -> None:
    loop = ClosedLoop()
    q = [queue("default", 2)]
    until = (NOW + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    previous = {
        "queues": [
            {
                "name": "default",
                "closedLoop": {
                    "state": "HeldAfterFizzles",
                    "heldUntil": until,
                    "consecutiveFizzles": 4,
                    "holds": 2,
                },
            }
        ]
    }
    gates, _ = steer(loop, q, [], previous=previous)
    assert gates is not None and gates["default"].held
    assert loop.next_wake("uid-a", NOW) == 300.0


def test_forget_drops_the_pool() -> None:
    loop = ClosedLoop()
    q = [queue("default", 1)]
    steer(loop, q, [vm("default", Phase.RUNNING)])
    loop.forget("uid-a")
    assert loop.next_wake("uid-a", NOW) is None
    report = after(loop, q, [])
    assert report.blocks == {}


def test_a_create_that_failed_for_another_reason_teaches_no_quota() -> None:
    """A render or config failure creates nothing, and says nothing about the account: the
    other pools on it must not be told it is full."""
    loop = ClosedLoop()
    q = [queue("default", 2)]
    steer(loop, q, [], uid="uid-a")
    steer(loop, q, [], uid="uid-b")
    broken = CloudError(ErrorKind.CONFIG, "no pilot executable", "render")
    after(loop, q, [], uid="uid-a", created=(CreateResult("default", 2, (), broken),))
    gates, _ = steer(loop, q, [], uid="uid-b")
    assert gates is not None and gates["default"].capacity_room is None
