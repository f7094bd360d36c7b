"""Facts about keystone + mimic (the OpenStack peer) as seen through libcloud's real driver.

Each test records one behaviour CloudPilot's OpenStack tests rely on. Where mimic differs
from a real Nova, the test asserts mimic's behaviour and says so in its docstring: if a
mimic or libcloud upgrade changes it, the test fails and the note tells what was assumed.
Nothing here waits on elapsed time: mimic's timed transitions are driven by its clock.

Skipped (with the install command) when the peer's venv is missing; failed under CI=true.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sys
from pathlib import Path

import pytest
from libcloud import pricing
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.base import NodeDriver
from libcloud.compute.drivers.openstack import OpenStackNetwork
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

from tests.support.openstack_peer import OpenStackPeer, OpenStackPeerError

try:
    from tests.support.openstack import (
        find_image,
        find_size,
        make_driver,
        openstack_driver,
        openstack_peer,
        openstack_peer_session,
        require_openstack_peer,
        skip_openstack_price_lookups,
    )
except ModuleNotFoundError:  # the repository root is not on sys.path (no conftest adds it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.openstack import (
        find_image,
        find_size,
        make_driver,
        openstack_driver,
        openstack_peer,
        openstack_peer_session,
        require_openstack_peer,
        skip_openstack_price_lookups,
    )

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

# Fixtures imported above are used by name; keep linters from dropping the imports.
__fixtures__ = (openstack_driver, openstack_peer, openstack_peer_session)

CENTOS7 = "CentOS 7 (PVHVM)"
"""One of mimic's canned (Rackspace, 2015) images; ids are random per start, names fixed."""

FLAVOR_1GB = "1GB Standard Instance"
"""One of mimic's canned flavors: id ``3``, 1024 MiB, 1 vCPU, 40 GB."""

POOL_KEY = "cloudpilot.io/pool"

USER_DATA = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo pilot started']\n"


def _create(driver: NodeDriver, name: str, **kwargs: object) -> object:
    return driver.create_node(
        name=name, image=find_image(driver, CENTOS7), size=find_size(driver, FLAVOR_1GB), **kwargs
    )


def test_authenticates_with_keystone_v3_and_uses_the_catalogued_nova(
    openstack_peer: OpenStackPeer, openstack_driver: NodeDriver
) -> None:
    """3.x_password against real keystone; the compute URL comes from keystone's catalogue.

    The catalogue entry was registered with ``$(project_id)s``: keystone substitutes the
    token's project id, which mimic then uses as its tenant.
    """
    openstack_driver.list_sizes()
    connection = openstack_driver.connection
    assert connection.auth_token
    assert connection.get_endpoint() == openstack_peer.compute_url
    assert openstack_peer.compute_url.endswith(f"/v2/{openstack_peer.project_id}")
    assert openstack_peer.compute_url.startswith("http://127.0.0.1:")
    assert openstack_peer.auth_url.startswith("http://127.0.0.1:")


def test_lists_images_and_sizes_and_finds_them_by_name(openstack_driver: NodeDriver) -> None:
    """mimic serves a fixed 2015 Rackspace catalogue: 38 images, 35 flavors."""
    image = find_image(openstack_driver, CENTOS7)
    size = find_size(openstack_driver, FLAVOR_1GB)
    assert len(openstack_driver.list_images()) >= 30
    assert (size.id, size.ram, size.disk, size.vcpus) == ("3", 1024, 40, 1)
    assert openstack_driver.get_image(image.id).name == CENTOS7
    with pytest.raises(LookupError, match="no image"):
        find_image(openstack_driver, "AlmaLinux 9")


def test_list_sizes_reads_the_pricing_file_once_per_flavor_unless_told_not_to(
    openstack_driver: NodeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libcloud 3.9 quirk: no OpenStack prices, so every flavor re-parses pricing.json.

    Counted, not timed: one file lookup per flavor without an ``openstack`` price table,
    none with the (empty) table that :func:`skip_openstack_price_lookups` installs.
    """
    lookups: list[object] = []
    real_lookup = pricing.get_pricing_file_path

    def counting_lookup(file_path: str | None = None) -> str:
        lookups.append(file_path)
        return real_lookup(file_path)

    monkeypatch.setattr(pricing, "get_pricing_file_path", counting_lookup)
    monkeypatch.delitem(pricing.PRICING_DATA["compute"], "openstack", raising=False)
    sizes = openstack_driver.list_sizes()
    assert len(lookups) == len(sizes) >= 30
    assert {size.price for size in sizes} == {0.0}

    lookups.clear()
    skip_openstack_price_lookups()
    sizes = openstack_driver.list_sizes()
    assert lookups == []
    assert {size.price for size in sizes} == {None}


def test_create_list_destroy_round_trip(
    openstack_peer: OpenStackPeer, openstack_driver: NodeDriver
) -> None:
    """Name, image, size, user data and metadata go in; list_nodes shows them; destroy removes.

    Servers are ACTIVE (RUNNING) at once, with mimic's clock at wall time, so ``created_at``
    is "now". Nova never shows user data back: the peer's introspection route does.
    """
    image = find_image(openstack_driver, CENTOS7)
    size = find_size(openstack_driver, FLAVOR_1GB)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    node = openstack_driver.create_node(
        name="pilot-pool1-0001",
        image=image,
        size=size,
        ex_userdata=USER_DATA,
        ex_metadata={POOL_KEY: "pool1", "cloudpilot.io/queue": "default"},
    )
    assert node.state == NodeState.RUNNING

    (listed,) = [n for n in openstack_driver.list_nodes() if n.id == node.id]
    assert listed.name == "pilot-pool1-0001"
    assert listed.state == NodeState.RUNNING
    assert listed.extra["metadata"] == {POOL_KEY: "pool1", "cloudpilot.io/queue": "default"}
    assert listed.extra["imageId"] == image.id
    assert listed.extra["flavorId"] == size.id
    assert listed.extra["tenantId"] == openstack_peer.project_id
    assert before <= listed.created_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)

    sent = openstack_peer.server_creation_request(node.id)["server"]
    assert base64.b64decode(sent["user_data"]).decode() == USER_DATA

    assert openstack_driver.destroy_node(node) is True
    assert node.id not in {n.id for n in openstack_driver.list_nodes()}
    assert openstack_driver.ex_get_node_details(node.id) is None
    with pytest.raises(BaseHTTPError, match="Instance could not be found") as second:
        openstack_driver.destroy_node(node)
    assert second.value.code == 404


def test_wrong_credentials_raise_invalid_creds(openstack_peer: OpenStackPeer) -> None:
    """keystone answers 401 for a wrong password, unknown user or unknown project alike.

    libcloud turns each into ``InvalidCredsError('Invalid credentials with the provider')``
    on the first API call (the driver authenticates lazily, not in its constructor).
    """
    driver = make_driver(openstack_peer, password="not-the-password")
    with pytest.raises(InvalidCredsError, match="Invalid credentials with the provider"):
        driver.list_nodes()

    options = openstack_peer.driver_options() | {"ex_tenant_name": "no-such-project"}
    driver = type(driver)(*openstack_peer.credentials, **options)
    with pytest.raises(InvalidCredsError):
        driver.list_nodes()


def test_unknown_region_has_no_endpoint(openstack_peer: OpenStackPeer) -> None:
    """Authentication works, but the catalogue has no compute endpoint in that region."""
    options = openstack_peer.driver_options() | {"ex_force_service_region": "Elsewhere"}
    driver = type(make_driver(openstack_peer))(*openstack_peer.credentials, **options)
    with pytest.raises(LibcloudError, match="Could not find specified endpoint"):
        driver.list_nodes()


def test_control_plane_stops_or_breaks_a_running_server(
    openstack_peer: OpenStackPeer, openstack_driver: NodeDriver
) -> None:
    """mimic cannot stop a server through Nova, but its control API can set any status.

    ``SHUTOFF`` is how a test simulates a pilot VM that halted itself (phase ``Done``);
    ``ERROR`` a VM that failed; an unknown status maps to UNKNOWN.
    """
    node = _create(openstack_driver, "pilot-halts")
    for status, state in (
        ("SHUTOFF", NodeState.STOPPED),
        ("ERROR", NodeState.ERROR),
        ("MIGRATING", NodeState.UNKNOWN),
        ("ACTIVE", NodeState.RUNNING),
    ):
        openstack_peer.set_server_status(node.id, status)
        (listed,) = openstack_driver.list_nodes()
        assert (listed.state, listed.extra["vm_state"]) == (state, status)
    with pytest.raises(OpenStackPeerError, match="400"):
        openstack_peer.set_server_status("no-such-server", "ERROR")


def test_creation_rules_make_error_and_building_servers(
    openstack_peer: OpenStackPeer, openstack_driver: NodeDriver
) -> None:
    """Rules by name pattern: ``error`` gives an ERROR server, ``build`` a PENDING one.

    ``build`` turns ACTIVE after ``duration`` seconds of mimic's clock; advancing the clock
    finishes it without waiting. Unmatched names are created normally.
    """
    openstack_peer.add_creation_behavior("error", name_pattern="broken-")
    openstack_peer.add_creation_behavior(
        "build", name_pattern="slow-", parameters={"duration": 600}
    )
    broken = _create(openstack_driver, "broken-1")
    slow = _create(openstack_driver, "slow-1")
    fine = _create(openstack_driver, "fine-1")
    states = {n.name: n.state for n in openstack_driver.list_nodes()}
    assert states == {
        "broken-1": NodeState.ERROR,
        "slow-1": NodeState.PENDING,
        "fine-1": NodeState.RUNNING,
    }
    assert (broken.state, slow.state, fine.state) == (
        NodeState.ERROR,
        NodeState.PENDING,
        NodeState.RUNNING,
    )

    openstack_peer.advance_clock(600)
    (slow_now,) = [n for n in openstack_driver.list_nodes() if n.name == "slow-1"]
    assert slow_now.state == NodeState.RUNNING


def test_creation_rules_make_create_calls_fail(
    openstack_peer: OpenStackPeer, openstack_driver: NodeDriver
) -> None:
    """``fail`` answers the create call with any code and message, and creates nothing.

    libcloud raises ``BaseHTTPError`` with ``.code`` and the message (a quota refusal is a
    403 with Nova's ``forbidden`` body). ``false-negative`` fails the same way *and* creates
    the server: what an operator must survive after a timed-out create.
    """
    quota = "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"
    rule = openstack_peer.add_creation_behavior(
        "fail", parameters={"code": 403, "type": "forbidden", "message": quota}
    )
    with pytest.raises(BaseHTTPError, match="Quota exceeded") as refused:
        _create(openstack_driver, "pilot-over-quota")
    assert refused.value.code == 403
    assert openstack_driver.list_nodes() == []

    openstack_peer.remove_creation_behavior(rule)
    openstack_peer.add_creation_behavior("false-negative", parameters={"code": 500})
    with pytest.raises(BaseHTTPError) as failed:
        _create(openstack_driver, "pilot-ghost")
    assert failed.value.code == 500
    assert [n.name for n in openstack_driver.list_nodes()] == ["pilot-ghost"]


def test_mimic_reacts_to_magic_metadata_keys(
    openstack_peer: OpenStackPeer, openstack_driver: NodeDriver
) -> None:
    """mimic reads behaviour from *metadata*: never use these keys for real data.

    ``server_error`` → created in ERROR; ``server_building: <seconds>`` → BUILD;
    ``delete_server_failure: {"times": N}`` → the next N deletes answer 500 with an empty
    body, which libcloud 3.9's OpenStack error parser does not survive: it raises
    ``AttributeError`` (``'NoneType' object has no attribute 'values'``), not a
    ``BaseHTTPError``. Code that destroys VMs must therefore catch broadly.
    """
    errored = _create(openstack_driver, "meta-error", ex_metadata={"server_error": "1"})
    assert errored.state == NodeState.ERROR
    building = _create(openstack_driver, "meta-build", ex_metadata={"server_building": "30"})
    assert building.state == NodeState.PENDING

    sticky = _create(
        openstack_driver,
        "meta-sticky",
        ex_metadata={"delete_server_failure": json.dumps({"times": 1})},
    )
    with pytest.raises(AttributeError):
        openstack_driver.destroy_node(sticky)
    assert openstack_driver.destroy_node(sticky) is True


def test_what_mimic_does_not_do(
    openstack_peer: OpenStackPeer, openstack_driver: NodeDriver
) -> None:
    """Gaps between mimic and a real Nova, each pinned so that a change is noticed.

    * no stop/start (``os-stop``/``os-start`` actions): 400 "no such action";
    * no security groups: 404. Networks are the peer's own (Nova's ``os-networks`` proxy
      and Neutron's ``/v2.0/networks``, empty until a test adds some); ``networks=`` on
      create is accepted and not checked against them (it is only recorded);
    * ``ex_config_drive`` is accepted (sent as the string ``"True"``) and not shown back;
    * no validation of image or flavor references, no user-data size limit (real Nova
      refuses more than 65535 bytes of base64), no quotas unless a rule injects them;
    * metadata *is* validated: values must be strings (400), at most 40 items (403).
    """
    node = _create(openstack_driver, "gaps")
    with pytest.raises(BaseHTTPError, match="no such action") as stop:
        openstack_driver.ex_stop_node(node)
    assert stop.value.code == 400
    assert openstack_driver.ex_list_networks() == []
    with pytest.raises(BaseHTTPError) as groups:
        openstack_driver.ex_list_security_groups()
    assert groups.value.code == 404

    network = OpenStackNetwork("net-0001", "private", None, openstack_driver)
    wired = _create(openstack_driver, "wired", networks=[network], ex_config_drive=True)
    sent = openstack_peer.server_creation_request(wired.id)["server"]
    assert sent["networks"] == [{"uuid": "net-0001"}]
    assert sent["config_drive"] == "True"
    assert wired.extra["config_drive"] is False

    huge = _create(openstack_driver, "huge-user-data", ex_userdata="x" * 100_000)
    assert huge.state == NodeState.RUNNING

    with pytest.raises(BaseHTTPError, match="not a string") as not_string:
        _create(openstack_driver, "bad-metadata", ex_metadata={"count": 1})
    assert not_string.value.code == 400
    with pytest.raises(BaseHTTPError, match="exceeds 40") as too_many:
        _create(openstack_driver, "much-metadata", ex_metadata={f"k{i}": "v" for i in range(41)})
    assert too_many.value.code == 403


def test_peer_is_unavailable_without_its_python() -> None:
    """A missing peer python fails fast with the fix in the message, starting nothing."""
    peer = OpenStackPeer(python="/nonexistent/python")
    with pytest.raises(OpenStackPeerError, match="not installed"):
        peer.start()
    assert peer.pids == {}
    with pytest.raises(OpenStackPeerError, match="not running"):
        peer.driver_options()


def test_own_peer_with_manual_clock_stops_every_process() -> None:
    """A second, private peer: the ``manual`` clock, and nothing left behind on exit.

    With ``clock="manual"`` mimic's time stands still, so a BUILD lasts until the test
    advances the clock, whatever the machine's speed. The password starts with "-" (as
    random ones sometimes do), which keystone-manage's argument parser must not take for
    an option.
    """
    require_openstack_peer()
    with OpenStackPeer(clock="manual", password="-looks-like-an-option") as peer:
        pids = peer.pids
        workdir = peer.workdir
        assert workdir is not None
        assert {"keystone", "mimic"} <= set(peer.logs())
        driver = make_driver(peer)
        peer.add_creation_behavior("build", parameters={"duration": 5})
        node = _create(driver, "pilot-building")
        assert node.state == NodeState.PENDING
        peer.advance_clock(4.9)
        assert driver.list_nodes()[0].state == NodeState.PENDING
        peer.advance_clock(0.2)
        assert driver.list_nodes()[0].state == NodeState.RUNNING
        assert set(pids) == {"keystone", "mimic"}
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert peer.pids == {}
    assert peer.logs() == {}
    assert not workdir.exists()


def test_networks_through_nova_and_neutron_and_tokens_checked(
    openstack_peer: OpenStackPeer,
) -> None:
    """The peer's networks, as libcloud's 1.1 driver (Nova's ``os-networks`` proxy) and its
    2.0 driver (Neutron, found as type ``network`` in keystone's catalogue) see them; and
    Nova refuses a token keystone never issued (401, Nova's body)."""
    skip_openstack_price_lookups()
    public = openstack_peer.add_network("my_public_net")
    openstack_peer.add_network("my_private_net")
    user, password = openstack_peer.credentials
    cls = get_driver(Provider.OPENSTACK)  # the factory: api_version picks the class
    nova_side = cls(user, password, **openstack_peer.seed_driver_options())
    neutron_side = cls(user, password, **openstack_peer.neutron_driver_options())
    for driver in (nova_side, neutron_side):
        listed = {n.name: n.id for n in driver.ex_list_networks()}
        assert listed == {"my_public_net": public, "my_private_net": listed["my_private_net"]}
        assert driver.ex_get_network(public).name == "my_public_net"
    stats = openstack_peer.stats()
    assert (stats["nova_network_lists"], stats["network_lists"]) == (1, 1)
    assert neutron_side.network_connection.get_endpoint() == openstack_peer.network_url

    forged = cls(
        user,
        password,
        ex_force_auth_url=openstack_peer.auth_url,
        ex_force_auth_token="forged",
        ex_force_base_url=openstack_peer.compute_url,
    )
    with pytest.raises(BaseHTTPError, match="requires authentication") as refused:
        forged.list_nodes()
    assert refused.value.code == 401
