"""The Kubernetes API emulator (cloudpilot_devtools.kube_emulator) as its real clients see it.

Each test talks to the emulator over HTTP through the official ``kubernetes`` client or through
kopf itself, and asserts the server behaviour that CloudPilot's operator and tests rely on:
resourceVersion/generation bookkeeping, patch semantics, the status and scale subresources,
selectors, finalizers and resumable watches. Conditions are awaited by polling with a deadline.
"""

from __future__ import annotations

import collections
import json
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import kubernetes
import pytest
from kubernetes.client import ApiException, CoordinationV1Api, CoreV1Api, CustomObjectsApi

from cloudpilot_devtools.kube_emulator import (
    DEFAULT_RESOURCES,
    ClusterEmulator,
    ClusterEmulatorThread,
    ResourceSpec,
    serve_cluster,
)

try:
    from tests.support.kube import OperatorThread, wait_for
except ModuleNotFoundError:  # the repository root is not on sys.path (no conftest adds it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.kube import OperatorThread, wait_for

GROUP, VERSION, PLURAL = "cloudpilot.io", "v1alpha1", "cloudpilotpools"
NS = "default"
JSON_PATCH = "application/json-patch+json"


def pool(name: str, replicas: int = 1, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CloudPilotPool",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "image": "ubuntu-24.04"},
    }


@pytest.fixture
def cluster() -> Iterator[ClusterEmulatorThread]:
    with ClusterEmulatorThread() as running:
        yield running
        # Unexpected exceptions in the emulator (answered as 500) are bugs, whoever called.
        assert running.call(lambda: list(running.emulator.errors)) == []


@pytest.fixture
def api_client(cluster: ClusterEmulatorThread) -> Iterator[kubernetes.client.ApiClient]:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(cluster.kubeconfig_path), client_configuration=config
    )
    with kubernetes.client.ApiClient(config) as client:
        yield client


@pytest.fixture
def crs(api_client: kubernetes.client.ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(api_client)


def get_pool(crs: CustomObjectsApi, name: str) -> dict[str, Any]:
    return crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


def is_gone(crs: CustomObjectsApi, name: str) -> bool:
    try:
        get_pool(crs, name)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def test_custom_object_lifecycle(crs: CustomObjectsApi) -> None:
    created = crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool("p1"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["namespace"] == NS
    assert get_pool(crs, "p1") == created

    listed = crs.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["p1"]
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])

    patched = crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "p1", {"spec": {"replicas": 3}}
    )
    assert patched["spec"] == {"replicas": 3, "image": "ubuntu-24.04"}
    assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert patched["metadata"]["generation"] == 2

    # Status and metadata changes bump the resourceVersion but not the generation: generation
    # tracks the desired state only, which controllers compare with status.observedGeneration.
    status = crs.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "p1", {"status": {"phase": "Ready"}}
    )
    annotated = crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "p1", {"metadata": {"annotations": {"a": "b"}}}
    )
    versions = [int(o["metadata"]["resourceVersion"]) for o in (patched, status, annotated)]
    assert versions == sorted(set(versions))
    assert status["status"] == {"phase": "Ready"} and status["metadata"]["generation"] == 2
    assert annotated["metadata"]["generation"] == 2

    # A patch that changes nothing is not a write: no new resourceVersion (kopf relies on it).
    same = crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p1", {"spec": {}})
    assert same["metadata"]["resourceVersion"] == annotated["metadata"]["resourceVersion"]

    with pytest.raises(ApiException) as exc:
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool("p1"))
    assert exc.value.status == 409

    crs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p1")
    assert is_gone(crs, "p1")


def test_merge_patch_follows_rfc7386(crs: CustomObjectsApi) -> None:
    body = pool("p1")
    body["spec"].update(cloud={"region": "eu", "zone": "a"}, tags=["x", "y"], flavour="m1")
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    patched = crs.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "p1",
        {
            "spec": {
                "cloud": {"zone": None},  # null deletes a key
                "tags": ["z"],  # lists are replaced, not merged
                "flavour": {"name": "m2"},  # a dict replaces a scalar (kmock: 500)
                "image": None,
            }
        },
    )
    assert patched["spec"] == {
        "replicas": 1,
        "cloud": {"region": "eu"},
        "tags": ["z"],
        "flavour": {"name": "m2"},
    }
    patched = crs.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "p1",
        {"spec": {"cloud": "none"}},  # a scalar replaces a dict
    )
    assert patched["spec"]["cloud"] == "none"


def test_failed_json_patch_test_is_422_and_changes_nothing(crs: CustomObjectsApi) -> None:
    created = crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool("p1"))
    rv = created["metadata"]["resourceVersion"]
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "stale"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["cloudpilot.io/finalizer"]},
    ]
    with pytest.raises(ApiException) as exc:
        crs.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "p1", stale, _content_type=JSON_PATCH
        )
    assert exc.value.status == 422  # what kopf expects in order to retry later
    assert get_pool(crs, "p1") == created

    stale[0]["value"] = rv  # now the test holds: the patch applies (as kopf's finalizer patch)
    patched = crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "p1", stale, _content_type=JSON_PATCH
    )
    assert patched["metadata"]["finalizers"] == ["cloudpilot.io/finalizer"]


def test_status_subresource_is_separate_from_the_main_resource(crs: CustomObjectsApi) -> None:
    body = pool("p1")
    body["status"] = {"phase": "Forged"}  # dropped on create, as with a status subresource
    created = crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert "status" not in created

    status = crs.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "p1", {"status": {"phase": "Ready"}, "spec": {"replicas": 9}}
    )
    assert status["status"] == {"phase": "Ready"} and status["spec"]["replicas"] == 1

    main = crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "p1", {"status": {"phase": "Broken"}, "spec": {"replicas": 2}}
    )
    assert main["status"] == {"phase": "Ready"} and main["spec"]["replicas"] == 2

    # A full replace (PUT) of the main resource keeps the status too; of /status, the spec.
    main["spec"]["replicas"], main["status"] = 4, {"phase": "Other"}
    replaced = crs.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p1", main)
    assert replaced["spec"]["replicas"] == 4 and replaced["status"] == {"phase": "Ready"}
    replaced["spec"]["replicas"], replaced["status"] = 7, {"phase": "Done"}
    status = crs.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "p1", replaced)
    assert status["spec"]["replicas"] == 4 and status["status"] == {"phase": "Done"}

    with pytest.raises(ApiException) as exc:  # a stale resourceVersion in a PUT conflicts
        crs.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p1", replaced)
    assert exc.value.status == 409


def test_scale_subresource_as_kubectl_scale_uses_it(crs: CustomObjectsApi) -> None:
    created = crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool("p1", 2))
    crs.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "p1", {"status": {"replicas": 1}}
    )
    scale = crs.get_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, "p1")
    assert scale["apiVersion"] == "autoscaling/v1" and scale["kind"] == "Scale"
    assert scale["spec"] == {"replicas": 2} and scale["status"]["replicas"] == 1
    assert scale["metadata"]["uid"] == created["metadata"]["uid"]

    # `kubectl scale --replicas=5` merge-patches the Scale.
    scaled = crs.patch_namespaced_custom_object_scale(
        GROUP, VERSION, NS, PLURAL, "p1", {"spec": {"replicas": 5}}
    )
    assert scaled["spec"]["replicas"] == 5
    after = get_pool(crs, "p1")
    assert after["spec"] == {"replicas": 5, "image": "ubuntu-24.04"}
    assert after["status"] == {"replicas": 1} and after["metadata"]["generation"] == 2

    scaled["spec"]["replicas"] = 0
    crs.replace_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, "p1", scaled)
    assert get_pool(crs, "p1")["spec"]["replicas"] == 0

    with pytest.raises(ApiException) as exc:
        crs.patch_namespaced_custom_object_scale(
            GROUP, VERSION, NS, PLURAL, "p1", {"spec": {"replicas": -1}}
        )
    assert exc.value.status == 422


def test_scale_paths_and_resources_are_configurable() -> None:
    widgets = ResourceSpec(
        resource="example.org/v1/widgets",
        kind="Widget",
        subresources=frozenset({"status", "scale"}),
        spec_replicas_path=".spec.size.count",
        status_replicas_path=".status.ready",
    )
    emulator = ClusterEmulator(specs=(*DEFAULT_RESOURCES, widgets))
    with ClusterEmulatorThread(emulator) as cluster:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            str(cluster.kubeconfig_path), client_configuration=config
        )
        with kubernetes.client.ApiClient(config) as client:
            api = CustomObjectsApi(client)
            body = {"metadata": {"name": "w"}, "spec": {"size": {"count": 3}}}
            api.create_namespaced_custom_object("example.org", "v1", NS, "widgets", body)
            api.patch_namespaced_custom_object_scale(
                "example.org", "v1", NS, "widgets", "w", {"spec": {"replicas": 4}}
            )
            widget = api.get_namespaced_custom_object("example.org", "v1", NS, "widgets", "w")
            assert widget["spec"] == {"size": {"count": 4}}
            assert widget["kind"] == "Widget"


def test_secret_and_lease(api_client: kubernetes.client.ApiClient) -> None:
    core, coordination = CoreV1Api(api_client), CoordinationV1Api(api_client)
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "cloud-creds"}, "stringData": {"key": "k"}, "data": {"s": "cw=="}}
    )
    secret = core.read_namespaced_secret("cloud-creds", NS)
    assert secret.data == {"s": "cw=="} and secret.metadata.resource_version

    lease = coordination.create_namespaced_lease(
        NS, {"metadata": {"name": "cloudpilot"}, "spec": {"holderIdentity": "op-1"}}
    )
    lease.spec.holder_identity = "op-2"
    updated = coordination.replace_namespaced_lease("cloudpilot", NS, lease)
    assert updated.spec.holder_identity == "op-2"
    assert int(updated.metadata.resource_version) > int(lease.metadata.resource_version)
    with pytest.raises(ApiException) as exc:  # the lease changed since `lease` was read
        coordination.replace_namespaced_lease("cloudpilot", NS, lease)
    assert exc.value.status == 409
    renewed = coordination.patch_namespaced_lease(
        "cloudpilot", NS, {"spec": {"leaseDurationSeconds": 15}}
    )
    assert renewed.spec.holder_identity == "op-2" and renewed.spec.lease_duration_seconds == 15
    assert [ns.metadata.name for ns in core.list_namespace().items] == ["default"]


def test_label_and_field_selectors(crs: CustomObjectsApi) -> None:
    for name, site in [("a", "cern"), ("b", "pic"), ("c", "cern")]:
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool(name, site=site))

    def names(**kwargs: str) -> list[str]:
        listed = crs.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        return [item["metadata"]["name"] for item in listed["items"]]

    assert names(label_selector="site=cern") == ["a", "c"]
    assert names(label_selector="site!=cern") == ["b"]
    assert names(label_selector="site in (pic, other)") == ["b"]
    assert names(label_selector="!site") == []
    assert names(field_selector="metadata.name=b") == ["b"]
    first = crs.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=2)
    rest = crs.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, limit=2, _continue=first["metadata"]["continue"]
    )
    assert [i["metadata"]["name"] for i in first["items"] + rest["items"]] == ["a", "b", "c"]
    assert "continue" not in rest["metadata"]


def test_finalizers_block_deletion(crs: CustomObjectsApi) -> None:
    body = pool("p1")
    body["metadata"]["finalizers"] = ["cloudpilot.io/finalizer"]
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    crs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p1")
    deleting = get_pool(crs, "p1")
    assert deleting["metadata"]["deletionTimestamp"]

    patch = {"metadata": {"finalizers": None}}
    last = crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p1", patch)
    assert last["metadata"]["deletionTimestamp"] and "finalizers" not in last["metadata"]
    assert is_gone(crs, "p1")


def watch_events(
    list_fn: Any, *args: Any, count: int | None = None, **kwargs: Any
) -> list[tuple[str, str]]:
    """Watch through the official client; stop after ``count`` events or the server timeout."""
    watch, events = kubernetes.watch.Watch(), []
    for event in watch.stream(list_fn, *args, timeout_seconds=kwargs.pop("timeout", 5), **kwargs):
        events.append((event["type"], event["object"]["metadata"]["name"]))
        if len(events) == count:
            watch.stop()
    return events


def test_watch_resumes_from_a_resource_version(crs: CustomObjectsApi) -> None:
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool("before"))
    since = crs.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["metadata"]
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool("after", site="x"))
    crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "after", {"spec": {"x": 1}})
    crs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "before")
    args = (crs.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL)

    # As kopf does: list, then watch from the list's resourceVersion to miss nothing.
    events = watch_events(*args, resource_version=since["resourceVersion"], count=3)
    assert events == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]

    # A selector-filtered watch sees objects enter and leave the selection. The server ends
    # the stream after timeoutSeconds (and so the client's loop ends).
    patch = {"metadata": {"labels": {"site": "y"}}}
    crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "after", patch)
    events = watch_events(
        *args, resource_version=since["resourceVersion"], label_selector="site=x", timeout=1
    )
    assert events == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]

    # Without a version, a watch starts with the current objects as synthetic ADDEDs.
    assert watch_events(*args, count=1) == [("ADDED", "after")]


def test_watch_from_a_compacted_version_is_gone() -> None:
    with ClusterEmulatorThread(ClusterEmulator(event_log_size=2)) as cluster:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            str(cluster.kubeconfig_path), client_configuration=config
        )
        with kubernetes.client.ApiClient(config) as client:
            crs = CustomObjectsApi(client)
            for name in "abc":
                crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool(name))
            stream = kubernetes.watch.Watch().stream(
                crs.list_namespaced_custom_object,
                GROUP,
                VERSION,
                NS,
                PLURAL,
                resource_version="1",
                timeout_seconds=1,
            )
            with pytest.raises(ApiException) as exc:
                list(stream)
            assert exc.value.status == 410  # kopf and clients then re-list


def test_discovery_lists_the_declared_resources(cluster: ClusterEmulatorThread) -> None:
    def get(path: str) -> Any:
        with urllib.request.urlopen(cluster.url + path, timeout=5) as response:  # noqa: S310
            return json.load(response)

    names = {r["name"]: r for r in get(f"/apis/{GROUP}/{VERSION}")["resources"]}
    assert set(names) == {PLURAL, f"{PLURAL}/status", f"{PLURAL}/scale"}
    assert names[PLURAL]["kind"] == "CloudPilotPool" and names[PLURAL]["namespaced"]
    assert set(names[PLURAL]["shortNames"]) == {"cpp", "cppool"}
    assert names[PLURAL]["categories"] == ["cloudpilot"]
    core = {r["name"] for r in get("/api/v1")["resources"]}
    assert {"namespaces", "events", "secrets", "configmaps"} <= core
    groups = {g["name"] for g in get("/apis")["groups"]}
    assert {GROUP, "apiextensions.k8s.io", "coordination.k8s.io"} <= groups


def test_kmock_reactions_still_take_precedence(
    api_client: kubernetes.client.ApiClient, cluster: ClusterEmulatorThread
) -> None:
    core = CoreV1Api(api_client)
    emulator = cluster.emulator
    cluster.call(lambda: emulator[kmock.action.CREATE, kmock.resource("v1/configmaps")] << 503)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})
    assert exc.value.status == 503
    assert core.list_namespaced_config_map(NS).items == []  # an intercepted write stores nothing


def test_only_loopback_addresses_are_served() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ClusterEmulatorThread(host="0.0.0.0")


async def test_serve_cluster_in_the_current_loop(tmp_path: Path) -> None:
    async with serve_cluster() as served:
        kubeconfig = served.write_kubeconfig(tmp_path / "kubeconfig")
        assert f"server: {served.url}" in kubeconfig.read_text()
        url = f"{served.url}/api/v1/namespaces/{NS}/configmaps"
        async with aiohttp.ClientSession() as session:
            body = {"metadata": {"name": "cm"}, "data": {"k": "v"}}
            async with session.post(url, json=body) as response:
                assert response.status == 201
        assert served.emulator.objects["v1/configmaps", NS, "cm"] >= {"data": {"k": "v"}}


def test_the_thread_and_the_socket_are_released() -> None:
    with ClusterEmulatorThread() as cluster:
        port = int(cluster.url.rsplit(":", 1)[1])
        kubeconfig = cluster.kubeconfig_path
        assert kubeconfig.exists()
    assert not any(t.name == "cloudpilot-kube-emulator" for t in threading.enumerate())
    assert not kubeconfig.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


@pytest.mark.slow
def test_a_kopf_operator_runs_against_the_emulator(
    cluster: ClusterEmulatorThread, crs: CustomObjectsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig_path))
    calls: collections.Counter[str] = collections.Counter()
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        calls["create"] += 1
        patch.status["phase"] = "Ready"
        kopf.info(body, reason="Accepted", message="the pool is accepted")  # a k8s Event

    @kopf.timer(GROUP, VERSION, PLURAL, interval=0.1, registry=registry)
    def tick(**_: Any) -> None:
        calls["timer"] += 1

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def deleted(**_: Any) -> None:
        calls["delete"] += 1

    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = "cloudpilot.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cloudpilot.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cloudpilot.io", key="last-handled-configuration"
    )

    with OperatorThread(registry, settings=settings):
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pool("p1"))
        ready = wait_for(
            lambda: (obj := get_pool(crs, "p1")).get("status", {}).get("phase") == "Ready" and obj,
            message="the create handler patched the status",
        )
        wait_for(lambda: calls["timer"] >= 3, message="the timer ran three times")
        assert calls["create"] == 1  # many later events, still one creation
        assert ready["metadata"]["finalizers"] == ["cloudpilot.io/finalizer"]
        assert "cloudpilot.io/last-handled-configuration" in ready["metadata"]["annotations"]
        assert ready["metadata"]["generation"] == 1  # status & annotations: no new generation

        core = CoreV1Api(crs.api_client)
        wait_for(  # kopf posts k8s Events in the background, named with generateName
            lambda: any(
                e.involved_object.name == "p1" for e in core.list_namespaced_event(NS).items
            ),
            message="kopf posted an event about p1",
        )

        crs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p1")
        wait_for(lambda: is_gone(crs, "p1"), message="the pool is deleted")
        assert calls["delete"] == 1
