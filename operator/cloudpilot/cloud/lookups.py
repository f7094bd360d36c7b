"""Resolve image, flavor and network references to the objects ``create_node`` takes.

DIRAC listed the whole image and size catalogue on every submission, even for raw ids
(1.4 s per submission on a 1,300-image catalogue). Here:

* a raw id on a driver known to use only ``.id`` (EC2, OpenStack) becomes a placeholder
  object with no API call at all (OpenStack networks too: Nova takes ``{"uuid": id}``, so
  Neutron is asked only for ``name:`` networks);
* a ``name:`` image, flavor or network that matches several is a configuration error
  naming their ids (Neutron and Glance do not keep names unique, an EC2 name filter returns
  one AMI per owner; picking one would boot pilots on something nobody chose): see
  :mod:`cloudpilot.cloud.catalogue_match`, which also leaves out images that cannot boot;
* a ``name:`` lookup uses a filtered query where the driver has one (EC2 ``DescribeImages``
  with a name filter) and a listing elsewhere;
* every answer is cached for ``LOOKUP_CACHE_TTL`` per gateway (one cloud account), so a
  scale-up of 500 VMs resolves each name once;
* concurrent lookups of the same reference (two queues of one pool scaling up at once) wait
  for the first instead of asking the cloud twice (single flight per reference);
* :meth:`Resolver.create_arguments` with ``offline=True`` answers from placeholders and the
  cache only, so the gateway spends neither a worker thread nor a rate-limit token on a
  create whose references are all known already.

Runs in a worker thread (it is called with a driver by the gateway).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from libcloud.compute.base import NodeImage, NodeSize

from cloudpilot import constants
from cloudpilot.cloud.catalogue_match import NotFoundError, unique
from cloudpilot.cloud.driver_protocol import (
    Catalogued,
    ComputeDriver,
    EC2Driver,
    NetworkListingDriver,
    as_node_driver,
)
from cloudpilot.models.queues import ConfigError, Lookup, QueueConfig

__all__ = ["NeedsLookupError", "NotFoundError", "Resolver", "ec2_driver", "is_ec2"]

V = TypeVar("V")


def is_ec2(driver: ComputeDriver) -> bool:
    """Whether ``driver`` speaks the EC2 API (also used by the gateway)."""
    from libcloud.compute.drivers.ec2 import BaseEC2NodeDriver

    return isinstance(driver, BaseEC2NodeDriver)


def ec2_driver(driver: ComputeDriver) -> EC2Driver:
    """``driver``'s EC2 face, for the paths that :func:`is_ec2` already chose."""
    from libcloud.compute.drivers.ec2 import BaseEC2NodeDriver

    if not isinstance(driver, BaseEC2NodeDriver):
        raise TypeError(f"{type(driver).__name__} does not speak the EC2 API")
    return driver


def _is_openstack(driver: ComputeDriver) -> bool:
    from libcloud.compute.drivers.openstack import OpenStack_1_1_NodeDriver

    return isinstance(driver, OpenStack_1_1_NodeDriver)


class NeedsLookupError(LookupError):
    """Raised by an ``offline`` resolution that would have to ask the cloud."""


class Resolver:
    """Per-gateway cache of resolved references (thread-safe: workers share it)."""

    def __init__(self, ttl: float = constants.LOOKUP_CACHE_TTL) -> None:
        self._ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, object]] = {}
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], threading.Lock] = {}
        self.lookups = 0
        """How many lookups reached the cloud (for tests and the benchmark)."""
        self._offline = threading.local()

    def _hit(self, key: tuple[str, str]) -> tuple[bool, object]:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self._ttl:
                return True, hit[1]
        return False, None

    def _cached(self, kind: str, ref: Lookup, fetch: Callable[[], V]) -> V:
        """``fetch()``'s value, cached under ``(kind, ref)`` (one kind, one type of value)."""
        key = (kind, str(ref))
        found, value = self._hit(key)
        if found:
            return cast(V, value)
        if getattr(self._offline, "on", False):
            raise NeedsLookupError(f"{kind} {ref} is not cached")
        with self._lock:
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            # Whoever held the gate before us may have just filled the cache.
            found, value = self._hit(key)
            if found:
                return cast(V, value)
            now = time.monotonic()
            try:
                fetched = fetch()
                with self._lock:
                    self._cache[key] = (now, fetched)
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
        return fetched

    def forget(self) -> None:
        """Drop everything, e.g. after the cloud rejected a cached id."""
        with self._lock:
            self._cache.clear()

    def image(self, driver: ComputeDriver, ref: Lookup) -> NodeImage:
        if not ref.by_name and (is_ec2(driver) or _is_openstack(driver)):
            return NodeImage(
                id=ref.value,
                name=None,  # type: ignore[arg-type]  # a raw id has no name (libcloud says str)
                driver=as_node_driver(driver),
            )

        def fetch() -> NodeImage:
            self.lookups += 1
            if ref.by_name and is_ec2(driver):
                images = ec2_driver(driver).list_images(ex_filters={"name": ref.value})
            else:
                images = driver.list_images()
            return unique(images, ref, "image", only_usable=True)

        return self._cached("image", ref, fetch)

    def flavor(self, driver: ComputeDriver, ref: Lookup) -> NodeSize:
        if not ref.by_name and (is_ec2(driver) or _is_openstack(driver)):
            return NodeSize(
                id=ref.value,
                name=ref.value,
                ram=0,
                disk=0,
                bandwidth=None,
                price=None,  # type: ignore[arg-type]  # unknown, and never read (libcloud says float)
                driver=as_node_driver(driver),
            )

        def fetch() -> NodeSize:
            self.lookups += 1
            return unique(driver.list_sizes(), ref, "flavor")

        return self._cached("flavor", ref, fetch)

    def networks(self, driver: ComputeDriver, refs: tuple[Lookup, ...]) -> dict[str, Any]:
        """``create_node`` keyword arguments for the networks (EC2: a subnet)."""
        if not refs:
            return {}
        if is_ec2(driver):
            if len(refs) > 1:
                raise ConfigError("EC2 takes one network (a subnet) per instance")
            ref = refs[0]
            ec2 = ec2_driver(driver)

            def fetch_subnet() -> Catalogued:
                self.lookups += 1
                if ref.by_name:
                    subnets = ec2.ex_list_subnets(filters={"tag:Name": ref.value})
                else:
                    subnets = ec2.ex_list_subnets(subnet_ids=[ref.value])
                return unique(subnets, ref, "network")

            return {"ex_subnet": self._cached("network", ref, fetch_subnet)}
        if not isinstance(driver, NetworkListingDriver):
            raise ConfigError(f"{type(driver).__name__} has no networks to choose from")
        found: list[Catalogued] = []
        for ref in refs:
            if not ref.by_name and _is_openstack(driver):
                found.append(NetworkById(ref.value))
                continue

            def fetch(ref: Lookup = ref) -> Catalogued:
                self.lookups += 1
                return unique(driver.ex_list_networks(), ref, "network")

            found.append(self._cached("network", ref, fetch))
        return {"networks": found}

    def create_arguments(
        self, driver: ComputeDriver, queue: QueueConfig, *, offline: bool = False
    ) -> dict[str, Any]:
        """``create_node`` arguments for the queue's image, flavor and networks.

        ``offline``: answer only from placeholders and the cache, raising
        :class:`NeedsLookupError` where the cloud would have to be asked.
        """
        self._offline.on = offline
        try:
            return {
                "image": self.image(driver, queue.image),
                "size": self.flavor(driver, queue.flavor),
                **self.networks(driver, queue.networks),
            }
        finally:
            self._offline.on = False


@dataclass(frozen=True)
class NetworkById:
    """A network given by raw id: libcloud's OpenStack driver sends only ``{"uuid": id}``
    (``create_node(networks=...)`` reads ``.id`` and nothing else), so no lookup is made."""

    id: str
    name: str = ""
