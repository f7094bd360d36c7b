"""The whole stack for end-to-end tests: a Kubernetes API, an EC2 emulator, the operator.

The Kubernetes API is a real kube-apiserver with etcd on 127.0.0.1 (chosen by
:mod:`tests.support.cluster`: the suite's own, a cluster of yours, or the emulator on
request); each stack works in a fresh namespace. EC2 is moto's server on 127.0.0.1,
reached through libcloud's real EC2 driver. The operator is CloudPilot's own runtime
(kopf + reconciler) in a thread, so a test can stop it and start a new one mid-scale-up,
as a crash would.

Tests read the cloud through their own libcloud driver (never through the operator) and
synchronise by polling with :func:`tests.support.kube.wait_for`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import kubernetes

from cloudpilot import constants, naming
from cloudpilot.reconciler import Reconciler
from cloudpilot.runtime import OperatorThread, build_reconciler
from cloudpilot.settings import OperatorSettings
from cloudpilot_devtools import moto_ec2
from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver
from tests.support import cluster
from tests.support import official_client as kube_client
from tests.support.kube import wait_for

IMAGE = "name:AlmaLinux-9-GenericCloud-9.4-x86_64"
PILOT = "#!/bin/sh\n# fake pilot wrapper\necho pilot\n"

FAST = OperatorSettings(
    reconcile_interval=1.0,
    converging_interval=0.5,
    rate_limit=1000.0,
    rate_burst=1000,
    allowed_driver_classes=frozenset({moto_ec2.CLASS_PATH}),
)
"""Short intervals so tests converge in seconds; the logic does not depend on them. The
pools' ``cloudType`` is the moto driver's class path, which the operator must allow."""


@dataclass
class Stack:
    ec2: EC2Emulator
    kubeconfig: Path
    namespace: str
    settings: OperatorSettings = FAST
    operator: OperatorThread | None = None
    reconcilers: list[Reconciler] = field(default_factory=list)
    peer: cluster.KubePeer | None = None

    # -- operator ---------------------------------------------------------------------------

    def start_operator(self, **changes: Any) -> OperatorThread:
        settings = replace(self.settings, **changes) if changes else self.settings

        def factory() -> Reconciler:
            reconciler = build_reconciler(settings)
            self.reconcilers.append(reconciler)
            return reconciler

        namespaced = replace(settings, namespaces=(self.namespace,), all_namespaces=False)
        self.operator = OperatorThread(namespaced, reconciler_factory=factory).__enter__()
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    # -- Kubernetes -------------------------------------------------------------------------

    @property
    def custom(self) -> Any:
        return kube_client.custom_objects()

    @property
    def core(self) -> Any:
        return kube_client.core_v1()

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        body = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            string_data=None,
            data={k: _b64(v) for k, v in data.items()},
        )
        try:
            self.core.create_namespaced_secret(self.namespace, body)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(name, self.namespace, body)

    def pool_manifest(self, name: str, **spec: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "ce": "ce.cloudpilot.test",
            "cloudType": moto_ec2.CLASS_PATH,
            "driver": self.ec2.driver_options(),
            "credentialsSecret": {"name": "ec2-credentials"},
            "instance": {"image": IMAGE, "flavor": "t3.small"},
            "pilot": {"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
        }
        base.update(spec)
        return {
            "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
            "kind": constants.KIND,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": base,
        }

    def apply_pool(self, name: str, **spec: Any) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            constants.API_GROUP,
            constants.API_VERSION,
            self.namespace,
            constants.PLURAL,
            self.pool_manifest(name, **spec),
            field_validation="Strict",  # what kubectl apply sends
        )

    def patch_pool(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            constants.API_GROUP,
            constants.API_VERSION,
            self.namespace,
            constants.PLURAL,
            name,
            {"spec": spec},
            field_validation="Strict",
        )

    def scale_pool(self, name: str, replicas: int) -> None:
        """What ``kubectl scale cloudpilotpool/NAME --replicas=N`` sends."""
        self.custom.patch_namespaced_custom_object_scale(
            constants.API_GROUP,
            constants.API_VERSION,
            self.namespace,
            constants.PLURAL,
            name,
            {"spec": {"replicas": replicas}},
        )

    def pool(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                constants.API_GROUP, constants.API_VERSION, self.namespace, constants.PLURAL, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return (self.pool(name) or {}).get("status") or {}

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        for condition in self.status(name).get("conditions", []):
            if condition["type"] == kind:
                return condition
        return None

    def delete_pool(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            constants.API_GROUP, constants.API_VERSION, self.namespace, constants.PLURAL, name
        )

    def events(self) -> list[Any]:
        return self.core.list_namespaced_event(self.namespace).items

    # -- cloud ------------------------------------------------------------------------------

    def driver(self) -> MotoEC2NodeDriver:
        return MotoEC2NodeDriver(*self.ec2.credentials, **self.ec2.driver_options())

    def vms(self, pool: str, *, include_gone: bool = False) -> list[Any]:
        """The pool's VMs as the cloud lists them (terminated ones left out by default)."""
        prefix = naming.pool_prefix(self.namespace, pool)
        return [
            node
            for node in self.driver().list_nodes()
            if node.name.startswith(prefix)
            and (include_gone or str(node.state) not in ("terminated", "NodeState.TERMINATED"))
        ]

    def live_vms(self, pool: str) -> list[Any]:
        return [n for n in self.vms(pool) if str(n.state) in ("running", "pending")]

    def wait_vms(self, pool: str, count: int, timeout: float = 60.0) -> list[Any]:
        """Wait until the pool has exactly ``count`` live VMs in the cloud; return them."""

        def check() -> tuple[list[Any]] | None:
            vms = self.live_vms(pool)
            return (vms,) if len(vms) == count else None

        return wait_for(check, timeout, message=f"{count} live VMs in pool {pool}")[0]

    def wait_status(self, name: str, predicate: Any, timeout: float = 60.0, what: str = "") -> Any:
        return wait_for(
            lambda: predicate(self.status(name)), timeout, message=what or "pool status"
        )

    def wait_settled(self, pool: str, replicas: int) -> None:
        """``replicas`` live VMs in the cloud, and a status written for the latest spec."""
        self.wait_vms(pool, replicas)
        self.wait_status(
            pool,
            lambda s: (
                s.get("replicas") == replicas
                and s.get("observedGeneration") == (self.pool(pool) or {})["metadata"]["generation"]
            ),
            what=f"status of {pool} at {replicas}",
        )


def _b64(value: str) -> str:
    import base64

    return base64.b64encode(value.encode()).decode()


@contextlib.contextmanager
def running_stack(*, with_operator: bool = True, ec2: EC2Emulator | None = None) -> Iterator[Stack]:
    """Start everything; stop everything on exit, whatever happened.

    The Kubernetes side is the suite's real control plane (:mod:`tests.support.cluster`):
    each stack works in a fresh namespace and removes its pools on exit. moto's state is
    global to the process, so a running ``ec2`` emulator (the suite's per-process one,
    reset for each test) is reused rather than a second one started.
    """
    with contextlib.ExitStack() as stack:
        if ec2 is None:
            ec2 = stack.enter_context(EC2Emulator())
        peer = stack.enter_context(cluster.kube_peer())
        namespace = f"cloudpilot-test-{uuid.uuid4().hex[:8]}" if peer.real else "pilots"
        stack.enter_context(kube_client.using_kubeconfig(peer.kubeconfig))
        result = Stack(ec2=ec2, kubeconfig=peer.kubeconfig, namespace=namespace)
        result.peer = peer
        if peer.real:
            # Runs after the operator has stopped (callbacks run last-in, first-out).
            stack.callback(cluster.clean_namespace, kube_client.api_client(), namespace)
        cluster.create_namespace(kube_client.api_client(), namespace)
        stack.callback(result.stop_operator)
        result.create_secret(
            "ec2-credentials", {"key": ec2.credentials[0], "secret": ec2.credentials[1]}
        )
        result.create_secret("pilot", {"pilot.sh": PILOT})
        if with_operator:
            result.start_operator()
        yield result
