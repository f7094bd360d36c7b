"""The seed's own OpenStack example, end to end: DIRAC CS -> ``import-dirac-cfg`` -> the
pool -> what Nova received. The real operator and libcloud's real OpenStack driver, with the
seed's driver options (``3.x_password``, a tenant name, no forced service type), against
real keystone, mimic's Nova and the peer's Neutron, all on 127.0.0.1.

Only the image and flavor names change: mimic's catalogue has no
``CentOS-7-x86_64-GenericCloud-1905`` nor ``m1.medium``, so the pool names a CentOS 7 image
and a flavor mimic has. Everything else is what the import wrote.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cloudpilot import dirac_import, naming
from tests.support.kube import wait_for
from tests.support.openstack import find_image, find_size, make_driver
from tests.support.openstack_peer import OpenStackPeer
from tests.support.pilot import decode_user_data, stamp_on_vm
from tests.support.stack import Stack

SEED_CFG = Path(__file__).resolve().parents[1] / "unit" / "dirac_cfg" / "seed_example.cfg"
MIMIC_CENTOS7 = "name:CentOS 7 (PVHVM)"
MIMIC_FLAVOR = "name:1GB Standard Instance"


def _servers(driver: Any, pool: str, namespace: str) -> list[Any]:
    prefix = naming.pool_prefix(namespace, pool)
    return [n for n in driver.list_nodes() if n.name.startswith(prefix)]


def _imported_spec(peer: OpenStackPeer) -> dict[str, Any]:
    (conversion,) = dirac_import.convert(dirac_import.load_cfg(SEED_CFG.read_text()))
    spec: dict[str, Any] = conversion.pool["spec"]
    assert spec["driver"]["ex_force_auth_version"] == "3.x_password"
    spec["driver"] = peer.seed_driver_options()
    spec["instance"]["image"] = MIMIC_CENTOS7
    spec["instance"]["flavor"] = MIMIC_FLAVOR
    spec["credentialsSecret"] = {"name": "openstack-credentials"}
    return spec


def test_the_seed_example_reaches_nova_as_written(
    stack: Stack, openstack_peer: OpenStackPeer
) -> None:
    public = openstack_peer.add_network("my_public_net")
    private = openstack_peer.add_network("my_private_net")
    openstack_peer.add_network("someone_elses_net")
    stack.create_secret(
        "openstack-credentials",
        dict(zip(("key", "secret"), openstack_peer.credentials, strict=True)),
    )
    spec = _imported_spec(openstack_peer)
    assert spec["instance"]["createOptions"] == {"ex_config_drive": True}
    assert spec["context"] == {"templateFamily": "centos7"}
    spec["replicas"] = 2
    stack.apply_pool("cloudprov", **spec)

    driver = make_driver(openstack_peer)
    servers = wait_for(
        lambda: (
            (found := _servers(driver, "cloudprov", stack.namespace)) and len(found) == 2 and found
        ),
        60,
        message="2 servers in Nova",
    )
    status = stack.wait_status(
        "cloudprov", lambda s: len(s.get("instances", [])) == 2 and s, what="2 instances"
    )
    recorded = {i["id"]: i for i in status["instances"]}
    stamps = set()
    for server in servers:
        sent = openstack_peer.server_creation_request(server.id)["server"]
        assert sent["key_name"] == "mysshkey"
        assert sent["config_drive"] == "True"  # libcloud sends str(True)
        assert sent["networks"] == [{"uuid": public}, {"uuid": private}]
        payload = base64.b64decode(sent["user_data"])
        assert "yum" in decode_user_data(payload)  # the CentOS 7 template, not EL9's dnf
        reference, stamp = stamp_on_vm(payload, server.id)
        assert reference == f"cloud://{server.id}"
        assert recorded[server.id]["pilotReference"] == reference
        assert recorded[server.id]["pilotStamp"] == stamp == naming.pilot_stamp(server.id)
        stamps.add(stamp)
    assert len(stamps) == 2  # one user data, a stamp of its own on each VM
    # libcloud's default (1.1) driver lists networks through Nova's os-networks proxy: each
    # name once, then the operator's cache.
    assert 1 <= openstack_peer.stats()["nova_network_lists"] <= 2


def test_raw_network_ids_are_not_looked_up_and_an_ambiguous_name_is_refused(
    stack: Stack, openstack_peer: OpenStackPeer
) -> None:
    raw = openstack_peer.add_network("by_id_net")
    first = openstack_peer.add_network("dup_net")
    second = openstack_peer.add_network("dup_net")
    stack.create_secret(
        "openstack-credentials",
        dict(zip(("key", "secret"), openstack_peer.credentials, strict=True)),
    )
    driver = make_driver(openstack_peer)
    spec = _imported_spec(openstack_peer)
    # libcloud's 2.0 driver asks Neutron itself; it would ask Glance for a name: image,
    # which the peer has not, so image and flavor are raw ids (no lookup either).
    spec["driver"] = openstack_peer.neutron_driver_options()
    spec["instance"]["image"] = find_image(driver, MIMIC_CENTOS7.removeprefix("name:")).id
    spec["instance"]["flavor"] = find_size(driver, MIMIC_FLAVOR.removeprefix("name:")).id
    spec["instance"]["networks"] = [raw]
    spec["replicas"] = 1
    stack.apply_pool("byid", **spec)

    (server,) = wait_for(lambda: _servers(driver, "byid", stack.namespace), 60, message="a server")
    sent = openstack_peer.server_creation_request(server.id)["server"]
    assert sent["networks"] == [{"uuid": raw}]
    assert openstack_peer.stats()["network_lists"] == 0
    assert openstack_peer.stats()["nova_network_lists"] == 0

    spec["instance"]["networks"] = ["name:dup_net"]
    stack.apply_pool("ambiguous", **spec)
    ready = wait_for(
        lambda: (
            (c := stack.condition("ambiguous", "Ready"))
            and "matches 2 networks" in c.get("message", "")
            and c
        ),
        60,
        message="the ambiguous network name in the Ready condition",
    )
    assert ready["status"] == "False"
    assert first in ready["message"] and second in ready["message"]
    assert _servers(driver, "ambiguous", stack.namespace) == []
    assert openstack_peer.stats()["network_lists"] >= 1  # this time Neutron was asked
