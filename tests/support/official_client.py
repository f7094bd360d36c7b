"""The official (synchronous) Kubernetes client, for the tests' own requests: they play the
user with kubectl, from the test's thread. The operator does not use it (it has its own
asynchronous client, cloudpilot.kube.client); ``kubernetes`` is a test dependency."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes

from cloudpilot.kube import client as operator_client


@functools.cache
def api_client() -> Any:
    """The tests' shared client for the current ``KUBECONFIG``."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
    )
    return kubernetes.client.ApiClient(configuration)


def core_v1() -> Any:
    return kubernetes.client.CoreV1Api(api_client())


def custom_objects() -> Any:
    return kubernetes.client.CustomObjectsApi(api_client())


@contextlib.contextmanager
def using_kubeconfig(path: str | os.PathLike[str]) -> Iterator[None]:
    """Point the operator and this client at ``path`` for a while."""
    api_client.cache_clear()
    try:
        with operator_client.using_kubeconfig(path):
            yield
    finally:
        api_client.cache_clear()


def kubeconfig_login(path: str | os.PathLike[str]) -> operator_client.Login:
    """A login for the operator's client from one kubeconfig file (its current context),
    mapped as kopf's ``login_with_kubeconfig`` maps it: for tests that run several
    operators, or electors, each against a kubeconfig of its own in one process (the
    ``KUBECONFIG`` variable is one per process)."""
    import kopf
    import yaml

    def login() -> kopf.ConnectionInfo:
        config = yaml.safe_load(Path(path).read_text()) or {}

        def named(kind: str, name: str) -> dict[str, Any]:
            item = next(i for i in config.get(kind, []) if i["name"] == name)
            return dict(item.get(kind[:-1]) or {})

        context = named("contexts", config["current-context"])
        cluster, user = named("clusters", context["cluster"]), named("users", context["user"])
        return kopf.ConnectionInfo(
            server=cluster["server"],
            ca_path=cluster.get("certificate-authority"),
            ca_data=cluster.get("certificate-authority-data"),
            insecure=cluster.get("insecure-skip-tls-verify"),
            certificate_path=user.get("client-certificate"),
            certificate_data=user.get("client-certificate-data"),
            private_key_path=user.get("client-key"),
            private_key_data=user.get("client-key-data"),
            token=user.get("token"),
            default_namespace=context.get("namespace"),
        )

    return login


def operator_client_for(path: str | os.PathLike[str]) -> operator_client.KubeClient:
    """The operator's own client, logged in from ``path``."""
    return operator_client.KubeClient(kubeconfig_login(path))
