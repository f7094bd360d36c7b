"""Splitting one cloud account's listing into the VMs a pool owns.

Several pools (and DIRAC itself, and admins' hand-made VMs) share a cloud account. The
inventory is what stands between "in the listing" and "ours to count and destroy", so each
kind of stranger is tested to stay out.
"""

from __future__ import annotations

import pytest

from cloudpilot import constants
from cloudpilot.inventory import owned_vms, queue_prefixes
from cloudpilot.models.vms import Phase
from cloudpilot.naming import queue_prefix
from tests.support.builders import (
    NAMESPACE,
    POOL,
    ago,
    listed_node,
    owned_name,
    owned_tags,
    queue,
)

QUEUES = [queue("short", 2), queue("long", 1)]


def _owned(listing, *, tags_supported: bool = True, queues=QUEUES):
    return owned_vms(
        listing, namespace=NAMESPACE, pool=POOL, queues=queues, tags_supported=tags_supported
    )


def _mine(queue_name: str = "short", **kw):
    return listed_node(owned_name(queue_name), tags=owned_tags(queue_name), **kw)


def test_pool_vms_are_kept_with_queue_phase_and_creation_time() -> None:
    a = _mine("short", state="running", age=30)
    b = _mine("long", state="pending", age=5)
    (va, vb) = _owned([a, b])
    assert (va.id, va.name, va.queue, va.phase, va.created_at) == (
        a.id,
        a.name,
        "short",
        Phase.RUNNING,
        ago(30),
    )
    assert (vb.queue, vb.phase, vb.cloud_state) == ("long", Phase.STARTING, "pending")


def test_other_pools_vms_are_left_out() -> None:
    other = listed_node(
        owned_name("short", pool="other-pool"), tags=owned_tags("short", pool="other-pool")
    )
    same_name_other_ns = listed_node(
        owned_name("short", namespace="other-ns"), tags=owned_tags("short", namespace="other-ns")
    )
    assert _owned([other, same_name_other_ns, _mine()])[0].queue == "short"
    assert len(_owned([other, same_name_other_ns])) == 0


def test_dirac_vms_on_the_same_account_are_left_out() -> None:
    """The seed's ``VMDIRAC3_`` VMs belong to a DIRAC CE; CloudPilot must never touch them."""
    assert _owned([listed_node("VMDIRAC3_0a1b2c3d")], tags_supported=False) == []


def test_hand_made_vm_with_a_copied_name_is_left_out_where_tags_exist() -> None:
    copy = listed_node(owned_name("short"), tags={"owner": "admin"})
    assert _owned([copy]) == []


def test_without_tag_support_names_decide() -> None:
    untagged = listed_node(owned_name("short"), tags={})
    assert [v.queue for v in _owned([untagged], tags_supported=False)] == ["short"]


@pytest.mark.parametrize("state", ["terminated", "deleted"])
def test_terminated_vms_are_left_out(state: str) -> None:
    """EC2 lists terminated instances for an hour: they are neither live nor to delete."""
    assert _owned([_mine(state=state)]) == []


def test_stopped_and_error_vms_are_kept_for_the_planner_to_delete() -> None:
    phases = [v.phase for v in _owned([_mine(state="stopped"), _mine(state="error")])]
    assert phases == [Phase.DONE, Phase.FAILED]


def test_vm_of_a_removed_queue_is_kept_under_its_old_queue() -> None:
    """Its VMs must be found so the planner scales the removed queue to zero."""
    gone = _mine("retired-queue")
    (found,) = _owned([gone])
    assert found.queue == "retired-queue"


def test_vm_without_creation_time_is_kept() -> None:
    (found,) = _owned([_mine(age=None)])
    assert found.created_at is None


def test_queue_prefixes_match_naming() -> None:
    assert queue_prefixes(QUEUES) == {
        "short": queue_prefix(NAMESPACE, POOL, "short"),
        "long": queue_prefix(NAMESPACE, POOL, "long"),
    }


def test_tags_of_another_pool_on_our_name_shape_are_not_ours() -> None:
    spoofed = listed_node(owned_name("short"), tags={constants.TAG_POOL: "grid/other"})
    assert _owned([spoofed]) == []
