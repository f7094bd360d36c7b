"""VM names, ownership and pilot stamps.

DIRAC's shared ``VMDIRAC3_`` prefix let one CE count and destroy another's VMs. These tests
hold the replacement to its promises: every name is valid on the strictest clouds (GCE,
Azure), each pool and queue has its own prefix even when names share a long beginning, and
a VM counts as the pool's only when name *and* tag say so.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from cloudpilot import constants
from cloudpilot.naming import (
    MAX_NAME_LENGTH,
    new_vm_name,
    owned_by_pool,
    pilot_reference,
    pilot_stamp,
    pool_prefix,
    pool_tag_value,
    queue_of,
    queue_prefix,
    vm_tags,
)

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ModuleNotFoundError:  # pragma: no cover - optional: property tests need hypothesis
    st = None

GCE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
"""GCE's rule for instance names (Azure's is looser); at most 63 characters on top."""

NS, POOL = "grid", "lhcb-pilots"

ODD_NAMES = [
    "a",
    "x" * 253,
    "LHCb_Pilots.v2",
    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s",
    "9-starts-with-digit",
    "---",
    "ünïcödé-pöol",
    "trailing-hyphen-at-the-cut-point-",
    "a" * 17 + "-" + "b" * 40,
]


def _assert_valid_vm_name(name: str) -> None:
    assert len(name) <= MAX_NAME_LENGTH, name
    assert GCE_NAME.match(name), name


@pytest.mark.parametrize("pool", ODD_NAMES)
@pytest.mark.parametrize("queue", ["default", "q" * 63, "gpu-long-queue-x", "9"])
def test_vm_names_are_valid_on_gce_and_azure_whatever_the_pool_and_queue(
    pool: str, queue: str
) -> None:
    """A pool named like a DNS subdomain must still get VMs the strictest cloud accepts."""
    _assert_valid_vm_name(new_vm_name(queue_prefix("some-very-long-namespace-name", pool, queue)))


def test_vm_names_start_with_a_letter_even_for_digit_names() -> None:
    assert new_vm_name(queue_prefix("0", "0", "0"))[0].isalpha()


def test_pools_sharing_a_long_beginning_get_distinct_prefixes() -> None:
    """Truncation alone would merge ``...-production-a`` and ``...-production-b``."""
    common = "atlas-analysis-pilots-production-"
    a, b = pool_prefix(NS, common + "a"), pool_prefix(NS, common + "b")
    assert a != b
    assert not a.startswith(b) and not b.startswith(a)


def test_same_pool_name_in_two_namespaces_gets_distinct_prefixes() -> None:
    """Two teams may both call their pool ``pilots``; they must never see each other's VMs."""
    assert pool_prefix("team-a", "pilots") != pool_prefix("team-b", "pilots")


def test_names_differing_only_in_case_or_punctuation_stay_apart() -> None:
    """Slugs of ``LHCb`` and ``lhcb`` are equal; the hash of the real name keeps them apart."""
    assert pool_prefix(NS, "LHCb.pilots") != pool_prefix(NS, "lhcb-pilots")


def test_queues_sharing_a_long_beginning_get_distinct_prefixes() -> None:
    a = queue_prefix(NS, POOL, "gpu-long-running-a")
    b = queue_prefix(NS, POOL, "gpu-long-running-b")
    assert a != b
    assert not a.startswith(b) and not b.startswith(a)


def test_same_queue_name_in_two_pools_gets_distinct_prefixes() -> None:
    assert queue_prefix(NS, "pool-a", "default") != queue_prefix(NS, "pool-b", "default")


def test_queue_prefix_extends_its_pool_prefix() -> None:
    """The pool part alone finds the VMs of a queue removed from the spec."""
    assert queue_prefix(NS, POOL, "gpu").startswith(pool_prefix(NS, POOL))


def test_prefixes_are_stable_across_releases() -> None:
    """Existing VMs are found by prefix: a changed scheme would orphan every running pilot
    after an operator upgrade. Change these values only with a migration."""
    assert pool_prefix(NS, POOL) == "cp-lhcb-pilots-2b58fd-"
    assert queue_prefix(NS, POOL, "default") == "cp-lhcb-pilots-2b58fd-default-b761-"


def test_new_vm_names_are_distinct_under_one_prefix() -> None:
    prefix = queue_prefix(NS, POOL, "default")
    names = {new_vm_name(prefix) for _ in range(500)}
    assert len(names) == 500
    assert all(n.startswith(prefix) and len(n) == len(prefix) + 8 for n in names)


def test_vm_tags_identify_pool_queue_ce_and_manager() -> None:
    tags = vm_tags(NS, POOL, "gpu", "ce.example.org")
    assert tags == {
        constants.TAG_POOL: "grid/lhcb-pilots",
        constants.TAG_QUEUE: "gpu",
        constants.TAG_CE: "ce.example.org",
        constants.TAG_MANAGED_BY: "cloudpilot",
    }
    assert pool_tag_value(NS, POOL) == "grid/lhcb-pilots"


def _name(queue: str = "default", pool: str = POOL, namespace: str = NS) -> str:
    return new_vm_name(queue_prefix(namespace, pool, queue))


def _owned(name: str, tags: dict | None, *, tags_supported: bool = True) -> bool:
    return owned_by_pool(name, tags, namespace=NS, pool=POOL, tags_supported=tags_supported)


def test_vm_with_pool_prefix_and_pool_tag_is_owned() -> None:
    assert _owned(_name("gpu"), vm_tags(NS, POOL, "gpu", "ce"))


def test_another_pools_vm_is_not_owned_even_with_a_shared_name_beginning() -> None:
    other = POOL + "-staging"
    name = _name(pool=other)
    assert not _owned(name, vm_tags(NS, other, "default", "ce"))
    assert not _owned(name, None, tags_supported=False)


def test_same_pool_name_in_another_namespace_is_not_owned() -> None:
    name = _name(namespace="other-ns")
    assert not _owned(name, vm_tags("other-ns", POOL, "default", "ce"))
    assert not _owned(name, None, tags_supported=False)


def test_hand_made_vm_with_copied_name_but_no_tag_is_not_owned() -> None:
    """An admin's debug VM named like a pilot must never be counted or destroyed."""
    assert not _owned(_name(), None)
    assert not _owned(_name(), {})
    assert not _owned(_name(), {"Name": "debug"})


def test_vm_tagged_for_another_pool_is_not_owned() -> None:
    assert not _owned(_name(), {constants.TAG_POOL: "grid/other-pool"})


def test_without_tag_support_the_name_alone_decides() -> None:
    """Drivers that keep no metadata can only go by name; the full name shape is still
    checked, so a bare prefix or a truncated name is not taken."""
    assert _owned(_name(), None, tags_supported=False)
    assert not _owned(pool_prefix(NS, POOL), None, tags_supported=False)
    assert not _owned(queue_prefix(NS, POOL, "default") + "zz", None, tags_supported=False)


@pytest.mark.parametrize("name", ["VMDIRAC3_0a1b2c3d", "vmdirac3-0a1b2c3d", "", "cp-", "node-1"])
def test_dirac_and_foreign_vms_are_never_owned(name: str) -> None:
    """DIRAC's own VMs on the same account stay DIRAC's."""
    assert not _owned(name, {constants.TAG_POOL: "grid/lhcb-pilots"}, tags_supported=True)
    assert not _owned(name, None, tags_supported=False)


def test_name_with_extra_text_after_the_suffix_is_not_owned() -> None:
    assert not _owned(_name() + "-copy", vm_tags(NS, POOL, "default", "ce"))


def _queue_of(name: str, tags: dict | None, queues: list[str]) -> str:
    prefixes = {q: queue_prefix(NS, POOL, q) for q in queues}
    return queue_of(name, tags, prefixes, pool_prefix(NS, POOL))


def test_queue_of_finds_the_spec_queue_by_prefix() -> None:
    assert _queue_of(_name("gpu"), None, ["default", "gpu"]) == "gpu"


def test_queue_of_does_not_confuse_queues_sharing_a_long_beginning() -> None:
    a, b = "gpu-long-running-a", "gpu-long-running-b"
    assert _queue_of(_name(b), None, [a, b]) == b
    assert _queue_of(_name(a), None, [a, b]) == a


def test_queue_of_a_removed_queue_comes_from_its_tag() -> None:
    """The tag has the real name even when the name's readable part was truncated."""
    queue = "a-very-long-queue-name-removed"
    assert _queue_of(_name(queue), vm_tags(NS, POOL, queue, "ce"), ["default"]) == queue


def test_queue_of_a_removed_queue_without_tags_comes_from_its_name() -> None:
    assert _queue_of(_name("old"), None, ["default"]) == "old"


def test_queue_of_a_removed_long_queue_without_tags_is_its_readable_part() -> None:
    assert _queue_of(_name("a-very-long-queue-name"), None, []) == "a-very-long"


def test_queue_of_an_unparsable_name_is_unknown() -> None:
    assert _queue_of(pool_prefix(NS, POOL) + "garbage", None, ["default"]) == "unknown"


def test_pilot_stamp_is_32_hex_and_deterministic_per_instance() -> None:
    """The VM computes the same stamp at boot from its id; the operator must agree."""
    stamp = pilot_stamp("i-0abc")
    assert re.fullmatch(r"[0-9a-f]{32}", stamp)
    assert pilot_stamp("i-0abc") == stamp
    assert stamp == hashlib.sha256(b"cloudpilot:i-0abc").hexdigest()[:32]


def test_pilot_stamps_of_distinct_instances_are_distinct() -> None:
    stamps = {pilot_stamp(f"i-{n:08x}") for n in range(2_000)}
    assert len(stamps) == 2_000


def test_pilot_reference_is_the_dirac_cloud_url() -> None:
    assert pilot_reference("8f1e-uuid") == "cloud://8f1e-uuid"


if st is not None:
    _any_name = st.text(min_size=1, max_size=300)

    @given(namespace=_any_name, pool=_any_name, queue=_any_name)
    def test_property_every_vm_name_is_valid_and_owned(
        namespace: str, pool: str, queue: str
    ) -> None:
        """Whatever the names, a VM named by the operator is valid, owned and in its queue."""
        prefix = queue_prefix(namespace, pool, queue)
        name = new_vm_name(prefix)
        _assert_valid_vm_name(name)
        tags = vm_tags(namespace, pool, queue, "ce")
        assert owned_by_pool(name, tags, namespace=namespace, pool=pool, tags_supported=True)
        assert owned_by_pool(name, None, namespace=namespace, pool=pool, tags_supported=False)
        base = pool_prefix(namespace, pool)
        assert queue_of(name, tags, {queue: prefix}, base) == queue
        assert queue_of(name, tags, {}, base) == queue

    @given(pool_a=_any_name, pool_b=_any_name)
    def test_property_distinct_pools_do_not_own_each_others_tagged_vms(
        pool_a: str, pool_b: str
    ) -> None:
        if pool_a == pool_b:
            return
        name = new_vm_name(queue_prefix(NS, pool_b, "default"))
        tags = vm_tags(NS, pool_b, "default", "ce")
        assert not owned_by_pool(name, tags, namespace=NS, pool=pool_a, tags_supported=True)

else:  # pragma: no cover - shows up as a skip instead of silently running fewer tests

    def test_property_tests_need_hypothesis() -> None:
        pytest.skip("hypothesis is not installed: property tests not run")
