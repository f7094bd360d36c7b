"""The Kubernetes API server's own faults, on the suite's real kube-apiserver: a restart in
the middle of a scale-up, a watch that expires (410 Gone), and 429 answers from API priority
and fairness. Each time the operator must recover by itself and the cloud must hold exactly
the VMs asked for, never a duplicate.

The cloud side is moto behind the project's latency proxy, which can hold ``RunInstances``
on the wire so that the fault falls inside the create window.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from cloudpilot_devtools.latency_proxy import LatencyProxy
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
    stack_without_operator: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """kopf resumes its watch from the last resourceVersion it saw. When etcd has compacted
    that version away (here: while the API server was down), the server answers 410 Gone:
    the operator must list again and still see every change."""
    stack = stack_without_operator
    plane = _own_plane(stack)
    caplog.set_level(logging.DEBUG, logger="kopf")
    stack.start_operator()
    stack.apply_pool("gone", replicas=1)
    stack.wait_vms("gone", 1)
    stack.wait_status("gone", lambda s: s.get("replicas") == 1, what="1 replica")
    seen = stack.pool("gone")
    assert seen is not None
    old_version = seen["metadata"]["resourceVersion"]

    plane.stop_apiserver()
    plane.compact_etcd()
    plane.start_apiserver()
    assert _watch_once(stack.custom, stack.namespace, old_version) == 410
    wait_for(
        lambda: any(
            "Restarting the watch-stream for cloudpilotpools" in r.getMessage()
            for r in caplog.records
        ),
        60,
        message="kopf was answered 410 Gone and restarted its watch",
    )
    stack.scale_pool("gone", 3)
    stack.wait_vms("gone", 3, timeout=60)
    stack.wait_status("gone", lambda s: s.get("replicas") == 3, what="3 replicas")
    assert len(_all_vms(stack, "gone")) == 3


# -- API priority and fairness: 429 ------------------------------------------------------------

OPERATOR_USER = "cloudpilot-operator-under-test"
FLOW = "cloudpilot-test-squeeze"


@contextlib.contextmanager
def _seat_taken(plane: Any, identity: Any) -> Iterator[None]:
    """One request of ``identity`` that holds its seat: a POST whose body never comes (the
    API server reads the body after priority and fairness has admitted the request). If the
    level was busy at that instant, the POST itself is answered 429 at once: try again."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.load_cert_chain(str(identity.cert_file), str(identity.key_file))
    for _attempt in range(50):
        raw = socket.create_connection(("127.0.0.1", plane.port), timeout=10)
        conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
        conn.sendall(
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{"
        )
        conn.settimeout(0.5)
        try:
            answered = conn.recv(64)
        except TimeoutError:
            break  # admitted: the server now waits for the body, holding the seat
        conn.close()
        assert answered.startswith(b"HTTP/1.1 429"), answered
    else:
        raise AssertionError("the held request was never admitted")
    try:
        yield
    finally:
        conn.close()


@contextlib.contextmanager
def _throttled(api_client: Any, identity: Any) -> Iterator[None]:
    """Requests of ``user`` are answered 429 while this runs (with :func:`_seat_taken`): a
    FlowSchema sends them to a priority level with no seats (``nominalConcurrencyShares:
    0``, nothing borrowed) that rejects instead of queueing. Such a level still lets one
    request through when none of its requests is executing (no starvation), so a held
    request keeps it busy. The test's own admin requests are not matched.

    The API server applies a new FlowSchema a moment after it is stored: this returns once
    the user's requests are classified by it (the server names the schema in a header)."""
    user = identity.user
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
    uid = flow.create_flow_schema(schema).metadata.uid
    try:
        wait_for(
            lambda: _flow_schema_of(identity.kubeconfig) == uid,
            30,
            message=f"the API server classifies {user}'s requests by FlowSchema {FLOW}",
        )
        yield
    finally:
        with contextlib.suppress(kubernetes.client.ApiException):
            flow.delete_flow_schema(FLOW)
        with contextlib.suppress(kubernetes.client.ApiException):
            flow.delete_priority_level_configuration(FLOW)


def _bind_cluster_admin(api_client: Any, user: str) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": user},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    try:
        rbac.create_cluster_role_binding(binding)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise


def _flow_schema_of(kubeconfig: Any) -> str | None:
    """The uid of the FlowSchema that classified a request sent with ``kubeconfig``."""
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        answer = kubernetes.client.CoreV1Api(client).list_namespace(limit=1, _preload_content=False)
        return answer.headers.get("X-Kubernetes-Pf-Flowschema-Uid")
    except kubernetes.client.ApiException:
        return None
    finally:
        client.close()


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
    # Not system:masters: the mandatory "exempt" FlowSchema lets that group through always.
    identity = plane.identity(OPERATOR_USER)
    _bind_cluster_admin(stack.core.api_client, OPERATOR_USER)
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
        admin = kubernetes.config.new_client_from_config(str(stack.kubeconfig))
        with _throttled(admin, identity), _seat_taken(plane, identity):
            wait_for(
                lambda: _answers(identity.kubeconfig, stack.namespace) == 429,
                30,
                message="the operator's user is answered 429",
            )
            proxy.release()
            wait_for(lambda: len(stack.live_vms("squeeze")) == 5, 30, message="5 VMs")
            stack.scale_pool("squeeze", 6)  # a change the operator must not miss
            # Throttled, the operator cannot write what it did: the cloud is the truth.
            assert stack.status("squeeze").get("replicas") == 2
        assert operator.alive(), operator.log()
        stack.wait_vms("squeeze", 6, timeout=90)
        stack.wait_status(
            "squeeze",
            lambda s: s.get("replicas") == 6 and s.get("instanceCount") == 6,
            timeout=60,
            what="status shows 6 after the throttling ends",
        )
        assert len(_all_vms(stack, "squeeze")) == 6, "a VM was created twice"
