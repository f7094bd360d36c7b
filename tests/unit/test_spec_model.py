"""The spec model: what a manifest may say, and how a wrong one is reported.

The CRD schema rejects most mistakes at ``kubectl apply``; these tests hold the operator's
own check to the same rules, because a pool applied before a CRD upgrade (or to a cluster
that skips validation) must get a readable ``InvalidConfig`` condition, not a traceback or,
worse, a silently ignored typo.
"""

from __future__ import annotations

import pydantic
import pytest

from cloudpilot import constants
from cloudpilot.models.spec import (
    DeletionPolicy,
    ScaleDownPolicy,
    TemplateFamily,
    describe_validation_error,
    parse_spec,
)
from tests.support.builders import pool_spec


def _error(raw: dict) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        parse_spec(raw)
    return describe_validation_error(caught.value)


def test_minimal_pool_parses_with_documented_defaults() -> None:
    """A pool that says only what it must gets Delete on removal and no queues."""
    spec = parse_spec(pool_spec())
    assert spec.ce == "cloud.example.org"
    assert spec.deletion_policy is DeletionPolicy.DELETE
    assert spec.queues is None
    assert spec.replicas is None


def test_camel_case_manifest_fields_map_to_python_names() -> None:
    """Manifests are written in camelCase (api.md); every such field must be understood."""
    spec = parse_spec(
        pool_spec(
            replicas=3,
            bootTimeout=900,
            scaleDownPolicy="DeleteRunning",
            deletionPolicy="Orphan",
            instance={
                "image": "ami-1",
                "flavor": "m5.large",
                "networks": ["subnet-1"],
                "sshKey": "ops",
                "createOptions": {"ex_security_groups": ["pilots"]},
            },
            context={
                "template": {"name": "tpl", "key": "user-data.yaml"},
                "templateFamily": "centos7",
                "extPackages": ["htop"],
                "maxLifetime": 3600,
                "haltGracePeriod": 0,
                "userDataLimit": 16384,
            },
            pilot={
                "executableSecret": {"name": "pilot", "key": "wrapper.sh"},
                "proxySecret": {"name": "proxy", "key": "x509"},
            },
            limits={"maxInstances": 10, "maxStarting": 2},
            backoff={"initialSeconds": 5, "maxSeconds": 60},
        )
    )
    assert spec.replicas == 3
    assert spec.boot_timeout == 900
    assert spec.scale_down_policy is ScaleDownPolicy.DELETE_RUNNING
    assert spec.deletion_policy is DeletionPolicy.ORPHAN
    assert spec.instance is not None and spec.instance.ssh_key == "ops"
    assert spec.instance.create_options == {"ex_security_groups": ["pilots"]}
    assert spec.context is not None and spec.context.template_family is TemplateFamily.CENTOS7
    assert spec.context.halt_grace_period == 0
    assert spec.pilot is not None and spec.pilot.executable_secret is not None
    assert spec.pilot.executable_secret.key == "wrapper.sh"
    assert spec.limits is not None and spec.limits.max_starting == 2
    assert spec.backoff is not None and spec.backoff.max_seconds == 60


def test_driver_options_keep_their_yaml_types() -> None:
    """DIRAC passed every Driver_* option as a string, so ``secure = False`` meant HTTPS."""
    spec = parse_spec(pool_spec(driver={"secure": False, "port": 8774, "host": "nova"}))
    assert spec.driver == {"secure": False, "port": 8774, "host": "nova"}
    assert spec.driver["secure"] is False


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (pool_spec(maxInstance=3), "spec.maxInstance"),
        (pool_spec(instance={"image": "a", "flavor": "b", "imgae": "c"}), "spec.instance.imgae"),
        (pool_spec(context={"maxLifeTime": 60}), "spec.context.maxLifeTime"),
        (pool_spec(queues=[{"name": "a", "replica": 1}]), "spec.queues.0.replica"),
        (pool_spec(queues=[{"name": "a", "ce": "other"}]), "spec.queues.0.ce"),
    ],
)
def test_unknown_field_is_rejected_with_its_path(raw: dict, where: str) -> None:
    """A typo must be an error pointing at it, never a setting that silently does nothing."""
    message = _error(raw)
    assert where in message
    assert "Extra inputs are not permitted" in message


def test_ce_is_required() -> None:
    assert "spec.ce" in _error(pool_spec(ce=None))


def test_spec_replicas_with_queues_is_rejected() -> None:
    """Two places to say how many VMs would leave the user guessing which one counts."""
    message = _error(pool_spec(replicas=2, queues=[{"name": "a", "replicas": 1}]))
    assert "spec.replicas" in message


def test_duplicate_queue_names_are_rejected_and_named() -> None:
    """Two queues of one name would share a VM prefix and fight over the same VMs."""
    message = _error(pool_spec(queues=[{"name": "a"}, {"name": "b"}, {"name": "a"}, {"name": "b"}]))
    assert "unique" in message
    assert "a, b" in message


@pytest.mark.parametrize("name", ["", "Upper", "under_score", "-lead", "trail-", "a" * 64, "a.b"])
def test_queue_name_must_be_a_dns_label(name: str) -> None:
    """Queue names end up in VM names and labels, which only allow DNS-label characters."""
    assert "spec.queues.0.name" in _error(pool_spec(queues=[{"name": name}]))


@pytest.mark.parametrize("name", ["a", "gpu-long", "q1", "a" * 63])
def test_valid_queue_names_are_accepted(name: str) -> None:
    assert parse_spec(pool_spec(queues=[{"name": name}])).queues[0].name == name


def test_queue_replicas_default_to_zero() -> None:
    """A queue listed without replicas exists (and keeps its VMs' prefix) but asks for none."""
    assert parse_spec(pool_spec(queues=[{"name": "a"}])).queues[0].replicas == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("replicas", -1),
        ("bootTimeout", 29),
        ("limits", {"maxInstances": -1}),
        ("limits", {"maxStarting": 0}),
        ("context", {"maxLifetime": 59}),
        ("context", {"haltGracePeriod": -1}),
        ("context", {"haltGracePeriod": 86_401}),
        ("context", {"userDataLimit": 1023}),
        ("backoff", {"initialSeconds": 0}),
        ("deletionPolicy", "Keep"),
        ("scaleDownPolicy", "Random"),
        ("context", {"templateFamily": "windows"}),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: object) -> None:
    assert f"spec.{field}" in _error(pool_spec(**{field: value}))


@pytest.mark.parametrize(
    ("raw", "where", "maximum"),
    [
        ({"replicas": 10**9}, "spec.replicas", constants.MAX_REPLICAS),
        (
            {"queues": [{"name": "a"}, {"name": "b", "replicas": 10**9}]},
            "spec.queues.1.replicas",
            constants.MAX_REPLICAS,
        ),
        ({"limits": {"maxInstances": 10**9}}, "spec.limits.maxInstances", constants.MAX_LIMIT),
        (
            {"queues": [{"name": "a", "limits": {"maxStarting": 10**9}}]},
            "spec.queues.0.limits.maxStarting",
            constants.MAX_LIMIT,
        ),
        (
            {"context": {"maxLifetime": 10**18}},
            "spec.context.maxLifetime",
            constants.MAX_LIFETIME_SECONDS,
        ),
        ({"bootTimeout": 10**18}, "spec.bootTimeout", constants.MAX_BOOT_TIMEOUT),
        (
            {"context": {"userDataLimit": 10**9}},
            "spec.context.userDataLimit",
            constants.MAX_USER_DATA_LIMIT,
        ),
        ({"backoff": {"maxSeconds": 1e300}}, "spec.backoff.maxSeconds", 86400),
    ],
)
def test_counts_above_their_maximum_are_refused_naming_field_and_bound(
    raw: dict, where: str, maximum: int
) -> None:
    """The CRD's maxima, repeated: a pool stored under a CRD without them (an older one)
    must be InvalidConfig with a message a user can act on, never planned."""
    message = _error(pool_spec(**raw))
    assert where in message and str(maximum) in message


def test_counts_at_their_maximum_are_accepted() -> None:
    spec = parse_spec(
        pool_spec(
            queues=[
                {"name": "a", "replicas": constants.MAX_REPLICAS, "bootTimeout": 86_400},
                {"name": "b", "limits": {"maxInstances": constants.MAX_LIMIT}},
            ],
            context={"maxLifetime": constants.MAX_LIFETIME_SECONDS},
        )
    )
    assert spec.queues is not None and spec.queues[0].replicas == constants.MAX_REPLICAS


def test_halt_grace_period_of_zero_is_allowed() -> None:
    """0 s means power off as soon as the pilot ends: a real choice for a busy site."""
    spec = parse_spec(pool_spec(context={"haltGracePeriod": 0}))
    assert spec.context is not None and spec.context.halt_grace_period == 0


def test_empty_lookup_is_rejected_and_whitespace_stripped() -> None:
    """An empty image would be sent to the cloud as an id; a stray space never means anything."""
    assert "spec.instance.image" in _error(pool_spec(instance={"image": "  ", "flavor": "x"}))
    spec = parse_spec(pool_spec(instance={"image": " ami-1 ", "flavor": "name: m5 "}))
    assert spec.instance is not None
    assert spec.instance.image == "ami-1"
    assert spec.instance.flavor == "name: m5"


def test_spec_is_immutable() -> None:
    """The parsed spec is shared by the planner and the cloud adapter; nobody may edit it."""
    spec = parse_spec(pool_spec())
    with pytest.raises(pydantic.ValidationError):
        spec.ce = "other"  # type: ignore[misc]


def test_validation_error_is_described_one_problem_per_entry() -> None:
    message = _error(pool_spec(replicas=-1, bootTimeout=1))
    parts = message.split("; ")
    assert len(parts) == 2
    assert all(p.startswith("spec.") for p in parts)


def test_describe_validation_error_accepts_any_exception() -> None:
    """The reconciler may hand over whatever it caught; the description must not raise."""
    assert describe_validation_error(ValueError("plain")) == "plain"
