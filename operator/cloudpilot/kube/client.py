"""The official Kubernetes client, configured once: in-cluster, then KUBECONFIG, then
~/.kube/config (the same order kopf logs in with)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any


@functools.cache
def api_client() -> Any:
    """The operator's shared client."""
    return new_api_client()


def new_api_client() -> Any:
    """A client of its own (leader election keeps its renewals out of the shared pool)."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # unannotated in kubernetes
    except kubernetes.config.ConfigException:
        # The client reads KUBECONFIG once, at import; read it now, as kubectl does.
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]  # unannotated in kubernetes
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


def core_v1() -> Any:
    import kubernetes

    return kubernetes.client.CoreV1Api(api_client())


def custom_objects() -> Any:
    import kubernetes

    return kubernetes.client.CustomObjectsApi(api_client())


def reset() -> None:
    """Forget the configuration (a test or the demo points the operator at a new server)."""
    api_client.cache_clear()


@contextlib.contextmanager
def using_kubeconfig(path: str | os.PathLike[str]) -> Iterator[None]:
    """Point this process (kopf's login and the official client) at ``path`` for a while:
    the demo, the tests and the benchmark run against emulators they started."""
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    reset()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        reset()
