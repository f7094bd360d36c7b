"""An image name two AMIs share, on the real API server and moto's EC2 API.

The account copies the public Rocky AMI under the same name (CopyImage, what re-uploading
an image to one's own account looks like): a ``name:`` filter now answers two AMIs from two
owners, the copy the newer. The pool that asks for that name must stop with both ids in its
condition and one Event, create no VM, and leave the pool next to it alone.
"""

from __future__ import annotations

from typing import Any

from cloudpilot_devtools.ec2_emulator import REGION
from tests.support.kube import wait_for
from tests.support.stack import Stack

ROCKY = "Rocky-9-GenericCloud-Base-9.4"


def _stalled_invalid_config(stack: Stack, pool: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        stalled = stack.condition(pool, "Stalled")
        if stalled and stalled["status"] == "True" and stalled["reason"] == "InvalidConfig":
            return stalled
        return None

    return wait_for(found, 60, message=f"Stalled InvalidConfig on {pool}")


def _pool_events(stack: Stack, pool: str, reason: str) -> list[Any]:
    return [e for e in stack.events() if e.involved_object.name == pool and e.reason == reason]


def test_an_ami_name_shared_by_two_owners_stops_the_pool_with_both_ids(stack: Stack) -> None:
    driver = stack.driver()
    (public,) = driver.list_images(ex_filters={"name": ROCKY})
    ours = driver.copy_image(public, REGION, name=ROCKY, description="re-uploaded")
    listed = driver.list_images(ex_filters={"name": ROCKY})
    assert {i.id for i in listed} == {public.id, ours.id}
    assert {i.extra["owner_id"] for i in listed} == {public.extra["owner_id"], "123456789012"}

    stack.apply_pool("healthy", replicas=1)
    stack.apply_pool(
        "ambiguous", replicas=2, instance={"image": f"name:{ROCKY}", "flavor": "t3.small"}
    )

    stalled = _stalled_invalid_config(stack, "ambiguous")
    assert f"name:{ROCKY} matches 2 images" in stalled["message"]
    assert public.id in stalled["message"] and ours.id in stalled["message"]
    ready = stack.condition("ambiguous", "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "InvalidConfig")

    stack.wait_vms("healthy", 1)
    stack.wait_status(
        "healthy",
        lambda s: any(c["type"] == "Ready" and c["status"] == "True" for c in s["conditions"]),
        what="healthy pool Ready=True",
    )
    assert stack.vms("ambiguous", include_gone=True) == [], "the ambiguous pool created a VM"
    (event,) = _pool_events(stack, "ambiguous", "InvalidConfig")
    assert event.type == "Warning"
    assert public.id in event.message and ours.id in event.message
