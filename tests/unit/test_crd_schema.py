"""The CloudPilotPool CRD: what ``kubectl apply`` accepts, and that it agrees with the operator.

Two layers check a pool, and these tests hold them to each other:

* **The CRD** (``crds/cloudpilotpools.cloudpilot.io.yaml``), checked by the API server at
  apply time. Types, enums, bounds, patterns and unknown fields are its structural schema,
  run here with ``jsonschema``; unique queue names are its list-map keys; the rules that
  span fields (``cloudType``, ``credentialsSecret``, ``instance.image`` and
  ``instance.flavor`` on the pool or on every queue; ``replicas`` xor ``queues``; ``name:``
  with a name) are CEL, evaluated here with ``cel-python``, a real CEL implementation
  (see ``tests/support/crd.py`` for what it emulates and what it cannot).
* **The operator's model** (``cloudpilot.models.spec.parse_spec`` and
  ``cloudpilot.models.queues.effective_queues``), for pools that reached the cluster
  without that validation (written before a CRD upgrade, or with validation skipped). It
  checks the same rules, so such a pool gets an ``InvalidConfig`` condition, not a crash.

Every example and valid case passes both; every invalid case is refused by the CRD and says
whether the model refuses it too, or why accepting it is harmless (the CRD is stricter in a
few places: patterns, bounds). The CRD's spec schema is generated from the model
(``python -m scripts.crdgen``), so the two agree field by field by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml

from cloudpilot import constants
from cloudpilot.memory import Backoff, CloudError, ErrorKind, PendingVM, PoolMemory
from cloudpilot.models.queues import ConfigError, effective_queues
from cloudpilot.models.spec import parse_spec
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.planner import Hold, Plan, QueueSummary
from cloudpilot.status import RECORD_KEYS, STATUS_KEYS, StatusInputs, build_status
from tests.support.crd import (
    CRD_PATH,
    EXAMPLES,
    apply_defaults,
    cel_environment,
    load_crd,
    pool_schema,
    problems,
    structural_problems,
    unbounded_nodes,
    unknown_rule_fields,
    walk,
)

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parent / "crd_cases"
DOCS = ROOT / "docs" / "configuration.md"
NAMESPACE = "grid"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.yaml"))


def _objects(paths: list[Path], kind: str | None = None) -> Iterator[Any]:
    for path in paths:
        for index, doc in enumerate(_documents(path)):
            if kind is None or doc.get("kind") == kind:
                yield pytest.param(doc, id=f"{path.relative_to(ROOT)}#{index}")


EXAMPLE_POOLS = list(_objects(_example_files(), "CloudPilotPool"))
VALID_POOLS = list(_objects(sorted((CASES / "valid").glob("*.yaml")), "CloudPilotPool"))
INVALID_CASES = yaml.safe_load((CASES / "invalid.yaml").read_text())


def _pool(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = {
        "apiVersion": "cloudpilot.io/v1alpha1",
        "kind": "CloudPilotPool",
        "metadata": {"name": "case", "namespace": NAMESPACE},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def _operator_parse(obj: dict[str, Any]) -> None:
    """What the reconciler does with a pool before touching any cloud."""
    spec = parse_spec(obj["spec"])
    queues = effective_queues(spec, namespace=NAMESPACE, pool_name=obj["metadata"]["name"])
    assert queues, "a pool always has at least one queue"


# -- the CRD itself ---------------------------------------------------------------------------


def test_crd_is_a_valid_kubernetes_object() -> None:
    """The manifest must be a well-formed apiextensions/v1 CRD, field names and all (a typo
    such as ``additionalPrinterColumn`` would otherwise be dropped silently on apply)."""
    kubernetes_validate.validate(load_crd(), kubernetes_validate.latest_version(), strict=True)


def test_crd_carries_the_fixed_api_names() -> None:
    """Group, version, kind and plural are a contract (shared/guides/api.md) with users,
    dashboards and the operator itself (constants)."""
    crd = load_crd()
    spec = crd["spec"]
    names = spec["names"]
    assert crd["metadata"]["name"] == f"{constants.PLURAL}.{constants.API_GROUP}"
    assert spec["group"] == constants.API_GROUP
    assert spec["scope"] == "Namespaced"
    assert names["kind"] == constants.KIND
    assert names["plural"] == constants.PLURAL
    assert names["singular"] == "cloudpilotpool"
    assert names["shortNames"] == ["cpp", "cppool"]
    # An own category only: `kubectl get all` / `kubectl delete all` must not reach pools.
    assert names["categories"] == ["cloudpilot"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (
        constants.API_VERSION,
        True,
        True,
    )


def test_crd_is_the_only_yaml_in_crds() -> None:
    """``kubectl apply -f crds/`` and the package data take every YAML file there."""
    assert sorted(p.name for p in CRD_PATH.parent.glob("*.y*ml")) == [CRD_PATH.name]


def test_schema_is_structural_and_documented() -> None:
    """A v1 CRD whose schema is not structural is refused by the API server; a field
    without a description is a blank in ``kubectl explain``, the user's first doc."""
    assert structural_problems(pool_schema()) == []


def test_spec_lists_and_strings_are_bounded() -> None:
    """The API server refuses CEL rules whose estimated cost is too high, and estimates from
    maxItems and maxLength: unbounded inputs would fail the CRD at apply time."""
    assert unbounded_nodes(pool_schema()) == []


def test_cel_rules_compile_and_name_existing_fields() -> None:
    """A rule that does not compile, or names a field the schema lacks, makes the API server
    refuse the whole CRD."""
    schema = pool_schema()
    rules = [
        r["rule"] for _, node in walk(schema) for r in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 6
    environment = cel_environment()
    for rule in rules:
        environment.compile(rule)
    assert unknown_rule_fields(schema) == []


def test_status_and_scale_subresources() -> None:
    """``status`` is written apart from the spec (users cannot overwrite it, and a status
    write does not bump the generation); ``kubectl scale`` and autoscalers use ``scale``,
    and HPA and KEDA refuse a scale target without a selector ("selector is required")."""
    (version,) = load_crd()["spec"]["versions"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    assert pool_schema()["properties"]["status"]["properties"]["selector"]["type"] == "string"


def test_printer_columns_show_the_pool_at_a_glance() -> None:
    """``kubectl get cpp``: desired against live VMs, how many run a pilot, and Ready."""
    (version,) = load_crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "Desired",
        "Live",
        "Running",
        "Starting",
        "Ready",
        "Reason",
        "Message",
        "Age",
    ]
    assert columns["Desired"]["jsonPath"] == ".status.desiredReplicas"
    assert columns["Live"]["jsonPath"] == ".status.replicas"
    assert columns["Running"]["jsonPath"] == ".status.running"
    assert columns["Starting"]["jsonPath"] == ".status.starting"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Reason"]["priority"] == 1
    # The Ready message (why a pool is not ready, in full) only with -o wide.
    assert columns["Message"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].message'
    assert columns["Message"]["priority"] == 1 and columns["Message"]["type"] == "string"
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    status = pool_schema()["properties"]["status"]["properties"]
    for column in columns.values():
        field = column["jsonPath"].split(".")[2].split("[")[0]
        if column["jsonPath"].startswith(".status"):
            assert field in status, f"column {column['name']} reads an undeclared field"


# -- examples ---------------------------------------------------------------------------------


def test_every_example_file_holds_a_pool_or_a_template() -> None:
    """So that a new example cannot be skipped by the parametrised tests below."""
    files = _example_files()
    assert {p.name for p in files} >= {
        "openstack-pool.yaml",
        "ec2-pool.yaml",
        "multi-queue-pool.yaml",
    }
    assert any(p.parent.name == "secrets" for p in files)
    for path in files:
        kinds = {d.get("kind") for d in _documents(path)}
        allowed = {"CloudPilotPool", "Secret", "ConfigMap"}
        if "gitops" in path.parts:  # a Git repository's layout (docs/gitops.md)
            allowed |= {"Namespace", "Kustomization", "Application", "GitRepository", "HelmRelease"}
        if "autoscaling" in path.parts:  # validated on the API server (test_autoscaler_examples)
            allowed |= {"HorizontalPodAutoscaler", "ScaledObject"}
        assert kinds <= allowed, path
    assert len(EXAMPLE_POOLS) >= 3


@pytest.mark.parametrize("obj", EXAMPLE_POOLS)
def test_example_pool_is_accepted_by_the_crd(obj: dict[str, Any]) -> None:
    assert [str(p) for p in problems(obj)] == []


@pytest.mark.parametrize("obj", EXAMPLE_POOLS)
def test_example_pool_parses_with_the_operator_model(obj: dict[str, Any]) -> None:
    """As applied, and as stored after the API server filled in the schema's defaults."""
    _operator_parse(obj)
    _operator_parse(apply_defaults(pool_schema(), obj))


@pytest.mark.parametrize(
    "obj",
    list(_objects(_example_files(), "Secret")) + list(_objects(_example_files(), "ConfigMap")),
)
def test_example_secrets_are_valid_kubernetes_objects(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_example_pools_reference_secrets_the_examples_define() -> None:
    """Applying an example with the templates in examples/secrets/ gives a pool whose every
    Secret reference resolves, key included: the examples are meant to be run."""
    secrets: dict[str, set[str]] = {}
    for path in _example_files():
        for doc in _documents(path):
            if doc.get("kind") == "Secret":
                keys = set(doc.get("stringData", {})) | set(doc.get("data", {}))
                secrets[doc["metadata"]["name"]] = keys
    for param in EXAMPLE_POOLS:
        (obj,) = param.values
        for queue in effective_queues(
            parse_spec(obj["spec"]), namespace=NAMESPACE, pool_name=obj["metadata"]["name"]
        ):
            credentials = queue.account.credentials_secret
            assert credentials in secrets, f"{param.id}: no Secret {credentials}"
            assert {"key"} <= secrets[credentials] or "cloud.auth" in secrets[credentials]
            ref = queue.executable_secret
            assert ref is not None, f"{param.id}: a pool without a pilot runs nothing"
            assert ref.key in secrets.get(ref.name, set()), f"{param.id}: no {ref.name}/{ref.key}"


def test_openstack_example_is_the_seeds_documented_example() -> None:
    """The DIRAC documentation's OpenStack CE, option for option, so a site admin can see
    where each of their settings goes."""
    (obj,) = [p.values[0] for p in EXAMPLE_POOLS if p.id.startswith("examples/openstack-pool.yaml")]
    spec = obj["spec"]
    assert spec["ce"] == "cloudprov.mysite.example"
    assert spec["cloudType"] == "OPENSTACK"
    assert spec["driver"] == {
        "ex_force_auth_url": "https://cloudprov.mysite.example:5000",
        "ex_force_auth_version": "3.x_password",
        "ex_tenant_name": "clouduser",
    }
    instance = spec["instance"]
    assert instance["image"] == "name:CentOS-7-x86_64-GenericCloud-1905"
    assert instance["flavor"] == "name:m1.medium"
    assert instance["networks"] == ["name:my_public_net", "name:my_private_net"]
    assert instance["sshKey"] == "mysshkey"
    (secret,) = [d for d in _documents(EXAMPLES / "openstack-pool.yaml") if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == spec["credentialsSecret"]["name"]
    assert secret["stringData"] == {"key": "cloudprovuser", "secret": "01234567"}


def test_ec2_example_overrides_per_queue() -> None:
    """The EC2 example shows both merge rules: driver and createOptions key by key, the
    rest replaced whole."""
    (obj,) = [p.values[0] for p in EXAMPLE_POOLS if p.id.startswith("examples/ec2-pool.yaml")]
    queues = {
        q.name: q
        for q in effective_queues(parse_spec(obj["spec"]), namespace=NAMESPACE, pool_name="p")
    }
    assert queues["standard"].account.options == {"region": "eu-west-1"}
    assert queues["spot-us"].account.options == {"region": "us-east-1"}
    assert queues["highmem"].create_options["ex_ebs_optimized"] is True
    assert queues["highmem"].create_options["ex_security_groups"] == ["dirac-pilots"]
    assert str(queues["highmem"].image) == str(queues["standard"].image)


# -- valid and invalid cases ------------------------------------------------------------------


@pytest.mark.parametrize("obj", VALID_POOLS)
def test_valid_case_is_accepted_by_both_layers(obj: dict[str, Any]) -> None:
    assert [str(p) for p in problems(obj)] == []
    _operator_parse(obj)
    _operator_parse(apply_defaults(pool_schema(), obj))


def test_defaults_are_filled_in_as_the_operator_expects() -> None:
    """Defaulting happens in the API server before the operator reads a pool; a default
    the model would refuse (say ``spec.replicas: 0`` next to queues) would break pools."""
    (obj,) = [p.values[0] for p in VALID_POOLS if p.id.endswith("queues-only.yaml#0")]
    stored = apply_defaults(pool_schema(), obj)
    assert stored["spec"]["deletionPolicy"] == "Delete"
    assert stored["spec"]["scaleDownPolicy"] == "Drain"
    assert stored["spec"]["context"]["maxLifetime"] == constants.DEFAULT_MAX_LIFETIME
    assert [q.get("replicas") for q in stored["spec"]["queues"]] == [1, 0]
    assert "replicas" not in stored["spec"]


def test_invalid_cases_cover_every_layer() -> None:
    assert {c["layer"] for c in INVALID_CASES} == {"schema", "list", "cel"}
    assert len({c["name"] for c in INVALID_CASES}) == len(INVALID_CASES)


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c["name"] for c in INVALID_CASES])
def test_invalid_case_is_refused_by_the_crd(case: dict[str, Any]) -> None:
    found = problems(_pool(case["spec"], case.get("status")))
    assert found, "accepted"
    matching = [p for p in found if p.layer == case["layer"] and case["error"] in p.message]
    assert matching, "\n".join(str(p) for p in found)


@pytest.mark.parametrize(
    "case", [c for c in INVALID_CASES if "model" in c], ids=lambda c: c["name"]
)
def test_invalid_case_and_the_operator_model(case: dict[str, Any]) -> None:
    """Either the operator refuses the same spec, or the case says why it need not."""
    obj = _pool(case["spec"])
    if case["model"] == "rejects":
        with pytest.raises((pydantic.ValidationError, ConfigError)):
            _operator_parse(obj)
    else:
        assert case["model"] == "accepts"
        assert case.get("why"), "a rule only the CRD checks must say why that is enough"
        _operator_parse(obj)


# -- the generated schema's properties --------------------------------------------------------
# The CRD's spec schema is generated from the model (scripts/crdgen), so the two cannot drift;
# tests/unit/test_generated_schema.py holds the committed CRD to the generator byte for byte.


def test_queues_take_the_same_overrides_as_the_pool() -> None:
    """Each CE-level option may be overridden by a queue (the seed's rule), with the same
    schema; only descriptions differ (they say what an unset queue value means)."""
    spec = pool_schema()["properties"]["spec"]
    queue = spec["properties"]["queues"]["items"]["properties"]

    def bare(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: bare(v) for k, v in node.items() if k not in ("description", "default")}
        return node

    per_queue_only = {"name", "replicas", "limits"}
    pool_only = {"ce", "replicas", "queues", "limits", "backoff", "deletionPolicy", "dirac"}
    assert set(queue) - per_queue_only == set(spec["properties"]) - pool_only
    for field in set(queue) - per_queue_only:
        assert bare(queue[field]) == bare(spec["properties"][field]), field
    assert bare(queue["limits"]) == bare(spec["properties"]["limits"])
    # A default on a queue's override would always be set, and the queue would never
    # inherit the pool's value: only the queue's own replicas has one.
    queue_defaults = [
        path for path, node in walk(spec["properties"]["queues"]) if "default" in node
    ]
    assert queue_defaults == ["[].replicas"]


def test_pool_defaults_change_nothing_the_operator_does() -> None:
    """The API server fills the schema's defaults into every pool (new and stored ones) before
    the operator reads it: each queue's merged configuration must be the same with and without
    them, and a queue's own value must still win over a defaulted pool value."""
    for param in [*EXAMPLE_POOLS, *VALID_POOLS]:
        (obj,) = param.values
        defaulted = apply_defaults(pool_schema(), obj)
        assert defaulted["spec"]["bootTimeout"] == obj["spec"].get("bootTimeout", 1800)
        name = obj["metadata"]["name"]
        assert effective_queues(
            parse_spec(obj["spec"]), namespace=NAMESPACE, pool_name=name
        ) == effective_queues(parse_spec(defaulted["spec"]), namespace=NAMESPACE, pool_name=name)
    spec = {
        "ce": "ce.example.org",
        "cloudType": "EC2",
        "credentialsSecret": {"name": "creds"},
        "instance": {"image": "ami-1", "flavor": "m5.large"},
        "queues": [
            {
                "name": "own",
                "bootTimeout": 60,
                "scaleDownPolicy": "DeleteRunning",
                "context": {"maxLifetime": 3600, "templateFamily": "centos7"},
            },
            {"name": "inherits"},
        ],
    }
    stored = apply_defaults(pool_schema(), _pool(spec))["spec"]
    assert stored["context"] == {
        "templateFamily": "el9",
        "maxLifetime": 1209600,
        "haltGracePeriod": 300,
    }
    assert stored["backoff"] == {"maxSeconds": 600}
    assert "context" not in stored["queues"][1] and "bootTimeout" not in stored["queues"][1]
    own, inherits = effective_queues(parse_spec(stored), namespace=NAMESPACE, pool_name="p")
    assert (own.boot_timeout, own.max_lifetime, str(own.template_family)) == (60, 3600, "centos7")
    assert own.scale_down_policy.value == "DeleteRunning"
    assert (inherits.boot_timeout, inherits.max_lifetime) == (1800, 1209600)
    assert str(inherits.template_family) == "el9" and inherits.halt_grace_period == 300
    assert inherits.scale_down_policy.value == "Drain"


def test_documented_defaults_are_the_operators() -> None:
    """Descriptions state the defaults the operator applies (constants.py), so that
    ``kubectl explain`` does not lie when a constant changes."""
    spec = pool_schema()["properties"]["spec"]["properties"]
    context = spec["context"]["properties"]
    backoff = spec["backoff"]["properties"]
    expected = {
        "bootTimeout": (spec["bootTimeout"], constants.DEFAULT_BOOT_TIMEOUT),
        "maxLifetime": (context["maxLifetime"], constants.DEFAULT_MAX_LIFETIME),
        "haltGracePeriod": (context["haltGracePeriod"], constants.DEFAULT_HALT_GRACE_PERIOD),
        "initialSeconds": (backoff["initialSeconds"], constants.BACKOFF_INITIAL),
        "maxSeconds": (backoff["maxSeconds"], constants.BACKOFF_MAX),
        "backoff": (spec["backoff"], constants.BACKOFF_MAX_BAD_CREDENTIALS),
    }
    for field, (node, value) in expected.items():
        assert f" {int(value)}" in node["description"], field
    instances = pool_schema()["properties"]["status"]["properties"]["instances"]
    assert str(constants.MAX_STATUS_INSTANCES) in instances["description"]


def _status_from_the_operator() -> dict[str, Any]:
    """A status built by the operator's own code, with every optional part present."""
    now = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    error = CloudError(ErrorKind.QUOTA, "InstanceLimitExceeded: quota", "create")
    memory = PoolMemory(
        pending={"i-new": PendingVM("i-new", "cp-x-new", "small", now)},
        backoff={"big": Backoff(2, now + timedelta(seconds=40), error)},
    )
    observed = [
        ObservedVM("i-1", "cp-x-1", "small", Phase.RUNNING, now - timedelta(hours=1)),
        ObservedVM("i-2", "cp-x-2", "big", Phase.UNKNOWN, None),
        ObservedVM("i-3", "cp-x-3", "gone", Phase.DONE, now - timedelta(days=1)),
    ]
    plan = Plan(
        queues=(
            QueueSummary("small", desired=3, starting=1, running=1, held=Hold.MAX_STARTING),
            QueueSummary("big", desired=2, unknown=1, held=Hold.BACKOFF),
            QueueSummary("gone", desired=0, done=1, deleting=1, in_spec=False),
        )
    )
    inputs = StatusInputs(
        generation=4,
        plan=plan,
        observed=observed,
        memory=memory,
        now=now,
        prefixes={"small": "cp-x-small-1234-"},
        extra={"proxy": {"secondsLeft": 3600}},
    )
    return build_status(inputs, None)


def test_status_the_operator_writes_is_accepted() -> None:
    """A status the schema refused would make every status patch of the operator fail in a
    real cluster (the emulator used by the integration tests does not validate)."""
    status = _status_from_the_operator()
    status["teardownSpec"] = '{"ce":"x","cloudType":"EC2"}'  # Reconciler._record_spec
    assert status["instances"][-1]["createdAt"] is None
    assert {"lastError", "nextRetryAt", "proxy"} <= set(status)
    obj = _pool(
        {
            "ce": "x",
            "cloudType": "EC2",
            "credentialsSecret": {"name": "c"},
            "instance": {"image": "i", "flavor": "f"},
        },
        status,
    )
    assert [str(p) for p in problems(obj)] == []


def test_status_schema_declares_exactly_what_the_operator_owns() -> None:
    """Fields the operator writes but the schema lacks are pruned by the API server without
    a word; ``proxy`` is declared ahead of the issue that fills it."""
    declared = set(pool_schema()["properties"]["status"]["properties"])
    assert declared == {*STATUS_KEYS, *RECORD_KEYS, "proxy"}


def test_configuration_reference_maps_every_seed_option() -> None:
    """Every option of the seed's documentation has a row saying where it went."""
    text = DOCS.read_text()
    for option in (
        "CloudType",
        "CloudAuth",
        "Driver_*",
        "Instance_Image",
        "Instance_Flavor",
        "Instance_Networks",
        "Instance_SSHKey",
        "Context_Template",
        "Context_ExtPackages",
        "Context_MaxLifetime",
    ):
        assert f"`{option}`" in text, option
