"""Nova's ``GET /limits`` feeds the closed loop (issue 13 / issue 16 part 5): the real
operator and libcloud's real OpenStack driver (3.x_password against real keystone) in front
of mimic's Nova, whose ``/limits`` the peer answers with a quota the test sets and the
project's live servers as in use. mimic itself never refuses a create for quota, so a pool
held below its replicas can only have learned the quota from ``/limits``."""

from __future__ import annotations

from typing import Any

from cloudpilot import naming
from tests.support.kube import wait_for
from tests.support.openstack import make_driver
from tests.support.openstack_peer import OpenStackPeer
from tests.support.stack import Stack


def _servers(driver: Any, pool: str, namespace: str) -> list[Any]:
    prefix = naming.pool_prefix(namespace, pool)
    return [n for n in driver.list_nodes() if n.name.startswith(prefix)]


def _loop(status: dict[str, Any]) -> dict[str, Any]:
    queues = status.get("queues") or [{}]
    return dict(queues[0].get("closedLoop") or {})


def test_novas_limits_hold_the_pool_to_its_quota_and_a_raised_quota_lets_it_grow(
    stack: Stack, openstack_peer: OpenStackPeer
) -> None:
    # 5 instances allowed, 2 taken by something else: 3 left for CloudPilot.
    openstack_peer.set_limits(maxTotalInstances=5, other_instances=2)
    driver = make_driver(openstack_peer)
    flavor = driver.list_sizes()[0]
    user, password = openstack_peer.credentials
    stack.create_secret("openstack-credentials", {"key": user, "secret": password})
    stack.apply_pool(
        "limited",
        cloudType="OPENSTACK",
        driver=openstack_peer.driver_options(),
        credentialsSecret={"name": "openstack-credentials"},
        instance={"image": f"name:{driver.list_images()[0].name}", "flavor": f"name:{flavor.name}"},
        replicas=8,
    )
    status = stack.wait_status(
        "limited",
        lambda s: _loop(s).get("state") == "QuotaLimited" and s,
        what="the loop QuotaLimited",
    )
    assert _loop(status)["message"] == "3 of 8: the cloud's quota allows 3"
    quota = stack.condition("limited", "QuotaLimited")
    assert quota is not None and "3 of 8" in quota["message"]
    # Two more reads of /limits (two more cycles): still 3, and nothing was ever refused.
    reads = openstack_peer.stats()["limit_reads"]
    wait_for(lambda: openstack_peer.stats()["limit_reads"] >= reads + 2, 60, message="2 more reads")
    assert len(_servers(driver, "limited", stack.namespace)) == 3
    assert not [e for e in stack.events() if e.reason == "QuotaExceeded"]

    openstack_peer.set_limits(maxTotalInstances=10)  # the site raised the quota
    wait_for(
        lambda: len(_servers(driver, "limited", stack.namespace)) == 8,
        60,
        message="8 servers once the quota allows them",
    )
    stack.wait_status(
        "limited", lambda s: _loop(s).get("state") != "QuotaLimited", what="no longer limited"
    )
    stack.delete_pool("limited")
    wait_for(lambda: stack.pool("limited") is None, 60, message="pool gone")
