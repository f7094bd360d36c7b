"""One pool cannot hold back the others, however much it asks for.

A pool once asked for ``replicas: 1000000000``: the API server took it, and the operator
planned it one VM at a time on the event loop for over a minute while a good pool beside
it was not reconciled at all. Now the CRD refuses such a count at admission (its maxima),
the operator's model refuses it for a pool stored under an older CRD, planning is
arithmetic, and one cycle of one pool asks for at most ``maxCreatesPerCycle`` VMs.

These tests count (VMs, RunInstances calls, answers of the API server), never time: the
first two drive the reconciler directly against moto behind a counting proxy; the last
runs the operator against the real API server.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from cloudpilot import constants
from cloudpilot.reconciler import PoolRef, ReconcilerSettings
from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy
from tests.integration.test_api_costs import NAMESPACE, Harness
from tests.support.kube import wait_for
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

A_BILLION = 10**9


@pytest.fixture
def cloud(ec2: EC2Emulator) -> Iterator[tuple[EC2Emulator, LatencyProxy]]:
    """The suite's moto on 127.0.0.1 (reset) and a counting proxy in front of it."""
    with LatencyProxy(ec2.endpoint) as proxy:
        yield ec2, proxy


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


async def test_a_billion_stored_under_an_older_crd_is_invalid_config_and_never_planned(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """A cluster whose CRD predates the maxima stores ``replicas: 1000000000``; the operator
    must refuse it itself, with a reason, before any cloud call (no listing, no create)."""
    h = Harness(*cloud)
    status = await h.reconcile("huge", A_BILLION)
    stalled = _condition(status, "Stalled")
    assert stalled is not None and stalled["reason"] == "InvalidConfig", status
    assert "spec.replicas" in stalled["message"]
    assert str(constants.MAX_REPLICAS) in stalled["message"]
    queues = [{"name": "a", "replicas": 1}, {"name": "bulk", "replicas": A_BILLION}]
    spec = {k: v for k, v in h.spec(0, queues=queues).items() if k != "replicas"}
    body = {"metadata": {"name": "q", "namespace": NAMESPACE, "generation": 1}, "spec": spec}
    outcome = await h.reconciler.reconcile(PoolRef(NAMESPACE, "q", "uid-q"), body)
    stalled = _condition(outcome.status_patch, "Stalled")
    assert stalled is not None and stalled["reason"] == "InvalidConfig", status
    assert "spec.queues.1.replicas" in stalled["message"]
    assert h.counts() == {}, "a refused pool reached the cloud"


async def test_one_cycle_creates_at_most_the_cap_and_the_next_one_goes_on(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """A pool at the CRD's maximum for one queue: each cycle sends ``maxCreatesPerCycle``
    VMs (in batches), no more, and reports the whole shortfall as ScalingUp."""
    cap, batch = 7, 5
    settings = ReconcilerSettings(
        max_creates_per_cycle=cap, batch_size=batch, rate_limit=1000.0, rate_burst=1000
    )
    h = Harness(*cloud, settings=settings)
    for cycle in (1, 2):
        h.proxy.reset_counts()
        status = await h.reconcile("big", constants.MAX_REPLICAS)
        assert h.counts()["RunInstances"] == math.ceil(cap / batch)
        assert status["desiredReplicas"] == constants.MAX_REPLICAS
        assert status["replicas"] == cycle * cap
        ready = _condition(status, "Ready")
        assert ready is not None and (ready["status"], ready["reason"]) == ("False", "ScalingUp")
        assert f"{constants.MAX_REPLICAS - cycle * cap} VM(s) still to create" in ready["message"]
        assert _condition(status, "Stalled") is None


def _refused(call: Any) -> int:
    with pytest.raises(kubernetes.client.ApiException) as refused:
        call()
    return refused.value.status


@pytest.mark.cluster
def test_a_huge_pool_does_not_starve_a_small_one(stack_without_operator: Stack) -> None:
    """10^9 is refused at admission (on the pool, on a queue, through ``kubectl scale``); a
    pool at the maximum for one queue is served a few VMs a cycle, and a small pool applied
    while it is served converges (VMs running, Ready=True) long before the big one does,
    and the big one goes on being served after."""
    stack = stack_without_operator
    if stack.peer is None or not stack.peer.real:
        pytest.skip("admission needs the real API server (the emulator validates nothing)")
    cap = 3
    stack.start_operator(max_creates_per_cycle=cap)

    assert _refused(lambda: stack.apply_pool("billion", replicas=A_BILLION)) == 422
    queues = [{"name": "bulk", "replicas": A_BILLION}]
    assert _refused(lambda: stack.apply_pool("billion-queue", queues=queues)) == 422
    assert stack.pool("billion") is None and stack.pool("billion-queue") is None

    stack.apply_pool("big", queues=[{"name": "bulk", "replicas": constants.MAX_REPLICAS}])
    assert _refused(lambda: stack.scale_pool("big", A_BILLION)) == 422
    # The big pool is being served: its VMs come, a few per cycle.
    wait_for(lambda: len(stack.live_vms("big")) >= 2 * cap, 60, message="big pool served")

    stack.apply_pool("small", replicas=3)
    stack.wait_vms("small", 3)
    ready = wait_for(
        lambda: (c := stack.condition("small", "Ready")) and c["status"] == "True" and c,
        60,
        message="small pool Ready=True",
    )
    big_when_small_ready = len(stack.live_vms("big"))
    assert ready["reason"] == "PilotsProvisioned"
    assert big_when_small_ready < constants.MAX_REPLICAS // 10, "the big pool was not capped"
    # ... and the big pool was not stopped to make room: it goes on converging.
    wait_for(
        lambda: len(stack.live_vms("big")) > big_when_small_ready,
        60,
        message="big pool still served after the small one converged",
    )
    big = stack.status("big")
    assert big["desiredReplicas"] == constants.MAX_REPLICAS
    assert stack.condition("big", "Stalled") is None
    assert len(stack.live_vms("small")) == 3, "the small pool got more than it asked for"


async def test_a_spec_that_cannot_be_recorded_creates_nothing_and_says_why(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """The usable spec is recorded in status.teardownSpec before the first VM, so that a
    deletion can always find it. If that write fails (a CRD older than the operator, an API
    outage), the cycle creates nothing, says why, and comes back; it must not abandon the
    whole cycle with a traceback."""
    h = Harness(*cloud)

    async def refuse(pool: PoolRef, patch: dict[str, Any]) -> None:
        raise RuntimeError('unknown field "status.teardownSpec"')

    h.reconciler._write_status = refuse  # white-box: the adapter the runtime plugs in
    status = await h.reconcile("unrecorded", 2)
    assert h.counts().get("RunInstances", 0) == 0
    assert "teardownSpec" in status["lastError"]["message"], status
    assert "CRD" in status["lastError"]["message"]
