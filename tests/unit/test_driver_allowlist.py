"""``cloudType`` class paths come only from the operator's allow-list.

Importing a module runs its code, so a pool that could name any dotted path could make the
operator run any installed module. Each test here names a module it wrote itself, with a
side effect at import (a marker file), and checks that a refused name leaves no trace: the
module is not in ``sys.modules`` and the marker does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from libcloud.compute.drivers.ec2 import EC2NodeDriver
from libcloud.compute.drivers.openstack import OpenStackNodeDriver

from cloudpilot.cloud import errors
from cloudpilot.cloud.drivers import build_driver, driver_class
from cloudpilot.cloud.gateway import CloudGateway, Credentials
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.memory import ErrorKind
from cloudpilot.models.queues import ConfigError
from cloudpilot.reconciler import Reconciler, ReconcilerSettings
from tests.support.builders import account
from tests.support.planted import Planted, planted_driver


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Planted]:
    base = "libcloud.compute.drivers.dummy.DummyNodeDriver"
    with planted_driver(tmp_path, monkeypatch, base, extra="NotADriver = object\n") as found:
        yield found


def test_a_class_path_not_allowed_is_refused_before_any_import(planted: Planted) -> None:
    with pytest.raises(ConfigError) as refused:
        driver_class(planted.driver)
    message = str(refused.value)
    assert planted.driver in message
    assert "operator.allowedDriverClasses" in message
    assert "CLOUDPILOT_ALLOWED_DRIVER_CLASSES" in message
    assert "allowed: none" in message
    assert not planted.imported()


def test_the_allow_list_is_exact(planted: Planted) -> None:
    """Another class of the same module, the module itself, or a near spelling is not it."""
    allowed = frozenset({f"{planted.module}.Other", "some.other.Driver"})
    for name in (
        planted.driver,
        f" {planted.driver}",
        f"{planted.driver} ",
        f"{planted.module}..Driver",
        f"{planted.module}.driver",
        f"{planted.module}.Driver.__init__",
    ):
        with pytest.raises(ConfigError, match="does not allow"):
            driver_class(name, allowed)
    assert not planted.imported()


def test_an_allowed_class_path_is_imported_and_used(planted: Planted) -> None:
    """The control: the same module loads when its class is on the list, so the tests
    above would see an import if the list were not checked."""
    cls = driver_class(planted.driver, frozenset({planted.driver}))
    assert planted.imported()
    assert cls.__name__ == "Driver" and cls.__module__ == planted.module


def test_an_allowed_path_that_is_not_a_node_driver_is_still_refused(planted: Planted) -> None:
    name = f"{planted.module}.NotADriver"
    with pytest.raises(ConfigError, match="not a libcloud NodeDriver class"):
        driver_class(name, frozenset({name}))


def test_a_refusal_is_not_cached_past_a_change_of_the_list(planted: Planted) -> None:
    """The cache key is (cloudType, allow-list): the answer for one list says nothing about
    another."""
    with pytest.raises(ConfigError):
        driver_class(planted.driver, frozenset())
    allowed = frozenset({planted.driver})
    assert driver_class(planted.driver, allowed) is driver_class(planted.driver, allowed)


@pytest.mark.parametrize(
    ("cloud_type", "expected"),
    [("EC2", EC2NodeDriver), ("ec2", EC2NodeDriver), ("openstack", OpenStackNodeDriver)],
)
def test_libcloud_provider_names_need_no_allow_list(cloud_type: str, expected: type) -> None:
    assert driver_class(cloud_type) is expected


@pytest.mark.parametrize("name", ["os.system", "os.path.join", "subprocess.Popen"])
def test_standard_library_paths_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="does not allow"):
        driver_class(name)


def test_build_driver_refuses_too(planted: Planted) -> None:
    with pytest.raises(ConfigError, match="CLOUDPILOT_ALLOWED_DRIVER_CLASSES"):
        build_driver(planted.driver, "key", "secret", {})
    assert not planted.imported()
    driver = build_driver(planted.driver, "0", None, {}, frozenset({planted.driver}))
    assert type(driver).__name__ == "Driver"


async def test_a_gateway_refuses_and_the_error_is_a_config_error(planted: Planted) -> None:
    """The refusal reaches the reconciler as InvalidConfig (the pool stalls, no retry storm)."""
    gateway = CloudGateway(
        account(cloud_type=planted.driver, driver_options=()),
        Credentials("key", "secret"),
        limiter=TokenBucket(1000.0, 1000),
    )
    with pytest.raises(ConfigError) as refused:
        await gateway.list_nodes()
    assert errors.classify(refused.value, "list").kind is ErrorKind.CONFIG
    assert not planted.imported()


def test_the_reconciler_hands_its_allow_list_to_its_gateways(planted: Planted) -> None:
    """From the settings to where drivers are built: allowed in the settings, built."""
    refused = Reconciler(ReconcilerSettings()).caches.gateway(
        account(cloud_type=planted.driver, driver_options=()), Credentials("0", None)
    )
    with pytest.raises(ConfigError):
        refused.probe()
    assert not planted.imported()
    allowed = Reconciler(
        ReconcilerSettings(allowed_driver_classes={planted.driver})
    ).caches.gateway(account(cloud_type=planted.driver, driver_options=()), Credentials("0", None))
    assert type(allowed.probe()).__name__ == "Driver"


def test_runtime_passes_the_operator_settings_allow_list_on() -> None:
    from cloudpilot.runtime import build_reconciler
    from cloudpilot.settings import OperatorSettings

    settings = OperatorSettings(allowed_driver_classes=frozenset({"pkg.mod.Driver"}))
    assert build_reconciler(settings).settings.allowed_driver_classes == {"pkg.mod.Driver"}
    assert build_reconciler(OperatorSettings()).settings.allowed_driver_classes == frozenset()


@pytest.mark.parametrize("bad", ["Driver", "pkg.mod.Driver;x", "pkg..Driver", "import.Driver", ""])
def test_settings_refuse_an_allow_list_entry_that_is_not_a_class_path(bad: str) -> None:
    with pytest.raises(ValueError, match=r"pkg\.module\.Class"):
        ReconcilerSettings(allowed_driver_classes=frozenset({bad}))


@pytest.mark.parametrize("cloud_type", ["EC2_US_EAST", "cloudsigma_us"])
def test_a_provider_libcloud_removed_is_a_config_error_not_an_escape(cloud_type: str) -> None:
    """DIRAC-era provider names that libcloud has since removed raise bare exceptions in
    get_driver; they must stall the pool with a reason, not escape the reconcile."""
    from cloudpilot.cloud.drivers import driver_class

    with pytest.raises(ConfigError):
        driver_class(cloud_type)
