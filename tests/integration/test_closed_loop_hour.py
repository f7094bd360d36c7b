"""An hour of the operator's clock with pilots that find no work (issue 13).

Every pilot halts 60 s after boot. The real reconciler (libcloud's EC2 driver through the
latency proxy to moto, the gateway, decide/conclude) runs on an injected clock, each cycle
when the operator asked to be called back; moto's launch times follow the same clock. No
sleeping: the hour takes seconds. Counting, not timing: the closed loop must create at most
5 % of the VMs the open loop creates in the same scenario.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench.closedloop import no_work
from bench.common import Cloud

from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy

REPLICAS = 10


@pytest.fixture
def cloud(ec2: EC2Emulator) -> Iterator[Cloud]:
    with LatencyProxy(ec2.endpoint) as proxy:
        yield Cloud(ec2, proxy)


async def test_with_no_work_the_closed_loop_creates_at_most_5_percent_of_the_open_loop(
    cloud: Cloud,
) -> None:
    open_loop = await no_work(cloud, closed_loop=False, replicas=REPLICAS, hours=1.0)
    closed = await no_work(cloud, closed_loop=True, replicas=REPLICAS, hours=1.0)
    # The scenario churns: the open loop replaces every pilot as it ends, hour long.
    assert open_loop.state == "Disabled"
    assert open_loop.vms_created >= REPLICAS * 30
    # The closed loop: the first wave, then one probe per hold (600 s, then 1200 s ...).
    assert closed.vms_created <= 0.05 * open_loop.vms_created
    assert closed.vms_created >= REPLICAS  # it did start the pool, and counted every VM
    assert closed.state == "HeldAfterFizzles"
    assert closed.consecutive_fizzles == closed.vms_created
