"""The Kubernetes API server's own faults, on the suite's real kube-apiserver: a restart in
the middle of a scale-up, a watch that expires (410 Gone), and 429 answers from API priority
and fairness. Each time the operator must recover by itself and the cloud must hold exactly
the VMs asked for, never a duplicate.

The cloud side is moto behind the project's latency proxy, which can hold ``RunInstances``
on the wire so that the fault falls inside the create window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from cloudpilot.devtools.latency_proxy import LatencyProxy
from tests.support.kube import wait_for
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def _own_plane(stack: Stack) -> Any:
    if stack.peer is None or stack.peer.plane is None:
        pytest.skip("needs the suite's own control plane (it stops and starts the API server)")
    return stack.peer.plane


def _all_vms(stack: Stack, pool: str) -> list[Any]:
    return stack.vms(pool, include_gone=True)


def test_an_api_server_restart_in_the_middle_of_a_scale_up_creates_no_duplicate(
    stack_without_operator: Stack,
) -> None:
    stack = stack_without_operator
    plane = _own_plane(stack)
    with LatencyProxy(stack.ec2.endpoint) as proxy:
        stack.start_operator()
        stack.apply_pool("restart", replicas=2, driver=stack.ec2.driver_options(proxy.endpoint))
        stack.wait_vms("restart", 2)
        stack.wait_status("restart", lambda s: s.get("replicas") == 2, what="2 replicas")

        proxy.hold("RunInstances")
        stack.scale_pool("restart", 6)
        assert proxy.wait_for_held(1, timeout=30), "the operator never asked for the 4 VMs"
        # The API server goes away while the create is on the wire, and comes back.
        plane.stop_apiserver()
        proxy.release()
        wait_for(lambda: len(stack.live_vms("restart")) == 6, 30, message="6 VMs in the cloud")
        plane.start_apiserver()

        status = stack.wait_status(
            "restart",
            lambda s: s.get("replicas") == 6 and s.get("instanceCount") == 6 and s,
            timeout=90,
            what="status catches up with 6 VMs after the restart",
        )
        # A later change still reaches the operator: its watch came back.
        stack.scale_pool("restart", 7)
        stack.wait_vms("restart", 7, timeout=60)
        stack.wait_status("restart", lambda s: s.get("replicas") == 7, what="7 replicas")
        assert len(_all_vms(stack, "restart")) == 7, "a VM was created twice"
        assert len(status["instances"]) == 6


def _watch_once(custom: Any, namespace: str, resource_version: str) -> int | None:
    """Open a watch of the pools from ``resource_version``; the HTTP code of an ERROR
    event the server answers with at once (410 when the version is too old), else None."""
    watch = kubernetes.watch.Watch()
    try:
        for event in watch.stream(
            custom.list_namespaced_custom_object,
            "cloudpilot.io",
            "v1alpha1",
            namespace,
            "cloudpilotpools",
            resource_version=resource_version,
            timeout_seconds=1,
        ):
            if event["type"] == "ERROR":
                return int(event["raw_object"].get("code", 0))
            return None
    except kubernetes.client.ApiException as exc:
        return exc.status
    finally:
        watch.stop()
    return None


def test_a_watch_that_expires_is_resumed_and_no_change_is_lost(
    stack_without_operator: Stack,
) -> None:
    """kopf resumes its watch from the last resourceVersion it saw. After an API server
    restart (a fresh watch cache) and an etcd compaction, that version is gone, and the
    server answers 410 Gone: the operator must list again and still see every change."""
    stack = stack_without_operator
    plane = _own_plane(stack)
    stack.start_operator()
    stack.apply_pool("gone", replicas=1)
    stack.wait_vms("gone", 1)
    seen = stack.pool("gone")
    assert seen is not None
    old_version = seen["metadata"]["resourceVersion"]

    plane.stop_apiserver()
    plane.start_apiserver()
    # Writes elsewhere move etcd's revision on; the server compacts every 2 s.
    for index in range(5):
        stack.create_secret(f"filler-{index}", {"x": str(index)})
    wait_for(
        lambda: _watch_once(stack.custom, stack.namespace, old_version) == 410,
        30,
        message="a watch from the operator's last resourceVersion is answered 410 Gone",
    )
    stack.scale_pool("gone", 3)
    stack.wait_vms("gone", 3, timeout=60)
    stack.wait_status("gone", lambda s: s.get("replicas") == 3, what="3 replicas")
    assert len(_all_vms(stack, "gone")) == 3


# -- API priority and fairness: 429 ------------------------------------------------------------

OPERATOR_USER = "cloudpilot-operator-under-test"
FLOW = "cloudpilot-test-squeeze"


@contextlib.contextmanager
def _throttled(api_client: Any, user: str) -> Iterator[None]:
    """Every request of ``user`` is answered 429 while this runs: a FlowSchema sends them to
    a priority level with no seats (``nominalConcurrencyShares: 0``, nothing borrowed) that
    rejects instead of queueing. The test's own admin requests are not matched."""
    flow = kubernetes.client.FlowcontrolApiserverV1Api(api_client)
    level = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": FLOW},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 0,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            },
        },
    }
    schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW},
        "spec": {
            "priorityLevelConfiguration": {"name": FLOW},
            "matchingPrecedence": 100,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "User", "user": {"name": user}}],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
    flow.create_priority_level_configuration(level)
    flow.create_flow_schema(schema)
    try:
        yield
    finally:
        with contextlib.suppress(kubernetes.client.ApiException):
            flow.delete_flow_schema(FLOW)
        with contextlib.suppress(kubernetes.client.ApiException):
            flow.delete_priority_level_configuration(FLOW)


def _answers(kubeconfig: Any, namespace: str) -> int:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        kubernetes.client.CoreV1Api(client).list_namespaced_secret(namespace, limit=1)
    except kubernetes.client.ApiException as exc:
        return int(exc.status)
    finally:
        client.close()
    return 200


def test_429_from_priority_and_fairness_is_waited_out_without_a_duplicate(
    stack_without_operator: Stack,
) -> None:
    """The operator runs as its own user (a process of its own, as in production) and is
    throttled with 429 in the middle of a scale-up; once the API server lets it through
    again, the pool converges to exactly what was asked."""
    from tests.support.operator_process import OperatorProcess

    stack = stack_without_operator
    plane = _own_plane(stack)
    identity = plane.identity(OPERATOR_USER, ["system:masters"])
    with (
        LatencyProxy(stack.ec2.endpoint) as proxy,
        OperatorProcess(identity.kubeconfig, namespace=stack.namespace) as operator,
    ):
        stack.apply_pool("squeeze", replicas=2, driver=stack.ec2.driver_options(proxy.endpoint))
        stack.wait_vms("squeeze", 2, timeout=60)
        stack.wait_status("squeeze", lambda s: s.get("replicas") == 2, what="2 replicas")

        proxy.hold("RunInstances")
        stack.scale_pool("squeeze", 5)
        assert proxy.wait_for_held(1, timeout=30), "the operator never asked for the 3 VMs"
        with _throttled(
            kubernetes.config.new_client_from_config(str(stack.kubeconfig)), OPERATOR_USER
        ):
            wait_for(
                lambda: _answers(identity.kubeconfig, stack.namespace) == 429,
                30,
                message="the operator's user is answered 429",
            )
            proxy.release()
            wait_for(lambda: len(stack.live_vms("squeeze")) == 5, 30, message="5 VMs")
            # Status cannot be written while throttled; the cloud is the truth meanwhile.
            stack.scale_pool("squeeze", 6)  # a change the operator must not miss
            wait_for(lambda: proxy.counts.get("DescribeInstances", 0) > 0, 10, message="alive")
        assert operator.alive(), operator.log()
        stack.wait_vms("squeeze", 6, timeout=90)
        stack.wait_status(
            "squeeze",
            lambda s: s.get("replicas") == 6 and s.get("instanceCount") == 6,
            timeout=60,
            what="status shows 6 after the throttling ends",
        )
        assert len(_all_vms(stack, "squeeze")) == 6, "a VM was created twice"
