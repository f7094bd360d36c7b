"""Crash safety: the cloud is the source of truth, so a restart at any instant leaves no
duplicate and no orphan."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from cloudpilot import runtime
from cloudpilot.kube import handlers
from cloudpilot_devtools.latency_proxy import LatencyProxy
from tests.support.kube import wait_for
from tests.support.operator_process import OperatorProcess
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


# -- the operator dies at ten moments inside the create window --------------------------------


@dataclass(frozen=True)
class Moment:
    """Where the operator dies, and how."""

    hold: str
    """The EC2 Action held at the proxy ("answer:" + Action: its answer, after moto acted)."""
    lose: int = 0
    """Held RunInstances answered with a fault on release: they never reach the cloud."""
    held: int = 1
    """Requests (or answers) to catch before the operator dies."""
    kill: str = "thread"
    """``thread``: the in-process operator is stopped, as a dying process's work stops;
    ``sigkill``: a real ``cloudpilot operator`` process is sent SIGKILL."""
    before: int = 0
    """VMs the pool already has before the scale-up the operator dies in (0: a new pool)."""
    batch_size: int | None = None


N = 5
MOMENTS = {
    # The pool listed, the image lookup the create waits for on the wire.
    "lookup-before-the-create": Moment(hold="DescribeImages"),
    # The spec recorded in status for teardown; RunInstances not sent yet.
    "spec-recorded-create-not-sent": Moment(hold="record"),
    # RunInstances at the proxy; the cloud carries it out after the death.
    "create-held-then-carried-out": Moment(hold="RunInstances"),
    # RunInstances at the proxy; it never reaches the cloud.
    "create-held-then-lost": Moment(hold="RunInstances", lose=1),
    # The cloud created the VMs; their ids never reach the operator.
    "cloud-acted-answer-lost": Moment(hold="answer:RunInstances"),
    # The answer arrived; the status saying so was never written.
    "answer-in-before-status": Moment(hold="status"),
    # Three batches on the wire at once; two are carried out, one lost.
    "batches-in-flight": Moment(hold="RunInstances", held=3, lose=1, batch_size=2),
    # An existing pool of 2 scaled up to N.
    "scale-up-of-a-running-pool": Moment(hold="RunInstances", before=2),
    # A real process, SIGKILL, RunInstances on the wire.
    "sigkill-create-held": Moment(hold="RunInstances", kill="sigkill"),
    # A real process, SIGKILL, after the cloud acted.
    "sigkill-cloud-acted": Moment(hold="answer:RunInstances", kill="sigkill"),
}


@pytest.mark.parametrize("moment", MOMENTS.values(), ids=MOMENTS.keys())
def test_the_operator_dying_inside_the_create_window_leaves_exactly_n_vms_and_no_orphan(
    stack_without_operator: Stack, moment: Moment, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = stack_without_operator
    pool = "crash"
    with LatencyProxy(stack.ec2.endpoint) as proxy, contextlib.ExitStack() as running:
        driver = stack.ec2.driver_options(proxy.endpoint)
        tuning = {"batch_size": moment.batch_size} if moment.batch_size else {}
        if moment.before:
            stack.start_operator(**tuning)
            stack.apply_pool(pool, replicas=moment.before, driver=driver)
            stack.wait_status(
                pool, lambda s: s.get("replicas") == moment.before, what="the pool before"
            )
            stack.stop_operator()

        reached = threading.Event()
        if moment.hold == "status":
            real_patch = handlers.patch_status

            async def dies_before_writing(namespace: str, name: str, patch: Any) -> bool:
                if patch.get("instanceCount"):
                    reached.set()
                    await asyncio.Event().wait()  # until the operator's stop cancels it
                return await real_patch(namespace, name, patch)

            monkeypatch.setattr(handlers, "patch_status", dies_before_writing)
        elif moment.hold == "record":
            real_record = runtime.patch_status

            async def dies_after_recording(namespace: str, name: str, patch: Any) -> bool:
                written = await real_record(namespace, name, patch)
                reached.set()
                await asyncio.Event().wait()  # until the operator's stop cancels it
                return written

            monkeypatch.setattr(runtime, "patch_status", dies_after_recording)
        elif moment.hold.startswith("answer:"):
            proxy.hold_answers(moment.hold.removeprefix("answer:"))
        else:
            proxy.hold(moment.hold)

        if moment.kill == "sigkill":
            env = {"CLOUDPILOT_BATCH_SIZE": str(moment.batch_size)} if moment.batch_size else {}
            process = running.enter_context(
                OperatorProcess(stack.kubeconfig, namespace=stack.namespace, env=env)
            )
        else:
            stack.start_operator(**tuning)
        if moment.before:
            stack.scale_pool(pool, N)
        else:
            stack.apply_pool(pool, replicas=N, driver=driver)

        # The operator is caught in the moment...
        if moment.hold in ("status", "record"):
            assert reached.wait(30), f"the operator never wrote its {moment.hold}"
        elif moment.hold.startswith("answer:"):
            assert proxy.wait_for_held_answers(moment.held, timeout=30), "no answer held"
        else:
            assert proxy.wait_for_held(moment.held, timeout=30), f"no {moment.hold} held"
        # ...and dies in it.
        if moment.kill == "sigkill":
            assert process.process is not None
            process.process.kill()
            process.process.wait(10)
        else:
            stack.stop_operator()
        monkeypatch.undo()
        if moment.lose:
            proxy.fail_next("RunInstances", "InternalError", times=moment.lose)
        proxy.release()
        proxy.release_answers()
        wait_for(lambda: proxy.in_flight == 0, 30, message="the calls in flight ended")
        assert proxy.pending_faults() == 0, "a fault meant for a held request is left over"
        assert len(stack.vms(pool, include_gone=True)) <= N
        if moment.hold == "record":
            assert stack.vms(pool, include_gone=True) == []
            assert stack.status(pool).get("teardownSpec")

        # A new operator finds what the cloud holds and creates only what is missing.
        stack.start_operator(**tuning)
        stack.wait_vms(pool, N)
        stack.wait_status(
            pool,
            lambda s: s.get("replicas") == N and s.get("instanceCount") == N,
            what=f"status shows the {N} VMs",
        )
        assert len(stack.vms(pool, include_gone=True)) == N, "a VM was created twice"

        stack.delete_pool(pool)
        wait_for(lambda: stack.pool(pool) is None, 30, message="the pool is gone")
        assert stack.live_vms(pool) == [], "an orphan VM is left running"
        assert len(stack.vms(pool, include_gone=True)) == N
