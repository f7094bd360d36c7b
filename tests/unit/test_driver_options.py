"""Driver and create options checked against what the driver really accepts.

libcloud drivers swallow unknown constructor keywords (``**kwargs``), so a misspelt option
silently means the default; these tests pin the names found by walking the MRO of the
driver, its connection class and ``create_node``, on libcloud's real classes and on small
fakes that show each rule on its own.
"""

from __future__ import annotations

from typing import Any

import pytest
from libcloud.compute.drivers.openstack import OpenStack_2_NodeDriver
from libcloud.compute.providers import Provider, get_driver

from cloudpilot.cloud.options import (
    accepted_create_options,
    accepted_driver_options,
    check_queues,
    concrete_class,
    create_option_problem,
    driver_option_problem,
)
from cloudpilot.models.queues import RESERVED_CREATE_OPTIONS, ConfigError, effective_queues
from cloudpilot.models.spec import parse_spec
from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver

OPENSTACK = get_driver(Provider.OPENSTACK)


class _Connection:
    def __init__(self, key: str, secure: bool = True, timeout: int | None = None) -> None: ...


class _Base:
    connectionCls = _Connection

    def __init__(
        self, key: str, secret: str | None = None, region: str = "", **kw: Any
    ) -> None: ...

    def create_node(self, name: str, size: Any, image: Any, ex_zone: str = "") -> None: ...


class _Child(_Base):
    def __init__(self, *args: Any, ex_project: str = "", **kwargs: Any) -> None: ...

    def create_node(
        self, name: str, size: Any, image: Any, ex_tag: str = "", **kw: Any
    ) -> None: ...


def test_driver_options_are_the_named_parameters_of_the_mro_and_the_connection() -> None:
    assert accepted_driver_options(_Child) == {"region", "ex_project", "secure", "timeout"}


def test_create_options_walk_up_only_while_create_node_passes_kwargs_on() -> None:
    assert accepted_create_options(_Child) == {"ex_tag", "ex_zone"}
    assert accepted_create_options(_Base) == {"ex_zone"}


def test_ec2_driver_options_include_region_and_connection_timeout() -> None:
    accepted = accepted_driver_options(MotoEC2NodeDriver)
    assert {"region", "host", "port", "secure", "signature_version", "timeout"} <= accepted
    assert not {"key", "secret", "regoin"} & accepted


def test_openstack_driver_options_include_the_mixin_and_connection_options() -> None:
    accepted = accepted_driver_options(OPENSTACK)
    assert {"ex_force_auth_url", "ex_force_auth_version", "ex_tenant_name", "api_version"} <= (
        accepted
    )


def test_a_misspelt_driver_option_is_refused_with_the_accepted_names() -> None:
    problem = driver_option_problem(MotoEC2NodeDriver, {"regoin": "us-east-1", "host": "h"})
    assert problem is not None
    assert "unknown option(s) regoin for MotoEC2NodeDriver" in problem
    assert "accepted: " in problem and "region" in problem.split("accepted: ")[1]


def test_credentials_as_driver_options_are_refused_with_where_they_belong() -> None:
    problem = driver_option_problem(MotoEC2NodeDriver, {"secret": "s3cr3t-value"})
    assert problem is not None and "credentials Secret" in problem
    assert "s3cr3t-value" not in problem


def test_known_driver_options_pass() -> None:
    assert driver_option_problem(MotoEC2NodeDriver, {"region": "eu-west-1", "port": 1}) is None


def test_openstack_picks_its_concrete_class_by_api_version() -> None:
    """``OpenStackNodeDriver.__new__`` picks the class: its create_node decides."""
    assert concrete_class(OPENSTACK, {"api_version": "2.0"}) is OpenStack_2_NodeDriver
    assert "ex_availability_zone" in accepted_create_options(OpenStack_2_NodeDriver)


def test_an_api_version_no_driver_has_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="API version 9"):
        concrete_class(OPENSTACK, {"api_version": "9"})


def test_unknown_create_option_is_refused_naming_the_queue_and_accepted_names() -> None:
    problem = create_option_problem(MotoEC2NodeDriver, "gpu", {"ex_spot": True, "ex_foo": 1})
    assert problem is not None
    assert problem.startswith("queue gpu: instance.createOptions: unknown option(s) ex_foo")
    assert "ex_spot" in problem.split("accepted: ")[1]
    assert create_option_problem(MotoEC2NodeDriver, "gpu", {"ex_spot": True}) is None


def test_reserved_create_options_are_never_listed_as_accepted() -> None:
    assert not RESERVED_CREATE_OPTIONS & accepted_create_options(MotoEC2NodeDriver)


def _queues(**spec: Any) -> Any:
    base: dict[str, Any] = {
        "ce": "ce.example",
        "cloudType": "cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver",
        "credentialsSecret": {"name": "c"},
        "instance": {"image": "ami-1", "flavor": "t3.small"},
        "replicas": 1,
    }
    base.update(spec)
    if "queues" in base:
        del base["replicas"]
    return effective_queues(parse_spec(base), namespace="ns", pool_name="p")


def test_check_queues_accepts_a_good_pool() -> None:
    check_queues(_queues(driver={"region": "eu-west-1"}), _allowing_moto)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"driver": {"regoin": "eu-west-1"}}, "unknown option(s) regoin"),
        (
            {"instance": {"image": "a", "flavor": "f", "createOptions": {"ex_bogus": 1}}},
            "createOptions: unknown option(s) ex_bogus",
        ),
        (
            {
                "queues": [
                    {"name": "ok", "replicas": 1},
                    {"name": "bad", "replicas": 1, "driver": {"zone": "a"}},
                ]
            },
            "unknown option(s) zone",
        ),
    ],
    ids=["driver", "createOptions", "queue-override"],
)
def test_check_queues_refuses_unknown_options(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_queues(_queues(**spec), _allowing_moto)
    assert words in str(caught.value)


def test_check_queues_uses_the_resolver_it_is_given() -> None:
    """The cloudType's own error (unknown provider) goes through unchanged."""

    def resolve(_: str) -> type:
        raise ConfigError("cloudType 'nope' is not a libcloud compute provider")

    with pytest.raises(ConfigError, match="not a libcloud compute provider"):
        check_queues(_queues(), resolve)


def _allowing_moto(cloud_type: str) -> type:
    """The resolver of an operator whose allow-list holds the test driver."""
    from cloudpilot.cloud.drivers import driver_class
    from cloudpilot_devtools.moto_ec2 import CLASS_PATH

    return driver_class(cloud_type, frozenset({CLASS_PATH}))
