"""What CloudPilot calls on a libcloud driver, as typed protocols.

libcloud's ``NodeDriver`` is mostly unannotated, and its base class does not declare what
the concrete drivers take (``create_node``'s ``ex_*`` keywords, EC2's ``ex_list_subnets``),
so code typed against it is typed against ``Any``. These protocols list exactly the methods
and attributes the ``cloud`` package uses, with the types it relies on: the rest of the
package is checked against them, and a new call on a driver has to be added here first.

A driver enters the typed world in one place, :func:`cloudpilot.cloud.drivers.build_driver`;
the provider-specific protocols are reached only through the ``isinstance`` checks on
libcloud's classes in :mod:`cloudpilot.cloud.lookups` (``is_ec2`` ...).
``tests/unit/test_driver_protocol.py`` checks that libcloud's drivers have every member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, cast, runtime_checkable
from xml.etree.ElementTree import Element

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize


class Catalogued(Protocol):
    """An entry of a cloud catalogue (image, flavor, network, subnet): found by id or name."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


@runtime_checkable
class ComputeDriver(Protocol):
    """The calls CloudPilot makes on every driver."""

    def list_nodes(self) -> list[Node]: ...

    def list_images(self) -> list[NodeImage]: ...

    def list_sizes(self) -> list[NodeSize]: ...

    def create_node(self, *, name: str, size: NodeSize, image: NodeImage) -> Node:
        """Called with a mapping of further keywords: the provider's own (``ex_userdata``,
        ``networks`` ...) and the pool's ``createOptions``. They differ by provider, so they
        are not declared here: :mod:`cloudpilot.cloud.options` checks them against the
        driver's real signature instead."""
        ...

    def destroy_node(self, node: Node) -> bool: ...


@runtime_checkable
class NetworkListingDriver(ComputeDriver, Protocol):
    """A driver with a network catalogue (OpenStack): ``create_node(networks=[...])``."""

    def ex_list_networks(self) -> Sequence[Catalogued]: ...


class XMLResponse(Protocol):
    """An EC2 answer, parsed: ``object`` is the XML document's root element."""

    object: Element


class EC2Connection(Protocol):
    """Builds, signs and sends one EC2 Query API request."""

    def request(self, action: str, params: Mapping[str, object] | None = None) -> XMLResponse: ...


@runtime_checkable
class EC2Driver(Protocol):
    """What the EC2 paths use: batch creates, one-call listings and terminations, subnets.

    Not a :class:`ComputeDriver` refinement: EC2's ``create_node`` returns a list when it
    started more than one instance (``ex_mincount``/``ex_maxcount``).
    """

    @property
    def connection(self) -> EC2Connection: ...

    @property
    def path(self) -> str:
        """The Query API path requests go to (``/``)."""
        ...

    def list_images(self, *, ex_filters: Mapping[str, str] | None = None) -> list[NodeImage]: ...

    def create_node(
        self,
        *,
        name: str,
        size: NodeSize,
        image: NodeImage,
        ex_mincount: int = 1,
        ex_maxcount: int = 1,
        ex_clienttoken: str | None = None,
    ) -> Node | list[Node]:
        """One ``RunInstances`` for ``ex_maxcount`` instances (more keywords as in
        :meth:`ComputeDriver.create_node`)."""
        ...

    def ex_list_subnets(
        self,
        subnet_ids: Sequence[str] | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> Sequence[Catalogued]: ...

    def _build_filters(self, filters: Mapping[str, object]) -> dict[str, str]:
        """Query parameters (``Filter.N.Name``/``Value.M``) for a filter mapping."""
        ...

    def _to_nodes(self, object: Element, xpath: str) -> list[Node]:
        """The driver's own parsing of instance elements into nodes."""
        ...


def as_node_driver(driver: ComputeDriver) -> NodeDriver:
    """``driver`` as libcloud's own classes (``Node``, ``NodeImage``, ``NodeSize``) take it
    back: every :class:`ComputeDriver` is a ``NodeDriver`` built by ``build_driver``."""
    return cast(NodeDriver, driver)
