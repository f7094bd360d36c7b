"""How to ask a driver for Nova's ``GET /limits`` (an adapter: which call, not what it means).

libcloud's ``ex_limits()`` exists only on the old OpenStack 1.0 driver (an XML API); the
1.1 and 2.0 drivers CloudPilot uses for OpenStack have no such method, so for them the
request is sent on the driver's own compute connection (the same token, endpoint and
timeout as the listing) and Nova's JSON ``{"limits": {"absolute": ...}}`` is returned as it
is. Any other driver with an ``ex_limits()`` (the 1.0 driver, a test driver) is asked
through it. What the answer means is :mod:`cloudpilot.cloud.nova_limits`' business.
"""

from __future__ import annotations

from collections.abc import Callable

from cloudpilot.cloud.driver_protocol import ComputeDriver

LimitsCall = Callable[[ComputeDriver], object]


def _from_connection(driver: ComputeDriver) -> object:
    connection = getattr(driver, "connection", None)
    return getattr(connection, "request")("/limits").object  # noqa: B009 (untyped libcloud)


def _from_ex_limits(driver: ComputeDriver) -> object:
    return getattr(driver, "ex_limits", dict)()


def limits_call(driver: ComputeDriver) -> LimitsCall | None:
    """The call that reads ``driver``'s limits; None: it has none (EC2 and the rest)."""
    from libcloud.compute.drivers.openstack import OpenStack_1_1_NodeDriver

    if isinstance(driver, OpenStack_1_1_NodeDriver):
        return _from_connection
    if callable(getattr(driver, "ex_limits", None)):
        return _from_ex_limits
    return None
