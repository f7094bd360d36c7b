"""Which Kubernetes API the end-to-end tests talk to, and how they leave it clean.

* By default, the suite's own real control plane (:mod:`tests.support.apiserver`): etcd and
  kube-apiserver on 127.0.0.1, started once per test session on first use, stopped at its
  end. The CRD from ``crds/`` is installed once and awaited until it is served.
* ``CLOUDPILOT_TEST_KUBECONFIG=PATH``: a cluster of your own (kind, k3d, a test namespace
  of a real one). A separate variable rather than ``KUBECONFIG``, which may point at
  production: these tests install a CRD and create namespaces.
* ``CLOUDPILOT_TEST_KUBE=emulator``: the kmock-based emulator, one per stack. It is what
  ``cloudpilot demo`` runs on; it validates nothing and is not what CI trusts.

Without the binaries, a test that needs the control plane is skipped with the command that
installs them, and fails under ``CI=true`` (CI must not go green while testing less).

Registered as a pytest plugin in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from cloudpilot import constants
from tests.support.apiserver import ControlPlane, ControlPlaneMissing
from tests.support.crd import CRD_PATH
from tests.support.kube import wait_for

__all__ = [
    "KubePeer",
    "clean_namespace",
    "create_namespace",
    "install_crd",
    "kube_peer",
    "shared_control_plane",
]

CRD_NAME = f"{constants.PLURAL}.{constants.API_GROUP}"


@dataclass
class KubePeer:
    kubeconfig: Path
    real: bool
    plane: ControlPlane | None = None
    """The suite's own control plane (None on an external cluster or the emulator): tests
    that restart the API server or need other identities use it."""


_plane: ControlPlane | None = None
_crd_installed: set[str] = set()


def shared_control_plane() -> ControlPlane:
    """The session's control plane, started on first use (about 5 s)."""
    global _plane
    if _plane is None:
        try:
            _plane = ControlPlane().__enter__()
        except ControlPlaneMissing as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"the real Kubernetes API server is missing under CI: {exc}")
            pytest.skip(str(exc))
    return _plane


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _plane
    if _plane is not None:
        _plane.__exit__(None, None, None)
        _plane = None
        _crd_installed.clear()


@contextlib.contextmanager
def kube_peer() -> Iterator[KubePeer]:
    external = os.environ.get("CLOUDPILOT_TEST_KUBECONFIG")
    if external:
        peer = KubePeer(kubeconfig=Path(external), real=True)
    elif os.environ.get("CLOUDPILOT_TEST_KUBE") == "emulator":
        from cloudpilot_devtools.kube_emulator import ClusterEmulatorThread

        with ClusterEmulatorThread() as emulator:
            yield KubePeer(kubeconfig=emulator.kubeconfig_path, real=False)
        return
    else:
        plane = shared_control_plane()
        peer = KubePeer(kubeconfig=plane.admin, real=True, plane=plane)
    client = kubernetes.config.new_client_from_config(config_file=str(peer.kubeconfig))
    try:
        install_crd(client, key=str(peer.kubeconfig))
    finally:
        client.close()
    yield peer


def install_crd(api_client: Any, *, key: str = "") -> None:
    """Create the CRD, or bring an older copy up to date, and wait until it is served:
    a custom resource created before the CRD is Established answers 404."""
    if key and key in _crd_installed:
        return
    api = kubernetes.client.ApiextensionsV1Api(api_client)
    crd = yaml.safe_load(CRD_PATH.read_text())
    try:
        api.create_custom_resource_definition(crd)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
        current = api.read_custom_resource_definition(CRD_NAME)
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        api.replace_custom_resource_definition(CRD_NAME, crd)

    def established() -> bool:
        conditions = api.read_custom_resource_definition(CRD_NAME).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, 30, message=f"CRD {CRD_NAME} Established")
    custom = kubernetes.client.CustomObjectsApi(api_client)
    # Established comes a moment before the resource is in discovery and served.
    wait_for(lambda: _served(custom), 30, message=f"{constants.PLURAL} served by the API server")
    if key:
        _crd_installed.add(key)


def _served(custom: Any) -> bool:
    try:
        custom.list_cluster_custom_object(
            constants.API_GROUP, constants.API_VERSION, constants.PLURAL, limit=1
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def create_namespace(api_client: Any, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    try:
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))
        )
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise


def clean_namespace(api_client: Any, namespace: str) -> None:
    """Leave nothing behind: release the pools (the operator is stopped by now, so their
    finalizers would hold them, and the namespace with them, for ever), delete them, check
    they are gone, then delete the namespace.

    The cloud side needs no cleanup: moto is reset before each test.
    """
    custom = kubernetes.client.CustomObjectsApi(api_client)
    group, version, plural = constants.API_GROUP, constants.API_VERSION, constants.PLURAL

    def pools() -> list[dict[str, Any]]:
        listed = custom.list_namespaced_custom_object(group, version, namespace, plural)
        return list(listed.get("items", []))

    for pool in pools():
        name = pool["metadata"]["name"]
        with contextlib.suppress(kubernetes.client.ApiException):
            if pool["metadata"].get("finalizers"):
                custom.patch_namespaced_custom_object(
                    group, version, namespace, plural, name, {"metadata": {"finalizers": None}}
                )
            custom.delete_namespaced_custom_object(group, version, namespace, plural, name)
    wait_for(lambda: not pools(), 30, message=f"no CloudPilotPool left in {namespace}")
    with contextlib.suppress(kubernetes.client.ApiException):
        kubernetes.client.CoreV1Api(api_client).delete_namespace(namespace)
