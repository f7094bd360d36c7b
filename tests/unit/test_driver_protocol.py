"""The driver protocols describe libcloud's real drivers, not wishes.

mypy checks the signatures where ``ec2_driver`` hands a ``BaseEC2NodeDriver`` out as an
``EC2Driver``; these tests check at run time that drivers as ``build_driver`` makes them have
every member the protocols list, and that a driver without them is told apart (no network:
libcloud connects on the first request, never at construction).
"""

from __future__ import annotations

import pytest

from cloudpilot.cloud.driver_protocol import ComputeDriver, EC2Driver, NetworkListingDriver
from cloudpilot.cloud.drivers import build_driver
from cloudpilot.cloud.lookups import ec2_driver, is_ec2
from cloudpilot_devtools.moto_ec2 import CLASS_PATH as MOTO_EC2

OPENSTACK_OPTIONS = {
    "ex_force_auth_url": "http://127.0.0.1:5000",
    "ex_force_auth_version": "3.x_password",
    "ex_tenant_name": "project",
}


def test_ec2_drivers_have_every_member_of_the_ec2_protocol() -> None:
    for driver in (
        build_driver("ec2", "key", "secret", {"region": "us-east-1"}),
        build_driver(MOTO_EC2, "key", "secret", {"host": "127.0.0.1"}, frozenset({MOTO_EC2})),
    ):
        assert isinstance(driver, ComputeDriver)
        assert isinstance(driver, EC2Driver)
        assert is_ec2(driver)
        assert ec2_driver(driver) is driver


def test_openstack_driver_lists_networks_and_is_not_ec2() -> None:
    driver = build_driver("openstack", "user", "password", dict(OPENSTACK_OPTIONS))
    assert isinstance(driver, NetworkListingDriver)
    assert not isinstance(driver, EC2Driver)
    assert not is_ec2(driver)
    with pytest.raises(TypeError, match="does not speak the EC2 API"):
        ec2_driver(driver)


def test_a_driver_without_networks_or_ec2_calls_is_told_apart() -> None:
    driver = build_driver("dummy", "0", None, {})
    assert isinstance(driver, ComputeDriver)
    assert not isinstance(driver, NetworkListingDriver)
    assert not isinstance(driver, EC2Driver)
