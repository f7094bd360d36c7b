"""pytest fixtures and helpers for the OpenStack side: keystone + mimic peer, libcloud driver.

Import the fixtures into a test module (or load this module as a plugin from a conftest).
The peer takes 7-13 s to start, so there is one per test process: :func:`openstack_peer_session`
is reference-counted so that several modules importing it share it, and
:func:`openstack_peer` resets it (no servers, no failure-injection rules) before each test.

When the peer's venv is missing the tests are skipped with the command that installs it,
except under CI (``CI=true``), where a missing peer is a broken CI set-up and fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from libcloud import pricing
from libcloud.compute.base import NodeDriver, NodeImage, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

from tests.support.openstack_peer import OpenStackPeer

__all__ = [
    "find_image",
    "find_size",
    "make_driver",
    "openstack_driver",
    "openstack_peer",
    "openstack_peer_session",
    "require_openstack_peer",
    "skip_openstack_price_lookups",
]

_shared: OpenStackPeer | None = None
_users = 0


def require_openstack_peer() -> None:
    """Skip the calling test when the peer is not installed; fail instead under CI."""
    reason = OpenStackPeer.unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def openstack_peer_session() -> Iterator[OpenStackPeer]:
    """The process's OpenStack peer, started on first use and stopped after its last user."""
    global _shared, _users
    require_openstack_peer()
    if _shared is None:
        _shared = OpenStackPeer().start()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.stop()
            _shared = None


@pytest.fixture
def openstack_peer(openstack_peer_session: OpenStackPeer) -> OpenStackPeer:
    """The shared peer, with no servers and no failure-injection rules left by earlier tests."""
    openstack_peer_session.reset()
    return openstack_peer_session


def skip_openstack_price_lookups() -> None:
    """Stop libcloud from re-reading its pricing file for every OpenStack flavor.

    libcloud's pricing data has no ``openstack`` entry, so ``get_pricing`` misses its cache
    and parses the whole 2 MB ``pricing.json`` again for *each* flavor: ~65 ms a flavor,
    2.3 s for mimic's 35 flavors on each ``list_sizes()``. An empty price table for
    ``openstack`` makes every lookup a cache hit; the only visible change is
    ``NodeSize.price`` being ``None`` instead of ``0.0``. (The operator needs the same
    fix: a real cloud's flavor list costs the same per flavor.)
    """
    if "openstack" not in pricing.PRICING_DATA["compute"]:
        pricing.set_pricing(driver_type="compute", driver_name="openstack", pricing={})


def make_driver(peer: OpenStackPeer, *, password: str | None = None) -> NodeDriver:
    """libcloud's real OpenStack driver for ``peer`` (``password`` overrides the right one)."""
    skip_openstack_price_lookups()
    user, right_password = peer.credentials
    driver_class = get_driver(Provider.OPENSTACK)
    return driver_class(user, password or right_password, **peer.driver_options())


@pytest.fixture
def openstack_driver(openstack_peer: OpenStackPeer) -> NodeDriver:
    """A fresh driver (own token, own connection) against a freshly reset peer."""
    return make_driver(openstack_peer)


def find_image(driver: NodeDriver, name: str) -> NodeImage:
    """The image called ``name`` (mimic's ids are random per start; names are fixed)."""
    images = driver.list_images()
    for image in images:
        if image.name == name:
            return image
    raise LookupError(f"no image {name!r}; there are {sorted(i.name for i in images)}")


def find_size(driver: NodeDriver, name: str) -> NodeSize:
    """The flavor called ``name``."""
    sizes = driver.list_sizes()
    for size in sizes:
        if size.name == name:
            return size
    raise LookupError(f"no flavor {name!r}; there are {sorted(s.name for s in sizes)}")
