"""Deleting a pool is always possible, and every wait says why (real API server, moto).

See cloudpilot.teardown for the rule: a pool with no recorded usable spec never had a VM and
goes at once; one with a record is torn down with it; a teardown that cannot list the VMs
keeps the finalizer, explains itself and finishes soon after the cloud comes back.
"""

from __future__ import annotations

from typing import Any

import pytest

from cloudpilot import constants
from cloudpilot_devtools.latency_proxy import LatencyProxy
from tests.support.kube import wait_for
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def _events(stack: Stack, pool: str, reason: str) -> list[Any]:
    return [
        e
        for e in stack.events()
        if e.involved_object.name == pool and e.reason == reason and e.source.component != "kopf"
    ]


@pytest.mark.parametrize(
    ("case", "spec"),
    [
        ("no-secret", {"credentialsSecret": {"name": "does-not-exist"}}),
        ("no-provider", {"cloudType": "NotAProvider"}),
        ("unimportable", {"cloudType": "no.such.module.Driver"}),
    ],
)
def test_a_pool_whose_spec_was_never_usable_is_deleted_at_once(
    stack: Stack, case: str, spec: dict[str, Any]
) -> None:
    stack.apply_pool(case, replicas=2, **spec)
    stalled = wait_for(
        lambda: stack.condition(case, "Stalled"), 30, message="the operator saw the pool"
    )
    assert stalled["status"] == "True"
    assert "teardownSpec" not in stack.status(case)
    stack.delete_pool(case)
    wait_for(lambda: stack.pool(case) is None, 20, message=f"pool {case} gone")
    assert stack.vms(case, include_gone=True) == [], "a VM was created for an unusable spec"
    (released,) = wait_for(lambda: _events(stack, case, "Released"), 10, message="a Released event")
    assert released.type == "Normal"
    assert "never created a VM" in released.message
    assert _events(stack, case, "TeardownBlocked") == []


def test_a_deleted_pool_during_a_cloud_outage_says_why_and_finishes_when_it_ends(
    stack: Stack,
) -> None:
    with LatencyProxy(stack.ec2.endpoint) as proxy:
        stack.apply_pool("outage", replicas=3, driver=stack.ec2.driver_options(proxy.endpoint))
        stack.wait_vms("outage", 3)
        stack.wait_status(
            "outage",
            lambda s: s.get("replicas") == 3 and s.get("teardownSpec"),
            what="3 replicas, spec recorded",
        )
        proxy.fail_next("*", "InternalError", times=1_000_000)  # every cloud call fails
        stack.delete_pool("outage")

        ready = wait_for(
            lambda: (
                (c := stack.condition("outage", "Ready")) and c["reason"] == "TeardownBlocked" and c
            ),
            30,
            message="Ready says why teardown waits",
        )
        assert ready["status"] == "False"
        assert ready["message"].startswith("cannot list the pool's VMs: Transient")
        reconciling = stack.condition("outage", "Reconciling")
        assert reconciling is not None and reconciling["reason"] == "TeardownBlocked"
        (warning,) = wait_for(
            lambda: _events(stack, "outage", "TeardownBlocked"), 10, message="a Warning event"
        )
        assert warning.type == "Warning"
        # Several more attempts fail; the cause is posted once, not once per retry.
        seen = proxy.faults_served.get("InternalError", 0)
        wait_for(
            lambda: proxy.faults_served.get("InternalError", 0) >= seen + 3,
            30,
            message="three more failed teardown attempts",
        )
        assert len(_events(stack, "outage", "TeardownBlocked")) == 1
        pool = stack.pool("outage")
        assert pool is not None and constants.FINALIZER in pool["metadata"]["finalizers"]
        assert len(stack.live_vms("outage")) == 3

        proxy.clear_faults()  # the cloud is back
        wait_for(lambda: stack.pool("outage") is None, 30, message="teardown finished")
        assert stack.live_vms("outage") == []


def test_a_pool_broken_after_it_had_vms_is_torn_down_with_its_recorded_spec_after_a_restart(
    stack: Stack,
) -> None:
    stack.apply_pool("broken", replicas=2)
    made = {vm.id for vm in stack.wait_vms("broken", 2)}
    stack.wait_status("broken", lambda s: s.get("teardownSpec"), what="spec recorded")
    stack.stop_operator()
    # Broken while no operator runs: the new one never sees the usable spec in process.
    stack.patch_pool("broken", {"credentialsSecret": {"name": "gone"}, "replicas": 5})
    stack.start_operator()
    wait_for(
        lambda: (c := stack.condition("broken", "Stalled")) and c["reason"] == "InvalidConfig",
        30,
        message="the new operator stalls on the broken spec",
    )
    stack.delete_pool("broken")
    wait_for(lambda: stack.pool("broken") is None, 30, message="pool gone")
    every = stack.vms("broken", include_gone=True)
    assert {vm.id for vm in every} == made, "teardown created or missed a VM"
    assert stack.live_vms("broken") == []
