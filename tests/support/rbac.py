"""Every Kubernetes API call the operator makes, in one list: the source of truth for RBAC.

The chart's rules (charts/cloudpilot-operator/templates/rbac.yaml) must grant exactly these
calls, no more and no fewer; tests/unit/test_chart.py renders the chart and compares. Each
entry names the code that makes the call, so a change there points here. When the operator
starts making a new call, add it here first: the chart test then says which rule is missing.

Scopes:

* ``watched`` — in every namespace the operator watches (a ClusterRole when it watches all
  of them, else a Role in each listed namespace);
* ``cluster`` — cluster-scoped resources, always through a ClusterRole;
* ``release`` — in the operator's own namespace (the leader-election Lease).

Not listed: API discovery (``/api``, ``/apis``, ``/version``), which every authenticated
user may read through the built-in ``system:discovery`` role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["watched", "cluster", "release"]
When = Literal["always", "all-namespaces", "listed-namespaces", "leader-election", "repeat"]


@dataclass(frozen=True)
class Call:
    group: str  # "" for the core API group
    resource: str  # with "/subresource" where one is used
    verb: str
    scope: Scope
    when: When
    made_by: str
    resource_name: str | None = None  # the rule is limited to this object name


LEASE_NAME = "{lease}"  # the chart's lease name; substituted by the test

OPERATOR_CALLS: tuple[Call, ...] = (
    # -- the pools ------------------------------------------------------------------------------
    Call(
        "cloudpilot.io",
        "cloudpilotpools",
        "list",
        "watched",
        "always",
        "kopf: the initial listing of each watcher (kopf/_cogs/clients/fetching.py)",
    ),
    Call(
        "cloudpilot.io",
        "cloudpilotpools",
        "watch",
        "watched",
        "always",
        "kopf: the pool watch stream (kopf/_cogs/clients/watching.py)",
    ),
    Call(
        "cloudpilot.io",
        "cloudpilotpools",
        "patch",
        "watched",
        "always",
        "kopf: adds/removes the cloudpilot.io/finalizer finalizer and writes its "
        "cloudpilot.io/* progress annotations (kopf/_cogs/clients/patching.py; "
        "cloudpilot.kube.handlers.configure_kopf)",
    ),
    Call(
        "cloudpilot.io",
        "cloudpilotpools/status",
        "patch",
        "watched",
        "always",
        "cloudpilot.kube.status.patch_status: the scheduler's status writes "
        "(KubeClient.patch_status)",
    ),
    # -- what the operator reports --------------------------------------------------------------
    Call(
        "",
        "events",
        "create",
        "watched",
        "always",
        "cloudpilot.kube.events.post_events (reconcile and teardown events): POSTs core v1 Events",
    ),
    Call(
        "",
        "events",
        "patch",
        "watched",
        "repeat",
        "cloudpilot.kube.events.EventRecorder.post: a repeat within ten minutes patches the "
        "posted Event's count and lastTimestamp (the Kubernetes way of aggregating)",
    ),
    # -- what the pools reference (read by name only) -------------------------------------------
    Call(
        "",
        "secrets",
        "get",
        "watched",
        "always",
        "cloudpilot.kube.secrets.read_secret: credentials and the pilot executable "
        "(KubeClient.read_secret)",
    ),
    Call(
        "",
        "configmaps",
        "get",
        "watched",
        "always",
        "cloudpilot.kube.secrets.read_configmap: spec.context.template (KubeClient.read_configmap)",
    ),
    # -- kopf's discovery of the cluster --------------------------------------------------------
    Call(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "list",
        "cluster",
        "always",
        "kopf: resource_observer's watcher lists CRDs first (kopf/_core/reactor/observation.py)",
    ),
    Call(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "watch",
        "cluster",
        "always",
        "kopf: resource_observer re-scans a group when its CRD changes "
        "(kopf/_core/reactor/observation.py)",
    ),
    Call(
        "",
        "namespaces",
        "list",
        "cluster",
        "listed-namespaces",
        "kopf: namespace_observer, only when not cluster-wide (kopf/_core/reactor/observation.py)",
    ),
    Call(
        "",
        "namespaces",
        "watch",
        "cluster",
        "listed-namespaces",
        "kopf: namespace_observer, only when not cluster-wide (kopf/_core/reactor/observation.py)",
    ),
    # -- leader election ------------------------------------------------------------------------
    Call(
        "coordination.k8s.io",
        "leases",
        "create",
        "release",
        "leader-election",
        "cloudpilot.leader.KubernetesLeaseAPI.create (the first candidate; create "
        "cannot be limited by name)",
    ),
    Call(
        "coordination.k8s.io",
        "leases",
        "get",
        "release",
        "leader-election",
        "cloudpilot.leader.KubernetesLeaseAPI.read (every attempt reads first)",
        resource_name=LEASE_NAME,
    ),
    Call(
        "coordination.k8s.io",
        "leases",
        "update",
        "release",
        "leader-election",
        "cloudpilot.leader.KubernetesLeaseAPI.replace (renew, take over, release; "
        "optimistic concurrency through resourceVersion)",
        resource_name=LEASE_NAME,
    ),
)


def expected_calls(
    *, all_namespaces: bool, cluster_discovery: bool = True, leader_election: bool = True
) -> set[Call]:
    """The calls the operator makes in one configuration (what the RBAC must grant)."""
    chosen = set()
    for call in OPERATOR_CALLS:
        if call.when == "all-namespaces" and not all_namespaces:
            continue
        if call.when == "listed-namespaces" and all_namespaces:
            continue
        if call.when == "leader-election" and not leader_election:
            continue
        if call.scope == "cluster" and not all_namespaces and not cluster_discovery:
            continue  # the operator is told not to discover (CLOUDPILOT_CLUSTER_DISCOVERY)
        chosen.add(call)
    return chosen


def rbac_request(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str] | None:
    """(group, resource[/subresource], verb) of one HTTP request, as RBAC sees it.

    None for non-resource URLs (discovery). Used by the tests that record the requests the
    real operator sends to the API emulator.
    """
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis") or len(parts) < (2 if parts[0] == "api" else 3):
        return None  # /version, /api, /apis, /apis/<group>: discovery
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    group = "" if parts[0] == "api" else parts[1]
    if not rest:
        return None  # /api/v1, /apis/group/version: discovery
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # namespaced resource: drop namespaces/<ns>
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub:
        resource = f"{resource}/{sub}"
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, method.lower()
        )
    return group, resource, verb
