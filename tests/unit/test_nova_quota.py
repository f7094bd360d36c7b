"""Nova's ``/limits`` feeding the closed loop (cloudpilot.nova_quota, the gateway's read
beside the listing, ClosedLoop.steer): an OpenStack account's quota is known before any
create is refused, and a failed read never fails the cycle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from cloudpilot import capacity, constants, redaction
from cloudpilot.cloud import nova_limits
from cloudpilot.nova_quota import NOVA_SOURCE, Flavor, NovaReading, account_limit, merged
from cloudpilot.reconciler import Outcome
from tests.support.builders import NOW
from tests.support.stub_reconciler import StubDriver, pool_body, pool_ref, stub_reconciler

POOL = "nova-quota"
CREATED: list[str] = []
LIMITS: dict[str, Any] = {}


class LimitedDriver(StubDriver):
    """An OpenStack-like cloud: creates what it is asked for (no refusal ever) and answers
    ``ex_limits()`` as libcloud's OpenStack driver does ({'rate': ..., 'absolute': ...})."""

    def list_sizes(self, location: object = None) -> list[NodeSize]:
        return [NodeSize("m5.large", "m5.large", 8192, 0, 0, 0.0, self, extra={"vcpus": 4})]

    def create_node(self, name: str, size: NodeSize, image: NodeImage, **kw: Any) -> Node:
        CREATED.append(name)
        return Node(f"i-{len(CREATED)}", name, NodeState.PENDING, [], [], self)

    def ex_limits(self) -> dict[str, Any]:
        if "raise" in LIMITS:
            raise RuntimeError("401 Unauthorized: token secret-value rejected")
        return {"rate": [], "absolute": dict(LIMITS)}


class PlainDriver(LimitedDriver):
    """The same cloud without ``ex_limits`` (EC2 and the rest): nothing is read."""

    ex_limits = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    CREATED.clear()
    LIMITS.clear()
    before = set(redaction._secrets)
    yield
    for owner in set(redaction._secrets) - before:
        redaction.forget(owner)


async def _one_cycle(driver: type[NodeDriver], replicas: int = 8) -> Outcome:
    reconciler = stub_reconciler(driver)
    body = pool_body(
        driver,
        POOL,
        replicas=replicas,
        instance={"image": "name:image", "flavor": "name:m5.large"},
    )
    return await reconciler.reconcile(pool_ref(POOL), body)


def _loop_block(outcome: Outcome) -> dict[str, Any]:
    [entry] = outcome.status_patch["queues"]
    return dict(entry["closedLoop"])


async def test_the_quota_comes_from_novas_limits_before_any_refusal() -> None:
    # 12 cores left for a 4-vCPU flavor: 3 VMs, though 95 instances are still free.
    LIMITS.update(
        maxTotalInstances=100,
        totalInstancesUsed=5,
        maxTotalCores=40,
        totalCoresUsed=28,
        maxTotalRAMSize=-1,
        totalRAMUsed=4096,
    )
    outcome = await _one_cycle(LimitedDriver)

    assert len(CREATED) == 3, outcome.events
    block = _loop_block(outcome)
    assert block["state"] == "QuotaLimited"
    assert block["message"] == "3 of 8: the cloud's quota allows 3"
    quota = next(c for c in outcome.status_patch["conditions"] if c["type"] == "QuotaLimited")
    assert "3 of 8: the cloud's quota allows 3" in quota["message"]


async def test_a_failed_limits_read_never_fails_the_cycle_nor_says_why_in_status() -> None:
    LIMITS["raise"] = True
    outcome = await _one_cycle(LimitedDriver)

    assert len(CREATED) == 8, outcome.events  # no known quota: the whole demand is asked
    assert _loop_block(outcome)["state"] != "QuotaLimited"
    assert "secret-value" not in repr(outcome.status_patch)
    assert not outcome.status_patch.get("lastError")


async def test_a_driver_without_ex_limits_is_not_limited() -> None:
    LIMITS.update(maxTotalInstances=1, totalInstancesUsed=1)
    outcome = await _one_cycle(PlainDriver)
    assert len(CREATED) == 8, outcome.events


def test_queues_of_different_flavors_on_one_account_get_the_smallest_limit() -> None:
    nova = nova_limits.headroom({"maxTotalInstances": 10, "maxTotalCores": 16})
    reading = NovaReading(nova, (Flavor(vcpus=2), Flavor(vcpus=8)))
    limit = account_limit(reading, ours_live=3, now=NOW)
    assert limit is not None and limit.source == "nova-limits"
    assert limit.limit == 3 + 2  # 16 cores / 8 vCPUs, on top of the 3 CloudPilot runs


def test_an_unknown_flavor_is_bounded_by_the_instance_count_only() -> None:
    nova = nova_limits.headroom({"maxTotalInstances": 10, "totalInstancesUsed": 4})
    limit = account_limit(NovaReading(nova, (Flavor(),)), ours_live=0, now=NOW)
    assert limit is not None and limit.limit == 6


def test_no_limit_nova_enforces_is_no_limit() -> None:
    nova = nova_limits.headroom({"maxTotalInstances": -1, "maxTotalCores": -1})
    assert (
        account_limit(NovaReading(nova, (Flavor(vcpus=2, ram_mb=4096),)), ours_live=1, now=NOW)
        is None
    )


def test_openstack_1_1_reads_limits_on_its_connection_other_drivers_through_ex_limits() -> None:
    # libcloud's ex_limits() is only on the old 1.0 driver: the 1.1/2.0 drivers have none.
    from libcloud.compute.drivers.ec2 import EC2NodeDriver
    from libcloud.compute.drivers.openstack import OpenStack_1_1_NodeDriver

    from cloudpilot.cloud.limits_request import limits_call

    class Answer:
        object = {"limits": {"absolute": {"maxTotalInstances": 4, "totalInstancesUsed": 1}}}

    class Connection:
        paths: list[str] = []

        def request(self, path: str) -> Answer:
            self.paths.append(path)
            return Answer()

    openstack = OpenStack_1_1_NodeDriver(
        "user", "password", ex_force_auth_url="http://127.0.0.1:1", ex_tenant_name="p"
    )
    assert not hasattr(openstack, "ex_limits")
    openstack.connection = Connection()
    call = limits_call(openstack)
    assert call is not None
    assert nova_limits.headroom(call(openstack)).instances == 3  # type: ignore[arg-type]
    assert Connection.paths == ["/limits"]

    LIMITS.update(maxTotalInstances=2)
    stub = LimitedDriver("key")
    stub_call = limits_call(stub)
    assert stub_call is not None and stub_call(stub) == {"rate": [], "absolute": LIMITS}
    assert limits_call(EC2NodeDriver("key", "secret", region="eu-west-1")) is None
    assert limits_call(PlainDriver("key")) is None


def test_a_fresh_lower_limit_learned_from_a_refusal_outweighs_novas_upper_bound() -> None:
    refused = capacity.Headroom(limit=2, learned_at=NOW, source="refusal")
    read = capacity.known(6, NOW, NOVA_SOURCE)
    assert merged(refused, read, NOW) == refused  # not the same refused create every cycle
    stale = NOW + timedelta(seconds=constants.CAPACITY_PROBE_SECONDS)
    assert merged(refused, read, stale) == read  # stale: Nova's reading again
    assert merged(capacity.Headroom(9, NOW, "partial"), read, NOW) == read  # Nova's is lower


def test_a_limit_read_before_is_dropped_when_nova_no_longer_enforces_one() -> None:
    assert merged(capacity.known(4, NOW, NOVA_SOURCE), None, NOW) is None
    refused = capacity.Headroom(limit=2, learned_at=NOW, source="refusal")
    assert merged(refused, None, NOW) == refused
    assert merged(None, capacity.known(4, NOW, NOVA_SOURCE), NOW) == capacity.known(
        4, NOW, NOVA_SOURCE
    )
