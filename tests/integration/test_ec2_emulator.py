"""Facts about moto + libcloud's EC2 driver that CloudPilot relies on, and the dev tools.

Each test records one behaviour of the emulated EC2 API as seen through libcloud's real EC2
driver (cloudpilot_devtools.moto_ec2). Where moto differs from AWS, the test asserts moto's
behaviour and says so: if a moto upgrade changes it, the test fails and the note tells what
the operator's tests assumed. No assertion here depends on elapsed time.
"""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import NodeImage
from libcloud.compute.drivers.ec2 import NAMESPACE, EC2NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState
from libcloud.utils.xml import findall

from cloudpilot_devtools.ec2_emulator import DEFAULT_AMIS, EC2Emulator
from cloudpilot_devtools.latency_proxy import EC2_USER_DATA_LIMIT, LatencyProxy
from cloudpilot_devtools.moto_ec2 import MOTO_EC2_PROVIDER, MotoEC2NodeDriver, register

try:
    from tests.support.ec2 import (
        describe_user_data,
        ec2,
        ec2_driver,
        ec2_emulator_session,
        ec2_proxy,
        find_image,
        make_size,
        proxied_driver,
        terminate_many,
    )
except ModuleNotFoundError:  # the repository root is not on sys.path (no conftest adds it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.ec2 import (
        describe_user_data,
        ec2,
        ec2_driver,
        ec2_emulator_session,
        ec2_proxy,
        find_image,
        make_size,
        proxied_driver,
        terminate_many,
    )

pytestmark = pytest.mark.timeout(120)

# Fixtures imported above are used by name; keep linters from dropping the imports.
__fixtures__ = (ec2, ec2_driver, ec2_emulator_session, ec2_proxy, proxied_driver)

POOL_TAG = "cloudpilot.io/pool"
ALMA9 = "AlmaLinux-9-GenericCloud-9.4-x86_64"
ROCKY9 = "Rocky-9-GenericCloud-Base-9.4"
CENTOS7 = "CentOS-7-x86_64-GenericCloud-1905"


def _image(driver: MotoEC2NodeDriver, index: int = 0) -> NodeImage:
    return NodeImage(DEFAULT_AMIS[index]["ami_id"], DEFAULT_AMIS[index]["name"], driver)


# --------------------------------------------------------------------------- emulator


def test_endpoint_is_loopback_and_driver_options_are_complete(ec2: EC2Emulator) -> None:
    host, port = ec2.endpoint
    assert host == "127.0.0.1"
    assert port > 0
    key, secret = ec2.credentials
    assert key and secret
    assert ec2.driver_options() == {
        "region": "us-east-1",
        "host": host,
        "port": port,
        "secure": False,
        "signature_version": "4",
    }


def test_second_emulator_in_same_process_is_refused(ec2: EC2Emulator) -> None:
    """moto's state is process-global: two emulators would share and reset each other."""
    with pytest.raises(RuntimeError, match="already running"):
        EC2Emulator().start()
    assert ec2.endpoint  # the running one is untouched


def test_small_ami_catalogue_and_name_filters(ec2_driver: MotoEC2NodeDriver) -> None:
    names = sorted(image.name for image in ec2_driver.list_images())
    assert names == sorted(ami["name"] for ami in DEFAULT_AMIS)
    for name in (ALMA9, ROCKY9, CENTOS7):
        image = find_image(ec2_driver, name)  # DescribeImages with Filter name=...
        assert image.name == name
        assert image.id.startswith("ami-")
    # moto implements EC2's '*' wildcards in filter values, and several filters at once.
    alma9 = ec2_driver.list_images(ex_filters={"name": "AlmaLinux-9-*"})
    assert {i.name for i in alma9} == {ALMA9, "AlmaLinux-9-GenericCloud-9.4-aarch64"}
    arm = ec2_driver.list_images(ex_filters={"name": "AlmaLinux-9-*", "architecture": "arm64"})
    assert [i.name for i in arm] == ["AlmaLinux-9-GenericCloud-9.4-aarch64"]
    assert ec2_driver.list_images(ex_filters={"name": "no-such-image"}) == []
    by_id = ec2_driver.list_images(ex_image_ids=[DEFAULT_AMIS[0]["ami_id"]])
    assert [i.name for i in by_id] == [DEFAULT_AMIS[0]["name"]]


def test_ami_catalogue_robust_to_moto_imported_first_and_clean_stop() -> None:
    """In a fresh interpreter: moto's EC2 models imported (and a region backend with the
    default ~1300 AMIs built) *before* the emulator starts. MOTO_AMIS_PATH alone would come
    too late; the emulator still serves its small catalogue. After stop: env and moto's
    AMIS restored, no thread left, port closed."""
    script = textwrap.dedent(
        """
        import json, os, socket, threading
        os.environ.pop("MOTO_AMIS_PATH", None)
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends
        import moto.ec2.models.amis as moto_amis
        before = len(ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].amis)
        original_amis = moto_amis.AMIS
        from cloudpilot_devtools.ec2_emulator import EC2Emulator
        from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver
        with EC2Emulator() as ec2:
            driver = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())
            images = len(driver.list_images())
            driver.list_nodes()
            endpoint = ec2.endpoint
            env_inside = "MOTO_AMIS_PATH" in os.environ
        try:
            socket.create_connection(endpoint, timeout=5).close()
            port_closed = False
        except ConnectionRefusedError:
            port_closed = True
        print(json.dumps({
            "before": before,
            "images": images,
            "env_inside": env_inside,
            "env_after": "MOTO_AMIS_PATH" in os.environ,
            "amis_restored": moto_amis.AMIS is original_amis,
            "threads": [t.name for t in threading.enumerate()],
            "port_closed": port_closed,
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MOTO_AMIS_PATH"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=90
    )
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["before"] > 1000  # moto's default catalogue
    assert facts["images"] == len(DEFAULT_AMIS)
    assert facts["env_inside"] is True
    assert facts["env_after"] is False
    assert facts["amis_restored"] is True
    assert facts["threads"] == ["MainThread"]
    assert facts["port_closed"] is True


def test_reset_wipes_state(ec2: EC2Emulator, ec2_driver: MotoEC2NodeDriver) -> None:
    ec2_driver.create_node(name="n", image=_image(ec2_driver), size=make_size(ec2_driver))
    assert len(ec2_driver.list_nodes()) == 1
    ec2.reset()
    assert ec2_driver.list_nodes() == []
    assert len(ec2_driver.list_images()) == len(DEFAULT_AMIS)  # catalogue reloaded


# --------------------------------------------------------------------------- driver


def test_driver_registration_and_dotted_path() -> None:
    assert register() == MOTO_EC2_PROVIDER
    assert register() == MOTO_EC2_PROVIDER  # idempotent
    assert get_driver(MOTO_EC2_PROVIDER) is MotoEC2NodeDriver
    module, _, name = "cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver".rpartition(".")
    assert getattr(importlib.import_module(module), name) is MotoEC2NodeDriver


def test_plain_libcloud_driver_is_blind_to_moto(ec2: EC2Emulator) -> None:
    """Why MotoEC2NodeDriver exists: with moto's namespace (no trailing slash) libcloud's
    own driver parses every list as empty and error messages as empty strings."""
    driver = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())
    driver.create_node(name="n", image=_image(driver), size=make_size(driver))
    plain = EC2NodeDriver(*ec2.credentials, **ec2.driver_options())
    assert plain.list_nodes() == []
    assert plain.list_images() == []
    with pytest.raises(BaseHTTPError) as err:
        plain.list_nodes(ex_node_ids=["i-0123456789abcdef0"])
    assert str(err.value) == ""
    assert len(driver.list_nodes()) == 1


def test_error_codes_are_readable(ec2_driver: MotoEC2NodeDriver) -> None:
    with pytest.raises(BaseHTTPError, match=r"^InvalidInstanceID\.NotFound: ") as err:
        ec2_driver.list_nodes(ex_node_ids=["i-0123456789abcdef0"])
    assert err.value.code == 400
    with pytest.raises(BaseHTTPError, match=r"^InvalidAMIID\.Malformed: "):
        ec2_driver.list_images(ex_image_ids=["not-an-ami"])


def test_create_node_by_image_name_with_tags_and_user_data(
    ec2_driver: MotoEC2NodeDriver,
) -> None:
    image = find_image(ec2_driver, ROCKY9)
    node = ec2_driver.create_node(
        name="pilot-1",
        image=image,
        size=make_size(ec2_driver, "t3.large"),
        ex_userdata="#cloud-config\n{}\n",
        ex_metadata={POOL_TAG: "lhcb-a", "cloudpilot.io/queue": "q1"},
    )
    # RunInstances answers "pending"; moto's instance is "running" from the next describe.
    assert node.state == NodeState.PENDING
    assert node.extra["tags"] == {
        "Name": "pilot-1",
        POOL_TAG: "lhcb-a",
        "cloudpilot.io/queue": "q1",
    }
    [listed] = ec2_driver.list_nodes()
    assert listed.id == node.id
    assert listed.name == "pilot-1"
    assert listed.state == NodeState.RUNNING
    assert listed.extra["tags"] == node.extra["tags"]
    assert listed.extra["image_id"] == image.id
    assert listed.extra["instance_type"] == "t3.large"
    assert isinstance(listed.created_at, dt.datetime)
    assert listed.created_at.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - listed.created_at) < dt.timedelta(minutes=5)


def test_unknown_ami_id_is_accepted_by_run_instances(ec2_driver: MotoEC2NodeDriver) -> None:
    """moto does not validate ImageId on RunInstances (MOTO_ENABLE_AMI_VALIDATION is off and
    read at import); AWS answers InvalidAMIID.NotFound. Image resolution must therefore be
    tested through DescribeImages (find_image), not through RunInstances failing."""
    fake = NodeImage("ami-0123456789abcdef0", "nope", ec2_driver)
    node = ec2_driver.create_node(name="x", image=fake, size=make_size(ec2_driver))
    assert node.id.startswith("i-")


def test_batch_create_is_one_run_instances_call(
    proxied_driver: MotoEC2NodeDriver, ec2_proxy: LatencyProxy
) -> None:
    nodes = proxied_driver.create_node(
        name="pilot",
        image=_image(proxied_driver),
        size=make_size(proxied_driver),
        ex_mincount=4,
        ex_maxcount=4,
        ex_metadata={POOL_TAG: "batch"},
    )
    assert isinstance(nodes, list)  # libcloud returns a list when MaxCount > 1
    assert len({n.id for n in nodes}) == 4
    assert ec2_proxy.counts == {"RunInstances": 1}
    listed = proxied_driver.list_nodes()
    assert len(listed) == 4
    # All share the Name tag: node names are not unique in a batch.
    assert all(n.extra["tags"] == {"Name": "pilot", POOL_TAG: "batch"} for n in listed)


def test_list_nodes_tag_filter_works_server_side(
    proxied_driver: MotoEC2NodeDriver, ec2_proxy: LatencyProxy
) -> None:
    size, image = make_size(proxied_driver), _image(proxied_driver)
    proxied_driver.create_node(
        name="a", image=image, size=size, ex_metadata={POOL_TAG: "a"}, ex_mincount=2, ex_maxcount=2
    )
    proxied_driver.create_node(name="b", image=image, size=size, ex_metadata={POOL_TAG: "b"})
    ec2_proxy.reset_counts()
    in_a = proxied_driver.list_nodes(ex_filters={f"tag:{POOL_TAG}": "a"})
    assert sorted(n.name for n in in_a) == ["a", "a"]
    # Filter on the tag key alone, and on state.
    tagged = proxied_driver.list_nodes(ex_filters={"tag-key": POOL_TAG})
    assert len(tagged) == 3
    running = proxied_driver.list_nodes(ex_filters={"instance-state-name": "running"})
    assert len(running) == 3
    assert proxied_driver.list_nodes(ex_filters={f"tag:{POOL_TAG}": "zzz"}) == []
    # list_nodes costs two API calls when it finds nodes (libcloud also fetches Elastic IPs),
    # one when it finds none.
    assert ec2_proxy.counts == {"DescribeInstances": 4, "DescribeAddresses": 3}


def test_batch_terminate_in_one_request(
    proxied_driver: MotoEC2NodeDriver, ec2_proxy: LatencyProxy
) -> None:
    nodes = proxied_driver.create_node(
        name="p",
        image=_image(proxied_driver),
        size=make_size(proxied_driver),
        ex_mincount=3,
        ex_maxcount=3,
    )
    keep = proxied_driver.create_node(
        name="keep", image=_image(proxied_driver), size=make_size(proxied_driver)
    )
    ec2_proxy.reset_counts()
    ids = [n.id for n in nodes]
    # The exact request (see tests/support/ec2.py terminate_many):
    params = {"Action": "TerminateInstances"}
    params.update({f"InstanceId.{i}": node_id for i, node_id in enumerate(ids, 1)})
    result = proxied_driver.connection.request(proxied_driver.path, params=params).object
    assert ec2_proxy.counts == {"TerminateInstances": 1}
    items = findall(element=result, xpath="instancesSet/item", namespace=NAMESPACE)
    states = {
        item.findtext(f"{{{NAMESPACE}}}instanceId"): item.findtext(
            f"{{{NAMESPACE}}}currentState/{{{NAMESPACE}}}name"
        )
        for item in items
    }
    assert states == dict.fromkeys(ids, "shutting-down")
    by_id = {n.id: n.state for n in proxied_driver.list_nodes()}
    assert by_id == {**dict.fromkeys(ids, NodeState.TERMINATED), keep.id: NodeState.RUNNING}
    # Terminating already-terminated instances again succeeds (idempotent, as on AWS).
    terminate_many(proxied_driver, ids)
    # One unknown id fails the whole request and terminates nothing (as on AWS).
    with pytest.raises(BaseHTTPError, match=r"InvalidInstanceID\.NotFound"):
        terminate_many(proxied_driver, [keep.id, "i-0123456789abcdef0"])
    assert proxied_driver.list_nodes(ex_node_ids=[keep.id])[0].state == NodeState.RUNNING


def test_stop_then_destroy_and_terminated_stay_listed(ec2_driver: MotoEC2NodeDriver) -> None:
    node = ec2_driver.create_node(name="n", image=_image(ec2_driver), size=make_size(ec2_driver))
    assert ec2_driver.ex_stop_node(node) is True
    assert ec2_driver.list_nodes(ex_node_ids=[node.id])[0].state == NodeState.STOPPED
    assert ec2_driver.destroy_node(node) is True
    [listed] = ec2_driver.list_nodes()
    assert listed.id == node.id
    assert listed.state == NodeState.TERMINATED
    assert listed.extra["tags"]["Name"] == "n"  # tags survive termination


@pytest.mark.parametrize(
    "user_data",
    [
        "#cloud-config\nruncmd: [echo héllo]\n",
        gzip.compress(b"#cloud-config\n" + b"write_files: []\n" * 200),
    ],
    ids=["text", "gzip-bytes"],
)
def test_user_data_round_trip(ec2_driver: MotoEC2NodeDriver, user_data: str | bytes) -> None:
    """libcloud's ex_userdata accepts str (UTF-8 encoded) or bytes (sent as is), and
    base64-encodes it; DescribeInstanceAttribute(userData) returns the same bytes."""
    node = ec2_driver.create_node(
        name="u", image=_image(ec2_driver), size=make_size(ec2_driver), ex_userdata=user_data
    )
    expected = user_data.encode() if isinstance(user_data, str) else user_data
    assert describe_user_data(ec2_driver, node.id) == expected


def test_no_user_data_reads_back_empty(ec2_driver: MotoEC2NodeDriver) -> None:
    node = ec2_driver.create_node(name="u", image=_image(ec2_driver), size=make_size(ec2_driver))
    assert describe_user_data(ec2_driver, node.id) == b""


def test_client_token_is_not_honoured_by_moto(ec2_driver: MotoEC2NodeDriver) -> None:
    """AWS: same ClientToken twice -> the same instance. moto stores the token (it shows up
    as extra['client_token']) but launches a duplicate. Idempotency of launches must not be
    tested against moto; the token can still be used to find instances."""
    size, image = make_size(ec2_driver), _image(ec2_driver)
    first = ec2_driver.create_node(name="t", image=image, size=size, ex_clienttoken="tok-1")
    second = ec2_driver.create_node(name="t", image=image, size=size, ex_clienttoken="tok-1")
    assert first.id != second.id
    listed = ec2_driver.list_nodes()
    assert len(listed) == 2
    assert {n.extra["client_token"] for n in listed} == {"tok-1"}


def test_bad_credentials_are_accepted_by_moto(ec2: EC2Emulator) -> None:
    """moto does not authenticate: any key/secret works (and sees the same account).
    Credential errors must be injected (LatencyProxy.fail_next(..., "AuthFailure"))."""
    good = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())
    good.create_node(name="n", image=_image(good), size=make_size(good))
    bad = MotoEC2NodeDriver("AKIAWRONGWRONGWRONG0", "wrong", **ec2.driver_options())
    assert len(bad.list_nodes()) == 1


def test_halt_instance_simulates_guest_shutdown(
    ec2: EC2Emulator, ec2_driver: MotoEC2NodeDriver
) -> None:
    size, image = make_size(ec2_driver), _image(ec2_driver)
    stops = ec2_driver.create_node(name="s", image=image, size=size)
    terminates = ec2_driver.create_node(
        name="t", image=image, size=size, ex_terminate_on_shutdown=True
    )
    assert ec2.halt_instance(stops.id) == "stopped"
    assert ec2.halt_instance(terminates.id) == "terminated"
    states = {n.id: n.state for n in ec2_driver.list_nodes()}
    assert states == {stops.id: NodeState.STOPPED, terminates.id: NodeState.TERMINATED}
    assert ec2.instance(stops.id).state_reason.code == "Client.InstanceInitiatedShutdown"
    other = ec2_driver.create_node(name="o", image=image, size=size)
    assert ec2.stop_instance(other.id) == "stopped"


def test_launch_time_can_be_moved_into_the_past(
    ec2: EC2Emulator, ec2_driver: MotoEC2NodeDriver
) -> None:
    node = ec2_driver.create_node(name="old", image=_image(ec2_driver), size=make_size(ec2_driver))
    created = ec2_driver.list_nodes()[0].created_at
    ec2.age_instance(node.id, dt.timedelta(hours=49))
    aged = ec2_driver.list_nodes()[0].created_at
    assert created - aged == dt.timedelta(hours=49)
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ec2.set_launch_time(node.id, when)
    assert ec2_driver.list_nodes()[0].created_at == when
    assert ec2_driver.list_nodes()[0].extra["launch_time"] == "2024-01-02T03:04:05.000Z"


# --------------------------------------------------------------------------- latency proxy


def test_proxy_counts_actions_and_applies_latency(
    proxied_driver: MotoEC2NodeDriver, ec2_proxy: LatencyProxy
) -> None:
    ec2_proxy.latency = 0.02
    for _ in range(3):
        proxied_driver.list_nodes()
    proxied_driver.list_images()
    assert ec2_proxy.counts == {"DescribeInstances": 3, "DescribeImages": 1}
    assert ec2_proxy.delayed_requests == 4
    assert ec2_proxy.injected_delay == pytest.approx(0.08)
    # Changed at runtime, per Action.
    ec2_proxy.reset_counts()
    ec2_proxy.latency = 0.0
    ec2_proxy.set_latency(0.03, action="DescribeImages")
    proxied_driver.list_nodes()
    proxied_driver.list_images()
    assert ec2_proxy.counts == {"DescribeInstances": 1, "DescribeImages": 1}
    assert ec2_proxy.delayed_requests == 1
    assert ec2_proxy.injected_delay == pytest.approx(0.03)
    ec2_proxy.clear_action_latency()
    ec2_proxy.reset_counts()
    proxied_driver.list_images()
    assert ec2_proxy.delayed_requests == 0
    assert ec2_proxy.counts == {"DescribeImages": 1}


def test_proxy_request_log_stamps_each_request_as_it_arrives(
    proxied_driver: MotoEC2NodeDriver, ec2_proxy: LatencyProxy
) -> None:
    """Wall-clock arrival times, before the injected latency: what the benchmark compares
    with the moment it patched a pool (bench/kube_scenarios.py)."""
    ec2_proxy.latency = 0.05
    before = time.time()
    proxied_driver.list_nodes()
    proxied_driver.list_images()
    after = time.time()
    log = [entry for entry in ec2_proxy.request_log if entry[0] >= before]
    assert [action for _, action in log] == ["DescribeInstances", "DescribeImages"]
    first, second = log[0][0], log[1][0]
    # Stamped on arrival: the second came after the first's delay, and both before the end.
    assert before <= first <= second - 0.05 and second <= after - 0.05


def test_proxy_counts_form_encoded_post(ec2: EC2Emulator, ec2_proxy: LatencyProxy) -> None:
    """boto-style clients POST the parameters as a form body; they are counted too."""
    host, port = ec2_proxy.endpoint
    body = "Action=DescribeInstances&Version=2016-11-15"
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKIACLOUDPILOTFAKE01/20240101/us-east-1/ec2/aws4_request, "
        "SignedHeaders=host, Signature=0"
    )
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(
            "POST",
            "/",
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "Authorization": auth,
            },
        )
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, data
    assert b"DescribeInstancesResponse" in data
    assert ec2_proxy.counts == {"DescribeInstances": 1}


def test_proxy_handles_concurrent_requests(ec2: EC2Emulator, ec2_proxy: LatencyProxy) -> None:
    """Requests are held in the proxy until all four are in flight at once: deterministic
    proof of concurrency, no timing involved."""
    drivers = [
        MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options(ec2_proxy.endpoint))
        for _ in range(4)
    ]
    ec2_proxy.hold("DescribeInstances")
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(d.list_nodes) for d in drivers]
        try:
            assert ec2_proxy.wait_for_held(4, timeout=30)
            assert ec2_proxy.held == 4
        finally:
            ec2_proxy.release()
        assert [f.result(timeout=30) for f in futures] == [[]] * 4
    assert ec2_proxy.held == 0
    assert ec2_proxy.counts == {"DescribeInstances": 4}


def test_proxy_holds_an_answer_after_the_cloud_acted(
    ec2: EC2Emulator, ec2_proxy: LatencyProxy, proxied_driver: MotoEC2NodeDriver
) -> None:
    """The cloud has created the VM while its creator still waits for the answer: the
    moment a crash leaves a VM nobody recorded."""
    direct = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())
    ec2_proxy.hold_answers("RunInstances")
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            proxied_driver.create_node,
            name="held-answer",
            image=_image(direct),
            size=make_size(direct),
        )
        try:
            assert ec2_proxy.wait_for_held_answers(1, timeout=30)
            assert [n.name for n in direct.list_nodes()] == ["held-answer"]
            assert not future.done()
        finally:
            ec2_proxy.release_answers()
        assert future.result(timeout=30).name == "held-answer"
    assert ec2_proxy.answers_held == 0


@pytest.mark.parametrize(
    ("code", "status", "exc_type"),
    [
        ("RequestLimitExceeded", 503, BaseHTTPError),
        ("InsufficientInstanceCapacity", 500, BaseHTTPError),
        ("InstanceLimitExceeded", 400, BaseHTTPError),
        ("AuthFailure", 401, InvalidCredsError),
    ],
)
def test_fault_injection_through_libcloud(
    proxied_driver: MotoEC2NodeDriver,
    ec2_proxy: LatencyProxy,
    code: str,
    status: int,
    exc_type: type[Exception],
) -> None:
    ec2_proxy.fail_next("RunInstances", code)
    with pytest.raises(exc_type) as err:
        proxied_driver.create_node(
            name="f", image=_image(proxied_driver), size=make_size(proxied_driver)
        )
    assert str(err.value).strip("'").startswith(f"{code}: ")
    if isinstance(err.value, BaseHTTPError):
        assert err.value.code == status
    # The faulted call never reached moto; the next one goes through.
    assert proxied_driver.list_nodes() == []
    proxied_driver.create_node(
        name="ok", image=_image(proxied_driver), size=make_size(proxied_driver)
    )
    assert ec2_proxy.counts == {"RunInstances": 2, "DescribeInstances": 1}
    assert ec2_proxy.faults_served == {code: 1}


def test_fault_queue_times_wildcard_and_custom_status(
    proxied_driver: MotoEC2NodeDriver, ec2_proxy: LatencyProxy
) -> None:
    ec2_proxy.fail_next("DescribeInstances", "RequestLimitExceeded", times=2)
    for _ in range(2):
        with pytest.raises(BaseHTTPError, match="RequestLimitExceeded"):
            proxied_driver.list_nodes()
    assert proxied_driver.list_nodes() == []
    ec2_proxy.fail_next("*", "InsufficientInstanceCapacity", status=400, message="no t3 left")
    assert ec2_proxy.pending_faults() == 1
    with pytest.raises(BaseHTTPError, match=r"^InsufficientInstanceCapacity: no t3 left$") as err:
        proxied_driver.list_images()
    assert err.value.code == 400
    ec2_proxy.fail_next("RunInstances", "InternalError", times=3)
    ec2_proxy.clear_faults()
    assert ec2_proxy.pending_faults() == 0
    assert ec2_proxy.faults_served == {"RequestLimitExceeded": 2, "InsufficientInstanceCapacity": 1}


def test_user_data_size_limit(proxied_driver: MotoEC2NodeDriver, ec2_proxy: LatencyProxy) -> None:
    """EC2 limits user data to 16 KiB before base64; moto has no limit, the proxy adds it."""
    size, image = make_size(proxied_driver), _image(proxied_driver)
    too_big = b"#!/bin/sh\n" + b"x" * EC2_USER_DATA_LIMIT
    proxied_driver.create_node(name="nolimit", image=image, size=size, ex_userdata=too_big)
    ec2_proxy.user_data_limit = EC2_USER_DATA_LIMIT
    with pytest.raises(BaseHTTPError, match=r"^InvalidParameterValue: User data is limited") as e:
        proxied_driver.create_node(name="big", image=image, size=size, ex_userdata=too_big)
    assert e.value.code == 400
    # Exactly at the limit passes; gzip makes a large cloud-config fit.
    at_limit = b"x" * EC2_USER_DATA_LIMIT
    proxied_driver.create_node(name="edge", image=image, size=size, ex_userdata=at_limit)
    compressed = gzip.compress(too_big * 4)
    assert len(compressed) < EC2_USER_DATA_LIMIT
    proxied_driver.create_node(name="gz", image=image, size=size, ex_userdata=compressed)
    assert sorted(n.name for n in proxied_driver.list_nodes()) == ["edge", "gz", "nolimit"]
    assert ec2_proxy.faults_served == {"InvalidParameterValue": 1}


def test_proxy_stop_is_clean(ec2: EC2Emulator) -> None:
    import threading

    before = set(threading.enumerate())
    # The proxy is left first: if an assertion fails, stopping it releases the held call
    # that the pool's exit waits for (the second stop is a no-op otherwise).
    with ThreadPoolExecutor(1) as pool, LatencyProxy(ec2.endpoint) as proxy:
        endpoint = proxy.endpoint
        assert endpoint[0] == "127.0.0.1"
        driver = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options(endpoint))
        driver.list_nodes()  # leaves a keep-alive connection (and its handler thread) open
        proxy.hold()
        pending = pool.submit(driver.list_images)
        assert proxy.wait_for_held(1, timeout=30)
        proxy.stop()  # releases the held request (answered 503), closes connections
        with pytest.raises(BaseHTTPError, match="Unavailable"):
            pending.result(timeout=30)
    assert set(threading.enumerate()) <= before
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(*endpoint, timeout=5).connect()


def test_a_hung_request_is_never_answered_and_the_next_one_is(ec2: EC2Emulator) -> None:
    """``hang_next``: the client's own timeout is all that ends the call (a dead link)."""
    with LatencyProxy(ec2.endpoint) as proxy:
        driver = MotoEC2NodeDriver(
            *ec2.credentials, **ec2.driver_options(proxy.endpoint), timeout=1
        )
        proxy.hang_next("DescribeInstances")
        with pytest.raises(OSError):  # requests' ReadTimeout is an OSError
            driver.list_nodes()
        assert driver.list_nodes() == []
        assert proxy.counts["DescribeInstances"] == 2
        assert proxy.faults_served == {"Hang": 1}


def test_a_lost_answer_leaves_the_cloud_acted_and_the_client_unaware(
    ec2: EC2Emulator, ec2_driver: MotoEC2NodeDriver
) -> None:
    """``lose_answer_next``: RunInstances reaches the cloud, the connection is cut."""
    with LatencyProxy(ec2.endpoint) as proxy:
        driver = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options(proxy.endpoint))
        image = _image(ec2_driver)
        proxy.lose_answer_next("RunInstances")
        with pytest.raises(Exception):  # noqa: B017 (a dropped connection: any error)
            driver.create_node(name="lost", size=make_size(driver), image=image)
        assert [n.name for n in ec2_driver.list_nodes()] == ["lost"]
        assert proxy.faults_served == {"LostAnswer": 1}
