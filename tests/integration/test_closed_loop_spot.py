"""Spot VMs through libcloud's real EC2 driver to moto, and a spot VM the cloud takes back.

The pool asks for spot (``instance.spot``, ``spotMaxPrice``): the RunInstances request that
reaches the cloud carries ``InstanceMarketOptions`` (read from the latency proxy's request
log), and moto starts spot instances. A VM the cloud terminates, not CloudPilot, is counted
as reclaimed and posted as one Event; it is replaced and holds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bench.common import AMI_ID, FLAVOR, Cloud, ReconcilerHarness

from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy

SPOT = {"image": AMI_ID, "flavor": FLAVOR, "spot": True, "spotMaxPrice": "0.05"}


@pytest.fixture
def cloud(ec2: EC2Emulator) -> Iterator[Cloud]:
    with LatencyProxy(ec2.endpoint) as proxy:
        yield Cloud(ec2, proxy)


def _live(cloud: Cloud) -> list[Any]:
    nodes = cloud.driver(proxied=False).list_nodes()
    return [n for n in nodes if str(n.state) in ("running", "pending")]


async def test_a_spot_pool_sends_instance_market_options_and_gets_spot_instances(
    cloud: Cloud,
) -> None:
    harness = ReconcilerHarness(cloud)
    await harness.reconcile("spot", 2, instance=SPOT)
    (request,) = cloud.proxy.run_instances_requests
    assert request["InstanceMarketOptions.MarketType"] == "spot"
    assert request["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.05"
    assert (request["MinCount"], request["MaxCount"]) == ("1", "2")
    live = _live(cloud)
    assert len(live) == 2
    assert {cloud.ec2.instance(n.id).lifecycle for n in live} == {"spot"}


async def test_an_on_demand_pool_sends_no_market_options(cloud: Cloud) -> None:
    harness = ReconcilerHarness(cloud)
    await harness.reconcile("ondemand", 1)
    (request,) = cloud.proxy.run_instances_requests
    assert not any(k.startswith("InstanceMarketOptions") for k in request)


async def test_a_spot_vm_the_cloud_takes_back_is_counted_as_reclaimed_with_one_event(
    cloud: Cloud,
) -> None:
    harness = ReconcilerHarness(cloud)
    await harness.reconcile("reclaim", 2, instance=SPOT)
    await harness.reconcile("reclaim", 2, instance=SPOT)  # both listed and known
    taken = _live(cloud)[0].id
    cloud.ec2.backend().terminate_instances([taken])  # the cloud's doing, not CloudPilot's
    status, outcome = await harness.cycle("reclaim", 2, instance=SPOT)
    reclaimed = [e for e in outcome.events if e.reason == "Reclaimed"]
    assert len(reclaimed) == 1
    assert reclaimed[0].type == "Warning"
    assert "1 spot VM(s) reclaimed by the cloud" in reclaimed[0].message
    (queue,) = status["queues"]
    loop = queue["closedLoop"]
    assert loop["recent"]["reclaimed"] == 1
    assert loop["recent"]["failed"] == 0 and loop["recent"]["fizzled"] == 0
    assert loop["state"] == "Open"  # a reclaim holds nothing
    # Replaced, and counted once: the next cycle posts no second Event.
    status, outcome = await harness.cycle("reclaim", 2, instance=SPOT)
    assert not [e for e in outcome.events if e.reason == "Reclaimed"]
    assert status["queues"][0]["closedLoop"]["recent"]["reclaimed"] == 1
    assert len(_live(cloud)) == 2
    assert taken not in {n.id for n in _live(cloud)}
