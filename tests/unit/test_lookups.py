"""Network references: raw ids cost no call (OpenStack), names must be unambiguous.

The driver is libcloud's real OpenStack class with its network listing replaced by a
counter, so the resolver's ``isinstance`` choices are the ones it makes in production.
"""

from __future__ import annotations

from typing import Any

import pytest
from libcloud.compute.drivers.ec2 import EC2NetworkSubnet, EC2NodeDriver
from libcloud.compute.drivers.openstack import OpenStack_2_NodeDriver, OpenStackNetwork

from cloudpilot.cloud import errors
from cloudpilot.cloud.lookups import NeedsLookupError, NotFoundError, Resolver
from cloudpilot.memory import ErrorKind
from cloudpilot.models.queues import ConfigError, Lookup


class CountingOpenStack(OpenStack_2_NodeDriver):  # type: ignore[misc]
    """Never connects: ``ex_list_networks`` answers from a list and counts its calls."""

    def __init__(self, networks: list[tuple[str, str]]) -> None:  # no super(): no connection
        self.listed = 0
        self._networks = [OpenStackNetwork(i, n, None, self) for i, n in networks]

    def ex_list_networks(self) -> list[Any]:
        self.listed += 1
        return self._networks


NETWORKS = [("net-pub-1", "my_public_net"), ("net-priv-1", "my_private_net")]


def refs(*texts: str) -> tuple[Lookup, ...]:
    return tuple(Lookup.parse(t) for t in texts)


def test_raw_ids_are_used_without_listing() -> None:
    driver = CountingOpenStack(NETWORKS)
    resolver = Resolver()
    answer = resolver.networks(driver, refs("net-priv-1", "0b1c-not-listed-anywhere"))
    assert [n.id for n in answer["networks"]] == ["net-priv-1", "0b1c-not-listed-anywhere"]
    assert (driver.listed, resolver.lookups) == (0, 0)


def test_names_are_listed_once_and_cached_in_order() -> None:
    driver = CountingOpenStack(NETWORKS)
    resolver = Resolver()
    for _ in range(3):
        answer = resolver.networks(driver, refs("name:my_public_net", "name:my_private_net"))
        assert [n.id for n in answer["networks"]] == ["net-pub-1", "net-priv-1"]
    assert driver.listed == 2  # one per name, then the cache


def test_offline_resolution_needs_no_lookup_for_raw_ids_only() -> None:
    driver = CountingOpenStack(NETWORKS)
    resolver = Resolver()
    resolver._offline.on = True
    try:
        assert resolver.networks(driver, refs("net-pub-1"))["networks"][0].id == "net-pub-1"
        with pytest.raises(NeedsLookupError):
            resolver.networks(driver, refs("name:my_public_net"))
    finally:
        resolver._offline.on = False


def test_a_name_matching_two_networks_is_a_config_error_naming_both() -> None:
    driver = CountingOpenStack([*NETWORKS, ("net-pub-2", "my_public_net")])
    with pytest.raises(ConfigError) as raised:
        Resolver().networks(driver, refs("name:my_public_net"))
    message = str(raised.value)
    assert "name:my_public_net matches 2 networks (net-pub-1, net-pub-2)" in message
    assert "give the id" in message
    assert errors.classify(raised.value, "resolve").kind is ErrorKind.CONFIG


def test_an_unknown_name_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="name:nope not found"):
        Resolver().networks(CountingOpenStack(NETWORKS), refs("name:nope"))


class TwoSubnetsNamedPilots(EC2NodeDriver):  # type: ignore[misc]
    """Never connects: ``ex_list_subnets`` answers two subnets tagged ``Name=pilots`` (EC2
    keeps tags unique no more than Neutron keeps names)."""

    def __init__(self) -> None:  # no super(): no connection
        self.asked: list[dict[str, Any]] = []

    def ex_list_subnets(self, **query: Any) -> list[Any]:
        self.asked.append(query)
        return [EC2NetworkSubnet(i, "pilots", "available") for i in ("subnet-a", "subnet-b")]


def test_an_ec2_subnet_name_matching_two_subnets_is_a_config_error() -> None:
    driver = TwoSubnetsNamedPilots()
    with pytest.raises(ConfigError, match=r"name:pilots matches 2 networks \(subnet-a, subnet-b\)"):
        Resolver().networks(driver, refs("name:pilots"))
    assert driver.asked == [{"filters": {"tag:Name": "pilots"}}]
