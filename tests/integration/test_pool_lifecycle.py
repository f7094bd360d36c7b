"""A CloudPilotPool end to end: the real operator (kopf) against a Kubernetes API over HTTP,
libcloud's real EC2 driver against moto on 127.0.0.1."""

from __future__ import annotations

import contextlib
import gzip
from datetime import timedelta

import yaml

from cloudpilot import constants, naming
from cloudpilot.status import RECORD_KEYS, STATUS_KEYS
from tests.support.ec2 import describe_user_data
from tests.support.kube import wait_for
from tests.support.pilot import stamp_on_vm
from tests.support.stack import IMAGE, PILOT, Stack

IMAGE_NAME = IMAGE.removeprefix("name:")


def _decoded(user_data: bytes) -> bytes:
    return gzip.decompress(user_data) if user_data[:2] == b"\x1f\x8b" else user_data


def test_apply_creates_the_desired_vms_with_names_tags_and_user_data(stack: Stack) -> None:
    stack.apply_pool("alpha", replicas=3)
    vms = stack.wait_vms("alpha", 3)
    prefix = naming.queue_prefix(stack.namespace, "alpha", "default")
    driver = stack.driver()
    for vm in vms:
        assert vm.name.startswith(prefix)
        tags = vm.extra["tags"]
        assert tags[constants.TAG_POOL] == f"{stack.namespace}/alpha"
        assert tags[constants.TAG_QUEUE] == "default"
        assert tags[constants.TAG_CE] == "ce.cloudpilot.test"
        # The batch shares one user data; run its stamp code as this VM would at boot.
        user_data = describe_user_data(driver, vm.id)
        assert stamp_on_vm(user_data, vm.id) == (f"cloud://{vm.id}", naming.pilot_stamp(vm.id))
        files = yaml.safe_load(_decoded(user_data))["write_files"]
        assert PILOT in [f.get("content") for f in files], "the pilot wrapper is not on the VM"
    status = stack.wait_status(
        "alpha", lambda s: s.get("replicas") == 3 and s, what="status.replicas == 3"
    )
    assert status["desiredReplicas"] == 3
    ids = {vm.id for vm in vms}
    assert {i["id"] for i in status["instances"]} == ids
    for instance in status["instances"]:
        assert instance["pilotReference"] == f"cloud://{instance['id']}"
        assert instance["pilotStamp"] == naming.pilot_stamp(instance["id"])
    ready = stack.condition("alpha", "Ready")
    assert ready is not None and ready["status"] == "True"


def test_scale_up_and_down_through_the_scale_subresource(stack: Stack) -> None:
    stack.apply_pool("scaled", replicas=2, scaleDownPolicy="DeleteRunning")
    stack.wait_vms("scaled", 2)
    stack.scale_pool("scaled", 5)
    stack.wait_vms("scaled", 5)
    stack.scale_pool("scaled", 1)
    kept = stack.wait_vms("scaled", 1)
    status = stack.wait_status("scaled", lambda s: s.get("replicas") == 1 and s)
    assert [i["id"] for i in status["instances"]] == [kept[0].id]
    wait_for(
        lambda: {"Created", "Deleted"} <= {e.reason for e in stack.events()},
        30,
        message="Created and Deleted Events",
    )


def test_scale_down_leaves_running_pilots_to_finish_by_default(stack: Stack) -> None:
    stack.apply_pool("drain", replicas=3)
    running = stack.wait_vms("drain", 3)
    stack.wait_status("drain", lambda s: s.get("running") == 3, what="3 running")
    stack.scale_pool("drain", 1)
    ready = wait_for(
        lambda: (c := stack.condition("drain", "Ready")) and c["reason"] == "Draining" and c,
        30,
        message="Ready reason Draining",
    )
    assert ready["status"] == "True"
    assert {vm.id for vm in stack.live_vms("drain")} == {vm.id for vm in running}
    # A pilot that ends is not replaced while the pool is above its desired count.
    stack.ec2.halt_instance(running[0].id)
    stack.wait_vms("drain", 2)
    stack.wait_status("drain", lambda s: s.get("replicas") == 2 and s.get("done") == 0)


def test_a_pilot_vm_that_stopped_itself_is_deleted_and_replaced(stack: Stack) -> None:
    """A pilot that worked (it ran longer than fizzleSeconds) is replaced at once."""
    stack.apply_pool("churn", replicas=2)
    first = stack.wait_vms("churn", 2)
    gone = first[0].id
    # Launched an hour ago: past the default fizzleSeconds (600), so its pilot worked.
    stack.ec2.age_instance(gone, timedelta(hours=1))
    stack.ec2.halt_instance(gone)

    def replaced() -> bool:
        live = {vm.id for vm in stack.live_vms("churn")}
        return len(live) == 2 and gone not in live

    wait_for(replaced, 30, message="the stopped VM replaced")
    states = {vm.id: str(vm.state) for vm in stack.vms("churn", include_gone=True)}
    assert states[gone] == "terminated"
    # The replacement may be created in the cycle that deletes, before its Events go out.
    deleted = wait_for(
        lambda: [e for e in stack.events() if e.reason == "Deleted" and gone in e.message],
        30,
        message="a Deleted Event for the stopped VM",
    )
    assert "PilotDone" in deleted[0].message


def test_a_pilot_that_fizzled_is_deleted_and_new_pilots_are_held(stack: Stack) -> None:
    """A pilot VM that halts right after boot found no work: deleted, not replaced while the
    closed loop holds the queue; status, a condition and one Event say until when and why."""
    stack.apply_pool("idle", replicas=2)
    first = stack.wait_vms("idle", 2)
    gone = first[0].id
    stack.ec2.halt_instance(gone)
    status = stack.wait_status(
        "idle",
        lambda s: (
            (q := s.get("queues")) and q[0].get("closedLoop", {}).get("consecutiveFizzles") and s
        ),
        what="a fizzle counted",
    )
    (queue,) = status["queues"]
    loop = queue["closedLoop"]
    assert loop["state"] == "HeldAfterFizzles"
    assert loop["recent"]["fizzled"] == 1
    assert "1 pilot(s) fizzled in a row" in loop["message"]
    assert queue["held"] == "ClosedLoop"
    states = {vm.id: str(vm.state) for vm in stack.vms("idle", include_gone=True)}
    assert states[gone] == "terminated"
    # The status above was written after the cycle acted: it deleted, and created nothing.
    assert [vm.id for vm in stack.live_vms("idle")] == [first[1].id]
    held = stack.condition("idle", "PilotsHeld")
    assert held is not None and held["status"] == "True"
    # Once the deleted VM is no longer listed, Ready says why the queue is short.
    ready = wait_for(
        lambda: (c := stack.condition("idle", "Ready")) and c["reason"] == "PilotsHeld" and c,
        30,
        message="Ready reason PilotsHeld",
    )
    assert ready["status"] == "True"
    assert len(stack.live_vms("idle")) == 1
    changes = [e for e in stack.events() if e.reason == "ClosedLoopHeldAfterFizzles"]
    assert len(changes) == 1


def test_a_vm_past_its_maximum_lifetime_is_deleted_whatever_its_state(stack: Stack) -> None:
    stack.apply_pool("old", replicas=1, context={"maxLifetime": 3600})
    (vm,) = stack.wait_vms("old", 1)
    stack.ec2.age_instance(vm.id, timedelta(hours=2))
    wait_for(
        lambda: (live := stack.live_vms("old")) and live[0].id != vm.id,
        30,
        message="the old VM replaced",
    )
    deleted = wait_for(
        lambda: [e for e in stack.events() if e.reason == "Deleted" and vm.id in e.message],
        30,
        message="a Deleted Event for the old VM",
    )
    assert "MaxLifetimeExceeded" in deleted[0].message


def test_vms_of_other_pools_and_hand_made_look_alikes_are_never_touched(stack: Stack) -> None:
    driver = stack.driver()
    image = driver.list_images(ex_filters={"name": IMAGE_NAME})[0]
    size = next(s for s in driver.list_sizes() if s.id == "t3.small")
    prefix = naming.queue_prefix(stack.namespace, "mine", "default")
    look_alike = driver.create_node(name=f"{prefix}deadbeef", image=image, size=size)
    dirac = driver.create_node(name="VMDIRAC3_1a2b3c4d", image=image, size=size)
    stack.apply_pool("other", replicas=1)
    (other,) = stack.wait_vms("other", 1)
    stack.apply_pool("mine", replicas=2, scaleDownPolicy="DeleteRunning")
    stack.wait_status("mine", lambda s: s.get("replicas") == 2, what="2 live VMs in mine")
    # Stop the other pool's VM and the hand-made ones: only "other" may clean its own up.
    for node in (look_alike, dirac):
        driver.ex_stop_node(node)
    stack.scale_pool("mine", 0)
    stack.wait_status("mine", lambda s: s.get("replicas") == 0 and s.get("instanceCount") == 0)
    states = {n.id: str(n.state) for n in driver.list_nodes()}
    assert states[look_alike.id] == "stopped"
    assert states[dirac.id] == "stopped"
    assert states[other.id] == "running"
    mine = stack.status("mine")
    assert look_alike.id not in {i["id"] for i in mine["instances"]}


def test_deleting_the_pool_destroys_its_vms(stack: Stack) -> None:
    stack.apply_pool("doomed", replicas=3)
    stack.wait_vms("doomed", 3)
    stack.delete_pool("doomed")
    wait_for(lambda: stack.pool("doomed") is None, 60, message="pool gone")
    assert stack.live_vms("doomed") == []
    assert all(str(vm.state) == "terminated" for vm in stack.vms("doomed", include_gone=True))


def test_pools_that_come_and_go_leave_nothing_behind_in_the_operator(stack: Stack) -> None:
    """Memory stays flat as pools come and go: a deleted pool's state (memory, lock, last
    valid spec, fingerprints, Secret owners, metrics) goes with it. White-box: the stores are
    private, so the test reads them."""
    names = [f"brief-{i}" for i in range(3)]
    for name in names:
        stack.apply_pool(name, replicas=1)
    for name in names:
        stack.wait_vms(name, 1)
    uids = {stack.pool(name)["metadata"]["uid"] for name in names}  # type: ignore[index]
    keys = {f"{stack.namespace}/{name}" for name in names}
    for name in names:
        stack.delete_pool(name)
    for name in names:
        wait_for(lambda name=name: stack.pool(name) is None, 60, message=f"{name} gone")

    _assert_nothing_left_of(stack, uids, keys)


def test_a_pool_released_by_hand_from_a_blocked_teardown_leaves_nothing_behind(
    stack: Stack,
) -> None:
    """A teardown blocked on a deleted credentials Secret tells the admin to fix it or to
    remove the finalizer; a pool removed that way is forgotten by the operator all the
    same. (A pool whose spec was never usable does not block: see test_teardown.py.)"""
    stack.apply_pool("stuck", replicas=1)
    stack.wait_vms("stuck", 1)
    stack.wait_status("stuck", lambda s: s.get("teardownSpec"), what="spec recorded")
    uid = stack.pool("stuck")["metadata"]["uid"]  # type: ignore[index]
    stack.core.delete_namespaced_secret("ec2-credentials", stack.namespace)
    # Secrets are cached for half an interval: the pool is deleted once the loss shows.
    wait_for(
        lambda: (c := stack.condition("stuck", "Stalled")) and c["reason"] == "InvalidConfig",
        30,
        message="the operator sees the Secret gone",
    )
    stack.delete_pool("stuck")
    stalled = wait_for(
        lambda: (
            (c := stack.condition("stuck", "Stalled")) and c["reason"] == "TeardownBlocked" and c
        ),
        30,
        message="Stalled TeardownBlocked",
    )
    assert constants.FINALIZER in stalled["message"]
    wait_for(
        lambda: any(e.reason == "TeardownBlocked" and e.type == "Warning" for e in stack.events()),
        30,
        message="a TeardownBlocked Warning",
    )
    stack.custom.patch_namespaced_custom_object(
        constants.API_GROUP,
        constants.API_VERSION,
        stack.namespace,
        constants.PLURAL,
        "stuck",
        {"metadata": {"finalizers": None}},
    )
    wait_for(lambda: stack.pool("stuck") is None, 30, message="pool gone")
    _assert_nothing_left_of(stack, {uid}, {f"{stack.namespace}/stuck"})


def _assert_nothing_left_of(stack: Stack, uids: set[str], keys: set[str]) -> None:
    """White-box: the per-pool stores are private, so this reads them."""
    from cloudpilot import metrics

    reconciler = stack.reconcilers[-1]

    def leftovers() -> list[str]:
        found = [f"pool record: {uid}" for uid in reconciler.pools if uid in uids]
        for gateway in reconciler.caches.gateways.values():
            found += [f"listing seen: {uid}" for uid in gateway.listing._seen if uid in uids]
        gauges = metrics.default().pool_gauges
        found += [
            f"gauges: {k}"
            for k in (*gauges._queues, *gauges._conditions, *gauges._proxy_expiry)
            if k in keys
        ]
        return found

    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not leftovers(), 10, message="no per-pool state left")
    assert leftovers() == []


def test_deletion_policy_orphan_leaves_the_vms_running(stack: Stack) -> None:
    stack.apply_pool("kept", replicas=2, deletionPolicy="Orphan")
    vms = stack.wait_vms("kept", 2)
    stack.delete_pool("kept")
    wait_for(lambda: stack.pool("kept") is None, 60, message="pool gone")
    assert {vm.id for vm in stack.live_vms("kept")} == {vm.id for vm in vms}


def test_kopf_bookkeeping_stays_in_cloudpilot_annotations(stack: Stack) -> None:
    stack.apply_pool("tidy", replicas=1)
    stack.wait_status("tidy", lambda s: s.get("replicas") == 1)
    stack.patch_pool("tidy", {"replicas": 2})
    stack.wait_status("tidy", lambda s: s.get("replicas") == 2)
    pool = stack.pool("tidy")
    assert pool is not None
    assert pool["metadata"]["finalizers"] == [constants.FINALIZER]
    annotations = pool["metadata"].get("annotations", {})
    assert all(key.startswith("cloudpilot.io/") for key in annotations)
    assert "kopf" not in pool["status"]
    assert set(pool["status"]) <= set(STATUS_KEYS) | set(RECORD_KEYS) | {"proxy"}


def test_the_operator_feeds_its_prometheus_series(stack: Stack) -> None:
    """What a Grafana panel shows comes from the running operator, not from a unit test."""
    import urllib.request

    from cloudpilot import metrics

    server = metrics.start_metrics_server(0, host="127.0.0.1")
    try:
        stack.apply_pool("watched", replicas=2)
        stack.wait_status("watched", lambda s: s.get("running") == 2, what="2 running")

        def scraped() -> str | None:
            url = f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            running = (
                f'cloudpilot_pilots{{namespace="{stack.namespace}",phase="Running",'
                f'pool="watched",queue="default"}} 2.0'
            )
            return text if running in text else None

        text = wait_for(scraped, 30, message="pilots by phase exported")
        assert f'cloudpilot_vms_created_total{{namespace="{stack.namespace}",pool="watched"' in text
        assert 'cloudpilot_cloud_api_calls_total{operation="create"}' in text
        assert "cloudpilot_reconcile_duration_seconds_count" in text
    finally:
        server.stop()


def test_an_invalid_edit_stalls_the_pool_keeps_its_vms_and_delete_still_cleans_up(
    stack: Stack,
) -> None:
    """A bad spec that the CRD cannot catch (a reserved ``createOptions`` key: the map is
    open) gets through admission: the operator must say so, keep what it knows, and still
    tear down on delete."""
    stack.apply_pool("edited", replicas=2)
    vms = stack.wait_vms("edited", 2)
    stack.patch_pool(
        "edited",
        {"instance": {"image": IMAGE, "flavor": "t3.small", "createOptions": {"ex_userdata": "x"}}},
    )
    stalled = wait_for(
        lambda: (
            (c := stack.condition("edited", "Stalled")) and c["reason"] == "InvalidConfig" and c
        ),
        30,
        message="Stalled InvalidConfig",
    )
    assert "ex_userdata" in stalled["message"]
    status = stack.status("edited")
    assert status["replicas"] == 2 and len(status["instances"]) == 2, "what was known is lost"
    assert {vm.id for vm in stack.live_vms("edited")} == {vm.id for vm in vms}
    stack.delete_pool("edited")
    wait_for(lambda: stack.pool("edited") is None, 60, message="pool gone")
    assert stack.live_vms("edited") == []


def test_a_broken_site_template_is_named_with_its_line_and_no_vm_is_created(
    stack: Stack,
) -> None:
    import kubernetes

    template = "#cloud-config\nwrite_files:\n  - path: /x\n    content: {{ no_such_variable }}\n"
    stack.core.create_namespaced_config_map(
        stack.namespace,
        kubernetes.client.V1ConfigMap(
            metadata=kubernetes.client.V1ObjectMeta(name="site-template"),
            data={"pilot.yaml.j2": template},
        ),
    )
    stack.apply_pool(
        "templated",
        replicas=2,
        context={"template": {"name": "site-template", "key": "pilot.yaml.j2"}},
    )
    stalled = wait_for(
        lambda: (c := stack.condition("templated", "Stalled")) and c, 30, message="Stalled"
    )
    assert "site-template" in stalled["message"] and "line 4" in stalled["message"]
    # Events go out before the status write of their cycle; waited for all the same.
    wait_for(
        lambda: any(
            e.reason == "InvalidConfig" and "site-template" in e.message for e in stack.events()
        ),
        30,
        message="the failed create's Event, with the condition's reason",
    )
    assert stack.vms("templated") == []
