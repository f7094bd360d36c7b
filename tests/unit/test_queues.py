"""CE-level options, per-queue overrides, and the flat QueueConfig everything else reads.

DIRAC lets each queue override any CE option; a site admin writes the common settings once
and per queue only what differs. These tests pin down which options override whole, which
merge key by key, what the defaults are, and that an incomplete queue is reported by name.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudpilot import constants
from cloudpilot.models.queues import (
    DEFAULT_QUEUE,
    CloudAccount,
    ConfigError,
    Lookup,
    QueueConfig,
    effective_queues,
)
from cloudpilot.models.spec import (
    ConfigMapKeyRef,
    ScaleDownPolicy,
    SecretKeyRef,
    TemplateFamily,
    parse_spec,
)
from tests.support.builders import NAMESPACE, POOL, pool_spec


def _queues(raw: dict[str, Any]) -> dict[str, QueueConfig]:
    configs = effective_queues(parse_spec(raw), namespace=NAMESPACE, pool_name=POOL)
    return {q.name: q for q in configs}


def _with(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``spec`` with the dotted camelCase ``path`` set, creating blocks on the way."""
    out = copy.deepcopy(spec)
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


# (spec path, pool value, queue value, how to read it, read pool value, read queue value)
OVERRIDABLE: list[tuple[str, Any, Any, Any, Any, Any]] = [
    ("cloudType", "EC2", "OPENSTACK", lambda q: q.account.cloud_type, "EC2", "OPENSTACK"),
    (
        "credentialsSecret",
        {"name": "ce-creds"},
        {"name": "queue-creds"},
        lambda q: q.account.credentials_secret,
        "ce-creds",
        "queue-creds",
    ),
    (
        "instance.image",
        "ami-ce",
        "name:Queue Image",
        lambda q: q.image,
        Lookup(False, "ami-ce"),
        Lookup(True, "Queue Image"),
    ),
    (
        "instance.flavor",
        "name:m5.large",
        "c5.xlarge",
        lambda q: q.flavor,
        Lookup(True, "m5.large"),
        Lookup(False, "c5.xlarge"),
    ),
    (
        "instance.networks",
        ["net-a", "name:public"],
        ["net-q"],
        lambda q: q.networks,
        (Lookup(False, "net-a"), Lookup(True, "public")),
        (Lookup(False, "net-q"),),
    ),
    ("instance.sshKey", "ce-key", "queue-key", lambda q: q.ssh_key, "ce-key", "queue-key"),
    (
        "context.template",
        {"name": "ce-tpl", "key": "t"},
        {"name": "q-tpl", "key": "t"},
        lambda q: q.template,
        ConfigMapKeyRef(name="ce-tpl", key="t"),
        ConfigMapKeyRef(name="q-tpl", key="t"),
    ),
    (
        "context.templateFamily",
        "centos7",
        "el9",
        lambda q: q.template_family,
        TemplateFamily.CENTOS7,
        TemplateFamily.EL9,
    ),
    ("context.extPackages", ["a", "b"], ["c"], lambda q: q.ext_packages, ("a", "b"), ("c",)),
    ("context.maxLifetime", 7200, 600, lambda q: q.max_lifetime, 7200, 600),
    ("context.haltGracePeriod", 60, 0, lambda q: q.halt_grace_period, 60, 0),
    ("context.userDataLimit", 16384, 65535, lambda q: q.user_data_limit, 16384, 65535),
    (
        "pilot.executableSecret",
        {"name": "ce-pilot", "key": "k"},
        {"name": "q-pilot", "key": "k"},
        lambda q: q.executable_secret,
        SecretKeyRef(name="ce-pilot", key="k"),
        SecretKeyRef(name="q-pilot", key="k"),
    ),
    (
        "pilot.proxySecret",
        {"name": "ce-proxy", "key": "p"},
        {"name": "q-proxy", "key": "p"},
        lambda q: q.proxy_secret,
        SecretKeyRef(name="ce-proxy", key="p"),
        SecretKeyRef(name="q-proxy", key="p"),
    ),
    ("bootTimeout", 600, 3600, lambda q: q.boot_timeout, 600, 3600),
    (
        "scaleDownPolicy",
        "DeleteRunning",
        "Drain",
        lambda q: q.scale_down_policy,
        ScaleDownPolicy.DELETE_RUNNING,
        ScaleDownPolicy.DRAIN,
    ),
]


@pytest.mark.parametrize(
    ("path", "pool_value", "queue_value", "read", "from_pool", "from_queue"),
    OVERRIDABLE,
    ids=[row[0] for row in OVERRIDABLE],
)
def test_queue_override_wins_and_other_queues_keep_the_ce_value(
    path: str, pool_value: Any, queue_value: Any, read: Any, from_pool: Any, from_queue: Any
) -> None:
    """Every CE-level option may be overridden by a queue, for that queue only."""
    raw = _with(pool_spec(), path, pool_value)
    raw["queues"] = [{"name": "plain"}, _with({"name": "special"}, path, queue_value)]
    queues = _queues(raw)
    assert read(queues["plain"]) == from_pool
    assert read(queues["special"]) == from_queue


@pytest.mark.parametrize(
    ("path", "queue_value", "read", "from_queue"),
    [
        ("instance.sshKey", "q-key", lambda q: q.ssh_key, "q-key"),
        ("context.maxLifetime", 600, lambda q: q.max_lifetime, 600),
        ("bootTimeout", 60, lambda q: q.boot_timeout, 60),
        ("context.extPackages", ["x"], lambda q: q.ext_packages, ("x",)),
        ("instance.networks", ["n"], lambda q: q.networks, (Lookup(False, "n"),)),
    ],
)
def test_queue_may_set_an_option_the_ce_leaves_unset(
    path: str, queue_value: Any, read: Any, from_queue: Any
) -> None:
    raw = pool_spec(queues=[{"name": "plain"}, _with({"name": "special"}, path, queue_value)])
    queues = _queues(raw)
    assert read(queues["special"]) == from_queue
    assert read(queues["plain"]) != from_queue


def test_queue_overriding_one_nested_option_inherits_its_siblings() -> None:
    """Setting ``context.maxLifetime`` on a queue must not drop the CE's ``extPackages``."""
    raw = pool_spec(
        context={"extPackages": ["cvmfs"], "maxLifetime": 86400},
        instance={"image": "ami-ce", "flavor": "m5.large", "sshKey": "ops"},
        queues=[{"name": "q", "context": {"maxLifetime": 600}, "instance": {"flavor": "c5"}}],
    )
    q = _queues(raw)["q"]
    assert q.max_lifetime == 600
    assert q.ext_packages == ("cvmfs",)
    assert q.flavor == Lookup(False, "c5")
    assert q.image == Lookup(False, "ami-ce")
    assert q.ssh_key == "ops"


def test_driver_options_merge_key_by_key_with_types_kept() -> None:
    """A queue that changes the region keeps the CE's ``secure: false`` (a bool, not "False")."""
    raw = pool_spec(
        driver={"secure": False, "region": "eu-west-1", "port": 8774},
        queues=[{"name": "plain"}, {"name": "other", "driver": {"region": "us-east-1"}}],
    )
    queues = _queues(raw)
    assert queues["plain"].account.options == {
        "secure": False,
        "region": "eu-west-1",
        "port": 8774,
    }
    other = queues["other"].account.options
    assert other == {"secure": False, "region": "us-east-1", "port": 8774}
    assert other["secure"] is False
    assert isinstance(other["port"], int)


def test_queue_driver_option_without_ce_driver_block() -> None:
    raw = pool_spec(driver=None, queues=[{"name": "q", "driver": {"ex_force_auth_url": "u"}}])
    assert _queues(raw)["q"].account.options == {"ex_force_auth_url": "u"}


def test_create_options_merge_key_by_key() -> None:
    """``createOptions`` are driver knobs like ``driver``: a queue adds or changes single keys."""
    raw = pool_spec(
        instance={
            "image": "ami-1",
            "flavor": "m5",
            "createOptions": {"ex_config_drive": True, "ex_security_groups": ["a"]},
        },
        queues=[
            {"name": "plain"},
            {"name": "q", "instance": {"createOptions": {"ex_security_groups": ["b"]}}},
        ],
    )
    queues = _queues(raw)
    assert dict(queues["plain"].create_options) == {
        "ex_config_drive": True,
        "ex_security_groups": ["a"],
    }
    assert dict(queues["q"].create_options) == {
        "ex_config_drive": True,
        "ex_security_groups": ["b"],
    }


def test_queue_networks_replace_the_ce_networks_whole() -> None:
    """A queue on another network must not also be attached to the CE's networks."""
    raw = pool_spec(
        instance={"image": "i", "flavor": "f", "networks": ["net-a", "net-b"]},
        queues=[{"name": "q", "instance": {"networks": ["net-c"]}}],
    )
    assert _queues(raw)["q"].networks == (Lookup(False, "net-c"),)


def test_queue_empty_networks_clear_the_ce_networks() -> None:
    """An explicit empty list is a choice (the cloud's default network), not "unset"."""
    raw = pool_spec(
        instance={"image": "i", "flavor": "f", "networks": ["net-a"]},
        queues=[{"name": "q", "instance": {"networks": []}}],
    )
    assert _queues(raw)["q"].networks == ()


def test_queue_empty_ext_packages_clear_the_ce_list() -> None:
    raw = pool_spec(
        context={"extPackages": ["a"]}, queues=[{"name": "q", "context": {"extPackages": []}}]
    )
    assert _queues(raw)["q"].ext_packages == ()


def test_defaults_when_nothing_is_set() -> None:
    """The seed's defaults: two weeks of lifetime, and the documented boot and halt times."""
    q = _queues(pool_spec())[DEFAULT_QUEUE]
    assert q.max_lifetime == constants.DEFAULT_MAX_LIFETIME == 1_209_600
    assert q.boot_timeout == constants.DEFAULT_BOOT_TIMEOUT == 1_800
    assert q.halt_grace_period == constants.DEFAULT_HALT_GRACE_PERIOD == 300
    assert q.scale_down_policy is ScaleDownPolicy.DRAIN
    assert q.template_family is TemplateFamily.EL9
    assert q.networks == ()
    assert q.ext_packages == ()
    assert q.ssh_key is None
    assert q.template is None
    assert q.user_data_limit is None
    assert q.max_instances is None
    assert q.max_starting is None


def test_halt_grace_period_zero_on_the_ce_is_kept() -> None:
    """0 is a value, not "unset": a CE that powers off at once must not get 300 s."""
    q = _queues(pool_spec(context={"haltGracePeriod": 0}))[DEFAULT_QUEUE]
    assert q.halt_grace_period == 0


def test_halt_grace_period_zero_on_a_queue_overrides_the_ce() -> None:
    raw = pool_spec(
        context={"haltGracePeriod": 600}, queues=[{"name": "q", "context": {"haltGracePeriod": 0}}]
    )
    assert _queues(raw)["q"].halt_grace_period == 0


def test_pool_without_queues_is_one_queue_named_default() -> None:
    queues = effective_queues(parse_spec(pool_spec(replicas=4)), namespace="ns", pool_name="p")
    assert [(q.name, q.replicas) for q in queues] == [("default", 4)]
    assert queues[0].pool_namespace == "ns"
    assert queues[0].pool_name == "p"
    assert queues[0].ce == "cloud.example.org"


def test_pool_without_queues_or_replicas_wants_no_vm() -> None:
    assert _queues(pool_spec())[DEFAULT_QUEUE].replicas == 0


def test_empty_queue_list_is_the_implicit_default_queue() -> None:
    """``queues: []`` (a kustomize patch that emptied the list) behaves like no queues."""
    queues = _queues(pool_spec(queues=[], replicas=2))
    assert list(queues) == [DEFAULT_QUEUE]
    assert queues[DEFAULT_QUEUE].replicas == 2


def test_queues_keep_spec_order_and_own_replicas() -> None:
    raw = pool_spec(queues=[{"name": "b", "replicas": 2}, {"name": "a", "replicas": 5}])
    configs = effective_queues(parse_spec(raw), namespace=NAMESPACE, pool_name=POOL)
    assert [(q.name, q.replicas) for q in configs] == [("b", 2), ("a", 5)]


def test_queue_limits_are_per_queue_and_not_inherited_from_the_pool() -> None:
    """``spec.limits`` cap the pool as a whole (planner); a queue's limits are its own."""
    raw = pool_spec(
        limits={"maxInstances": 10, "maxStarting": 3},
        queues=[
            {"name": "capped", "limits": {"maxInstances": 4, "maxStarting": 1}},
            {"name": "free"},
        ],
    )
    queues = _queues(raw)
    assert (queues["capped"].max_instances, queues["capped"].max_starting) == (4, 1)
    assert (queues["free"].max_instances, queues["free"].max_starting) == (None, None)


@pytest.mark.parametrize(
    ("remove", "label"),
    [
        ("cloudType", "cloudType"),
        ("credentialsSecret", "credentialsSecret"),
    ],
)
def test_missing_account_option_is_a_config_error_naming_the_queue(remove: str, label: str) -> None:
    raw = pool_spec(**{remove: None}, queues=[{"name": "gpu"}])
    with pytest.raises(ConfigError) as caught:
        _queues(raw)
    assert "'gpu'" in str(caught.value)
    assert label in str(caught.value)


@pytest.mark.parametrize("field", ["image", "flavor"])
def test_missing_image_or_flavor_is_a_config_error_naming_the_queue(field: str) -> None:
    instance = {"image": "i", "flavor": "f"}
    del instance[field]
    raw = pool_spec(
        instance=instance, queues=[{"name": "ok", "instance": {field: "x"}}, {"name": "bad"}]
    )
    with pytest.raises(ConfigError) as caught:
        _queues(raw)
    assert "'bad'" in str(caught.value)
    assert f"instance.{field}" in str(caught.value)


def test_missing_options_on_the_implicit_queue_name_it_default() -> None:
    raw = pool_spec(instance=None, cloudType=None)
    with pytest.raises(ConfigError) as caught:
        _queues(raw)
    message = str(caught.value)
    assert "'default'" in message
    for label in ("cloudType", "instance.image", "instance.flavor"):
        assert label in message


def test_every_option_may_come_from_the_queue_alone() -> None:
    """A pool of dissimilar queues may leave the CE level empty (but for ``ce``)."""
    raw = {
        "ce": "ce.example.org",
        "queues": [
            {
                "name": "q",
                "cloudType": "OPENSTACK",
                "credentialsSecret": {"name": "c"},
                "instance": {"image": "img", "flavor": "flv"},
            }
        ],
    }
    q = _queues(raw)["q"]
    assert q.account.cloud_type == "OPENSTACK"
    assert q.image == Lookup(False, "img")


@pytest.mark.parametrize(
    ("text", "by_name", "value"),
    [
        ("ami-123", False, "ami-123"),
        ("name:CentOS 7", True, "CentOS 7"),
        ("name: CentOS 7 ", True, "CentOS 7"),
        ("  name:x", True, "x"),
        ("name:with:colon", True, "with:colon"),
        ("Name:x", False, "Name:x"),
        (" 8f3c-uuid ", False, "8f3c-uuid"),
    ],
)
def test_lookup_parsing(text: str, by_name: bool, value: str) -> None:
    """``name:<n>`` looks up by name (spaces inside kept), anything else is a raw id."""
    parsed = Lookup.parse(text)
    assert (parsed.by_name, parsed.value) == (by_name, value)


@pytest.mark.parametrize("text", ["name:", "name:   ", " name: "])
def test_lookup_with_empty_name_is_an_error(text: str) -> None:
    with pytest.raises(ConfigError):
        Lookup.parse(text)


def test_empty_name_lookup_in_a_queue_is_a_config_error_naming_queue_and_field() -> None:
    raw = pool_spec(queues=[{"name": "gpu", "instance": {"flavor": "name:"}}])
    with pytest.raises(ConfigError) as caught:
        _queues(raw)
    assert "'gpu'" in str(caught.value)
    assert "instance.flavor" in str(caught.value)


def test_empty_name_in_networks_is_a_config_error_naming_the_queue() -> None:
    raw = pool_spec(instance={"image": "i", "flavor": "f", "networks": ["net-a", "name: "]})
    with pytest.raises(ConfigError) as caught:
        _queues(raw)
    assert "'default'" in str(caught.value)
    assert "instance.networks" in str(caught.value)


def test_lookup_prints_back_as_written() -> None:
    """Status and events show lookups in the manifest's own spelling."""
    assert str(Lookup.parse("name:Ubuntu 22.04")) == "name:Ubuntu 22.04"
    assert str(Lookup.parse("ami-1")) == "ami-1"


def test_queues_sharing_account_settings_share_one_account() -> None:
    """One driver, one listing and one rate limit per account: equal accounts must compare
    and hash equal, whatever order the driver options were written in."""
    raw = pool_spec(
        driver={"region": "eu-west-1", "secure": True},
        queues=[
            {"name": "a", "instance": {"flavor": "big"}},
            {"name": "b", "driver": {"secure": True, "region": "eu-west-1"}},
            {"name": "c", "driver": {"region": "us-east-1"}},
            {"name": "d", "credentialsSecret": {"name": "other"}},
        ],
    )
    queues = _queues(raw)
    assert queues["a"].account == queues["b"].account
    assert len({queues["a"].account, queues["b"].account}) == 1
    assert queues["c"].account != queues["a"].account
    assert queues["d"].account != queues["a"].account


def test_accounts_in_different_namespaces_differ() -> None:
    """A Secret name means a different Secret in another namespace: never share a driver."""
    spec = parse_spec(pool_spec())
    (a,) = effective_queues(spec, namespace="ns-a", pool_name="p")
    (b,) = effective_queues(spec, namespace="ns-b", pool_name="p")
    assert a.account != b.account


def test_account_options_round_trip_nested_values() -> None:
    account = CloudAccount(
        cloud_type="EC2",
        driver_options=(("nested", '{"a": [1, null]}'),),
        credentials_secret="c",
        namespace="n",
    )
    assert account.options == {"nested": {"a": [1, None]}}


def test_queue_config_is_immutable() -> None:
    q = _queues(pool_spec())[DEFAULT_QUEUE]
    with pytest.raises(AttributeError):
        q.replicas = 3  # type: ignore[misc]
