"""Crash safety: the cloud is the source of truth, so a restart at any instant leaves no
duplicate and no orphan."""

from __future__ import annotations

from cloudpilot.devtools.latency_proxy import LatencyProxy
from tests.support.kube import wait_for
from tests.support.stack import Stack


def test_operator_restarted_mid_scale_up_leaves_no_duplicate_and_no_orphan(
    stack_without_operator: Stack,
) -> None:
    stack = stack_without_operator
    with LatencyProxy(stack.ec2.endpoint) as proxy:
        proxy.hold("RunInstances")
        stack.start_operator()
        stack.apply_pool("crash", replicas=4, driver=stack.ec2.driver_options(proxy.endpoint))
        assert proxy.wait_for_held(1, timeout=30), "the operator never asked for VMs"
        # The operator dies while its RunInstances is on the wire...
        stack.stop_operator()
        # ...and the cloud carries the request out anyway: 4 VMs nobody has recorded.
        proxy.release()
        wait_for(lambda: len(stack.vms("crash")) == 4, 30, message="4 VMs in the cloud")

        stack.start_operator()
        status = stack.wait_status(
            "crash",
            lambda s: s.get("replicas") == 4 and s.get("instanceCount") == 4 and s,
            what="the new operator adopts the 4 VMs",
        )
        assert proxy.counts.get("RunInstances") == 1, "a duplicate batch was created"
        every_vm = stack.vms("crash", include_gone=True)
        assert len(every_vm) == 4
        assert {i["id"] for i in status["instances"]} == {vm.id for vm in every_vm}


def test_a_restarted_operator_adopts_running_vms_without_touching_them(stack: Stack) -> None:
    stack.apply_pool("steady", replicas=3)
    before = {vm.id for vm in stack.wait_vms("steady", 3)}
    stack.stop_operator()
    stack.start_operator()
    stack.patch_pool("steady", {"replicas": 3, "bootTimeout": 600})  # any spec change
    stack.wait_status("steady", lambda s: s.get("observedGeneration", 0) >= 2, what="new gen")
    assert {vm.id for vm in stack.live_vms("steady")} == before
