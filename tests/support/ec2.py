"""pytest fixtures and helpers for the EC2 side: moto emulator, libcloud driver, proxy.

Load as a plugin (``pytest_plugins = ["tests.support.ec2"]`` in a conftest) or import the
fixtures into a test module. Either way there is one emulator per test process (moto's state
is process-global): :func:`ec2_emulator_session` is reference-counted so that several
modules importing it share it, and :func:`ec2` resets moto's state before each test.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from libcloud.compute.base import NodeImage, NodeSize

from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy
from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver

__all__ = [
    "describe_user_data",
    "ec2",
    "ec2_driver",
    "ec2_emulator_session",
    "ec2_proxy",
    "find_image",
    "make_size",
    "proxied_driver",
    "terminate_many",
]

_shared: EC2Emulator | None = None
_users = 0


@pytest.fixture(scope="session")
def ec2_emulator_session() -> Iterator[EC2Emulator]:
    """The process's EC2 emulator, started on first use and stopped after its last user."""
    global _shared, _users
    if _shared is None:
        _shared = EC2Emulator().start()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.stop()
            _shared = None


@pytest.fixture
def ec2(ec2_emulator_session: EC2Emulator) -> EC2Emulator:
    """The emulator with all moto state wiped (fresh account for each test)."""
    ec2_emulator_session.reset()
    return ec2_emulator_session


@pytest.fixture
def ec2_driver(ec2: EC2Emulator) -> MotoEC2NodeDriver:
    """libcloud's EC2 driver (moto variant) talking to the emulator directly."""
    return MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())


@pytest.fixture
def ec2_proxy(ec2: EC2Emulator) -> Iterator[LatencyProxy]:
    """A LatencyProxy in front of the emulator, no latency, no faults, fresh counts."""
    with LatencyProxy(ec2.endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxied_driver(ec2: EC2Emulator, ec2_proxy: LatencyProxy) -> MotoEC2NodeDriver:
    """libcloud's EC2 driver going through :func:`ec2_proxy`."""
    return MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options(ec2_proxy.endpoint))


def make_size(driver: Any, instance_type: str = "t3.medium") -> NodeSize:
    """A NodeSize for an instance type without calling list_sizes (which reads libcloud's
    pricing data, not the API)."""
    return NodeSize(instance_type, instance_type, 0, 0, 0, 0.0, driver)


def find_image(driver: Any, name: str) -> NodeImage:
    """Resolve an AMI by exact name with a server-side DescribeImages filter."""
    images = driver.list_images(ex_filters={"name": name})
    if len(images) != 1:
        raise LookupError(f"{len(images)} images named {name!r}")
    return images[0]  # type: ignore[no-any-return]


def terminate_many(driver: Any, node_ids: Sequence[str]) -> Any:
    """Terminate several instances in ONE TerminateInstances request.

    Same request as libcloud's ``destroy_node`` (which sends a single ``InstanceId.1``),
    with ``InstanceId.1..N``. Returns the parsed XML (an Element).
    """
    params = {"Action": "TerminateInstances"}
    params.update({f"InstanceId.{i}": node_id for i, node_id in enumerate(node_ids, 1)})
    return driver.connection.request(driver.path, params=params).object


def describe_user_data(driver: Any, node_id: str) -> bytes:
    """The instance's user data as EC2 returns it (DescribeInstanceAttribute), decoded."""
    from libcloud.compute.drivers.ec2 import NAMESPACE
    from libcloud.utils.xml import findtext

    params = {"Action": "DescribeInstanceAttribute", "InstanceId": node_id, "Attribute": "userData"}
    obj = driver.connection.request(driver.path, params=params).object
    value = findtext(element=obj, xpath="userData/value", namespace=NAMESPACE)
    return base64.b64decode(value or "")
