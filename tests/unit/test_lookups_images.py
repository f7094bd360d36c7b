"""Images and flavors by ``name:``: one usable match or a clear error, never a guess.

The drivers are libcloud's real EC2 and OpenStack classes with their listing methods
replaced by counters, and the listed objects are built by the drivers' own parsers from
the documents the clouds send (EC2's DescribeImages XML, Glance's and Nova's JSON), so the
``extra`` fields the resolver reads are the ones it reads in production.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import pytest
from libcloud.compute.base import NodeImage, NodeSize
from libcloud.compute.drivers.ec2 import EC2NodeDriver
from libcloud.compute.drivers.openstack import OpenStack_1_1_NodeDriver, OpenStack_2_NodeDriver

from cloudpilot.cloud import errors
from cloudpilot.cloud.lookups import NotFoundError, Resolver
from cloudpilot.memory import ErrorKind
from cloudpilot.models.queues import ConfigError, Lookup

NAME = "Rocky-9-GenericCloud-Base-9.4"


def _ami(ami_id: str, owner: str, created: str, state: str = "available") -> str:
    return f"""<item><imageId>{ami_id}</imageId><imageState>{state}</imageState>
      <imageOwnerId>{owner}</imageOwnerId><isPublic>true</isPublic><name>{NAME}</name>
      <architecture>x86_64</architecture><creationDate>{created}</creationDate></item>"""


def _describe_images(*items: str) -> ElementTree.Element:
    xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"
    body = f'<DescribeImagesResponse xmlns="{xmlns}"><imagesSet>{"".join(items)}</imagesSet>'
    return ElementTree.fromstring(body + "</DescribeImagesResponse>")  # noqa: S314  # our own text


class CountingEC2(EC2NodeDriver):  # type: ignore[misc]
    """Never connects: ``list_images`` answers a DescribeImages document, parsed by
    libcloud, and records the filters it was asked with."""

    def __init__(self, *amis: str) -> None:  # no super(): no connection
        self.filters: list[dict[str, Any] | None] = []
        self._images = self._to_images(_describe_images(*amis))

    def list_images(self, ex_filters: dict[str, Any] | None = None, **_: Any) -> list[Any]:
        self.filters.append(ex_filters)
        return self._images


ROCKY = _ami("ami-0b0c9c0a1a9e94001", "792107900819", "2024-05-10T12:00:00.000Z")
SQUATTER = _ami("ami-0f00ba4e5ca77e401", "111122223333", "2026-11-30T08:00:00.000Z")


def test_an_ec2_name_is_one_filtered_call_then_the_cache() -> None:
    driver = CountingEC2(ROCKY)
    resolver = Resolver()
    for _ in range(3):
        assert resolver.image(driver, Lookup.parse(f"name:{NAME}")).id == "ami-0b0c9c0a1a9e94001"
    assert driver.filters == [{"name": NAME}]


def test_two_amis_of_one_name_are_refused_and_the_newest_is_not_chosen() -> None:
    """AMI names are unique per account and region, so two matches have two owners; the
    newer one here is a stranger's public AMI, exactly what "take the newest" would boot."""
    driver = CountingEC2(ROCKY, SQUATTER)
    with pytest.raises(ConfigError) as raised:
        Resolver().image(driver, Lookup.parse(f"name:{NAME}"))
    message = str(raised.value)
    assert f"image name:{NAME} matches 2 images" in message
    assert "ami-0b0c9c0a1a9e94001 [owner 792107900819, created 2024-05-10" in message
    assert "ami-0f00ba4e5ca77e401 [owner 111122223333, created 2026-11-30" in message
    assert "give the id" in message
    assert errors.classify(raised.value, "resolve").kind is ErrorKind.CONFIG


def test_an_ami_that_cannot_boot_is_not_a_candidate() -> None:
    pending = _ami("ami-0aaaa0000000000p1", "792107900819", "2026-12-01T00:00:00.000Z", "pending")
    failed = _ami("ami-0aaaa0000000000f1", "792107900819", "2026-12-01T00:00:00.000Z", "failed")
    chosen = Resolver().image(CountingEC2(ROCKY, pending, failed), Lookup.parse(f"name:{NAME}"))
    assert chosen.id == "ami-0b0c9c0a1a9e94001"
    with pytest.raises(NotFoundError) as raised:
        Resolver().image(CountingEC2(pending, failed), Lookup.parse(f"name:{NAME}"))
    assert "ami-0aaaa0000000000f1 is failed, ami-0aaaa0000000000p1 is pending" in str(raised.value)


def test_a_raw_ami_id_is_used_without_listing_even_if_its_name_is_ambiguous() -> None:
    driver = CountingEC2(ROCKY, SQUATTER)
    assert Resolver().image(driver, Lookup.parse("ami-0b0c9c0a1a9e94001")).id == (
        "ami-0b0c9c0a1a9e94001"
    )
    assert driver.filters == []


# -- OpenStack -------------------------------------------------------------------------------


def _glance(
    image_id: str, status: str = "active", created: str = "2026-01-05T10:00:00Z"
) -> dict[str, Any]:
    """An image as Glance v2 lists it (what libcloud's 2.0 driver reads)."""
    return {
        "id": image_id,
        "name": "AlmaLinux 9",
        "status": status,
        "visibility": "public",
        "created_at": created,
        "updated_at": created,
        "min_ram": 0,
        "min_disk": 10,
    }


def _flavor(flavor_id: str, name: str) -> dict[str, Any]:
    """A flavor as Nova lists it."""
    return {"id": flavor_id, "name": name, "ram": 4096, "disk": 40, "vcpus": 2, "swap": ""}


class CountingOpenStack(OpenStack_2_NodeDriver):  # type: ignore[misc]
    """Never connects: images and flavors are parsed by libcloud from the APIs' JSON and
    each listing is counted."""

    def __init__(self, images: list[dict[str, Any]], flavors: list[dict[str, Any]]) -> None:
        self.listed = {"images": 0, "sizes": 0}
        self._images = [self._to_image(i) for i in images]
        self._flavors = [self._to_size(f) for f in flavors]

    def list_images(self, location: Any = None, ex_only_active: bool = True) -> list[NodeImage]:
        self.listed["images"] += 1
        return self._images

    def list_sizes(self, location: Any = None) -> list[NodeSize]:
        self.listed["sizes"] += 1
        return self._flavors


ALMA = Lookup.parse("name:AlmaLinux 9")
FLAVORS = [_flavor("f-1", "m1.medium"), _flavor("f-2", "m1.large")]


def test_a_reuploaded_glance_image_of_the_same_name_is_refused_with_both_ids() -> None:
    driver = CountingOpenStack(
        [_glance("img-old"), _glance("img-new", created="2026-11-02T09:00:00Z")], FLAVORS
    )
    with pytest.raises(ConfigError) as raised:
        Resolver().image(driver, Lookup.parse("name:AlmaLinux 9"))
    message = str(raised.value)
    assert "image name:AlmaLinux 9 matches 2 images (img-new [visibility public" in message
    assert "img-old [visibility public, created 2026-01-05T10:00:00Z]" in message


def test_a_deactivated_glance_image_leaves_the_active_one_unambiguous() -> None:
    """Glance's way of retiring an image that was re-uploaded under its name; libcloud's
    2.0 driver lists deactivated images too."""
    driver = CountingOpenStack([_glance("img-old", "deactivated"), _glance("img-new")], FLAVORS)
    resolver = Resolver()
    assert resolver.image(driver, Lookup.parse("name:AlmaLinux 9")).id == "img-new"
    assert resolver.image(driver, Lookup.parse("name:AlmaLinux 9")).id == "img-new"
    assert driver.listed["images"] == 1


def test_nova_images_through_the_default_driver_are_refused_the_same_way() -> None:
    """libcloud's default (1.1) driver lists images through Nova, which says ACTIVE."""

    class Nova(OpenStack_1_1_NodeDriver):  # type: ignore[misc]
        def __init__(self, *images: tuple[str, str]) -> None:  # no super(): no connection
            self.images = images

        def list_images(self, location: Any = None, ex_only_active: bool = True) -> Any:
            images = [
                {"id": i, "name": "AlmaLinux 9", "status": s, "created": "2026", "updated": "2026"}
                for i, s in self.images
            ]
            return self._to_images({"images": images}, ex_only_active)

    with pytest.raises(ConfigError, match=r"matches 2 images \(nova-1 \[.*\], nova-2 \["):
        Resolver().image(Nova(("nova-1", "ACTIVE"), ("nova-2", "ACTIVE")), ALMA)
    one = Nova(("nova-1", "ACTIVE"), ("nova-2", "SAVING"))  # a snapshot being written
    assert Resolver().image(one, ALMA).id == "nova-1"


def test_a_flavor_name_is_listed_once_and_a_duplicate_is_refused() -> None:
    driver = CountingOpenStack([], FLAVORS)
    resolver = Resolver()
    for _ in range(2):
        assert resolver.flavor(driver, Lookup.parse("name:m1.large")).id == "f-2"
    assert driver.listed["sizes"] == 1

    duplicated = CountingOpenStack([], [*FLAVORS, _flavor("f-9", "m1.large")])
    with pytest.raises(ConfigError) as raised:
        Resolver().flavor(duplicated, Lookup.parse("name:m1.large"))
    assert "flavor name:m1.large matches 2 flavors (f-2, f-9)" in str(raised.value)
    assert errors.classify(raised.value, "resolve").kind is ErrorKind.CONFIG


def test_an_unknown_image_or_flavor_name_is_not_found() -> None:
    driver = CountingOpenStack([_glance("img-1")], FLAVORS)
    with pytest.raises(NotFoundError, match="image name:nope not found"):
        Resolver().image(driver, Lookup.parse("name:nope"))
    with pytest.raises(NotFoundError, match="flavor name:nope not found"):
        Resolver().flavor(driver, Lookup.parse("name:nope"))
