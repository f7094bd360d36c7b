"""An OpenStack pool end to end: the seed's own cloud type. The real operator, libcloud's
real OpenStack driver with 3.x_password authentication against real keystone, in front of
mimic's Nova API, all on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from cloudpilot import constants, naming
from tests.support.kube import wait_for
from tests.support.openstack import make_driver
from tests.support.openstack_peer import OpenStackPeer
from tests.support.stack import Stack


def _servers(driver: Any, pool: str, namespace: str) -> list[Any]:
    prefix = naming.pool_prefix(namespace, pool)
    return [n for n in driver.list_nodes() if n.name.startswith(prefix)]


def test_openstack_pool_converges_replaces_a_halted_vm_and_cleans_up(
    stack: Stack, openstack_peer: OpenStackPeer
) -> None:
    driver = make_driver(openstack_peer)
    image = driver.list_images()[0]
    flavor = driver.list_sizes()[0]
    user, password = openstack_peer.credentials
    stack.create_secret("openstack-credentials", {"key": user, "secret": password})
    stack.apply_pool(
        "cloudprov",
        ce="cloudprov.mysite.example",
        cloudType="openstack",  # any case, as the seed's CloudType
        driver=openstack_peer.driver_options(),
        credentialsSecret={"name": "openstack-credentials"},
        instance={
            "image": f"name:{image.name}",
            "flavor": f"name:{flavor.name}",
            "sshKey": "mysshkey",
        },
        replicas=2,
        # The peer's servers cannot be aged: this test means the open loop (a halted VM is
        # replaced at once); the closed loop's holds are tested on moto.
        closedLoop={"enabled": False},
    )
    servers = wait_for(
        lambda: (
            (found := _servers(driver, "cloudprov", stack.namespace)) and len(found) == 2 and found
        ),
        60,
        message="2 servers in Nova",
    )
    for server in servers:
        assert server.extra["metadata"][constants.TAG_POOL] == f"{stack.namespace}/cloudprov"
        assert server.extra["imageId"] == image.id
        assert server.extra["flavorId"] == flavor.id
    stack.wait_status("cloudprov", lambda s: s.get("running") == 2, what="2 running")

    halted = servers[0].id
    openstack_peer.set_server_status(halted, "SHUTOFF")  # the pilot ended; the VM halted
    wait_for(
        lambda: (
            (ids := {n.id for n in _servers(driver, "cloudprov", stack.namespace)})
            and halted not in ids
            and len(ids) == 2
        ),
        60,
        message="the halted server replaced",
    )

    stack.delete_pool("cloudprov")
    wait_for(lambda: stack.pool("cloudprov") is None, 60, message="pool gone")
    assert _servers(driver, "cloudprov", stack.namespace) == []


def test_a_server_in_error_is_deleted_as_failed(
    stack: Stack, openstack_peer: OpenStackPeer
) -> None:
    driver = make_driver(openstack_peer)
    user, password = openstack_peer.credentials
    stack.create_secret("openstack-credentials", {"key": user, "secret": password})
    stack.apply_pool(
        "flaky",
        cloudType="OPENSTACK",
        driver=openstack_peer.driver_options(),
        credentialsSecret={"name": "openstack-credentials"},
        instance={"image": driver.list_images()[0].id, "flavor": driver.list_sizes()[0].id},
        replicas=1,
    )
    (server,) = wait_for(lambda: _servers(driver, "flaky", stack.namespace), 60, message="a server")
    openstack_peer.set_server_status(server.id, "ERROR")
    wait_for(
        lambda: any(
            e.reason == "Deleted" and server.id in e.message and "VMFailed" in e.message
            for e in stack.events()
        ),
        60,
        message="the failed server deleted with reason VMFailed",
    )
