"""The closed loop's partial capacity against moto behind the LatencyProxy's EC2 quota.

The proxy answers like EC2 past ``instance_limit`` live instances: a RunInstances starts
what fits up to MaxCount, or is refused with InstanceLimitExceeded. The real reconciler
(libcloud's EC2 driver, the gateway, the planner) runs cycles as the operator would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bench.common import Cloud, ReconcilerHarness

from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy


@pytest.fixture
def cloud(ec2: EC2Emulator) -> Iterator[Cloud]:
    with LatencyProxy(ec2.endpoint) as proxy:
        yield Cloud(ec2, proxy)


def _live(cloud: Cloud) -> int:
    nodes = cloud.driver(proxied=False).list_nodes()
    return sum(1 for n in nodes if str(n.state) in ("running", "pending"))


def _queue(status: dict[str, Any]) -> dict[str, Any]:
    (queue,) = status["queues"]
    return dict(queue)


async def test_a_pool_of_8_on_an_account_with_room_for_5_ends_with_5_and_says_why(
    cloud: Cloud,
) -> None:
    cloud.proxy.instance_limit = 5
    harness = ReconcilerHarness(cloud)
    status: dict[str, Any] = {}
    for _ in range(3):
        status = await harness.reconcile("p", 8)
    assert _live(cloud) == 5
    # One RunInstances asked 1..8 and got 5; the learned quota sends no more.
    assert cloud.proxy.counts["RunInstances"] == 1
    loop = _queue(status)["closedLoop"]
    assert loop["state"] == "QuotaLimited"
    assert loop["message"] == "5 of 8: the cloud's quota allows 5"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["QuotaLimited"]["status"] == "True"
    assert "5 of 8: the cloud's quota allows 5" in conditions["QuotaLimited"]["message"]
    assert conditions["Ready"]["reason"] == "QuotaLimited"
    assert "Stalled" not in conditions


async def test_two_pools_on_one_account_share_its_quota(cloud: Cloud) -> None:
    cloud.proxy.instance_limit = 6
    harness = ReconcilerHarness(cloud)
    await harness.reconcile("a", 8)
    assert _live(cloud) == 6  # the first pool takes all there is
    await harness.reconcile("b", 8)  # refused: learns the quota
    # Three of a's pilots end; a is above its fair share (3) and does not replace them.
    a_vms = [n for n in cloud.driver(proxied=False).list_nodes() if n.name.startswith("cp-a-")]
    for node in a_vms[:3]:
        cloud.ec2.halt_instance(node.id)
    for _ in range(3):
        await harness.reconcile("a", 8)
        await harness.reconcile("b", 8)
    names = [n.name for n in cloud.driver(proxied=False).list_nodes() if n.state == "running"]
    assert sum(n.startswith("cp-a-") for n in names) == 3
    assert sum(n.startswith("cp-b-") for n in names) == 3
