"""A new pool on an account the operator already lists: its first creations are decided from
that listing and sent at once (cloudpilot.early_create's docstring says why this cannot
duplicate a VM; cloudpilot.cloud.listing_reuse holds the rule).

Every test holds ``DescribeInstances`` at the latency proxy while the new pool's first cycle
runs: a cycle that listed before creating would never see its answer, so "one round trip"
is shown by the ``RunInstances`` arriving, not timed. "No duplicate" is counted on the
cloud's own record (moto keeps terminated instances listed): every VM the pool ever had.

The first tests drive the reconciler directly against moto (no kopf: every cloud call is
counted); the last ones run the operator on the real kube-apiserver, as a user would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from cloudpilot import naming
from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy
from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver
from tests.integration.test_api_costs import NAMESPACE, Harness
from tests.support.kube import wait_for
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

T = TypeVar("T")

DEADLINE = 60.0
"""For a cycle that must not wait on a listing: generous, a deadline and not a measure."""


@pytest.fixture
def cloud(ec2: EC2Emulator) -> Iterator[tuple[EC2Emulator, LatencyProxy]]:
    with LatencyProxy(ec2.endpoint) as proxy:
        yield ec2, proxy


def _ever(ec2: EC2Emulator, pool: str, namespace: str = NAMESPACE) -> list[Any]:
    """Every VM the pool ever had, terminated ones included."""
    driver = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())
    prefix = naming.pool_prefix(namespace, pool)
    return [n for n in driver.list_nodes() if n.name.startswith(prefix)]


def _live(ec2: EC2Emulator, pool: str, namespace: str = NAMESPACE) -> list[Any]:
    return [n for n in _ever(ec2, pool, namespace) if str(n.state) in ("running", "pending")]


async def _with_listings_held(proxy: LatencyProxy, cycle: Awaitable[T]) -> T:
    """Run ``cycle`` while no listing can be answered; fails if it waits for one."""
    proxy.hold("DescribeInstances")
    try:
        return await asyncio.wait_for(cycle, DEADLINE)
    finally:
        proxy.release()


# -- the reconciler on moto ------------------------------------------------------------------


async def test_a_new_pool_on_a_listed_account_creates_without_listing_first(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    h = Harness(*cloud)
    await h.reconcile("keeper", 1)  # lists the account (and looks the image up)
    h.proxy.reset_counts()
    await _with_listings_held(h.proxy, h.reconcile("newcomer", 5))
    assert h.counts() == {"RunInstances": 1}  # no listing, no lookup: one round trip
    # The next cycles list afresh and agree: nothing more is created.
    await h.reconcile("newcomer", 5)
    status = await h.reconcile("newcomer", 5)
    assert h.counts()["RunInstances"] == 1
    assert status["replicas"] == 5
    assert len(_ever(h.ec2, "newcomer")) == 5


async def test_a_pool_applied_again_over_its_orphans_adopts_them_from_the_listing(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    h = Harness(*cloud)
    await h.reconcile("again", 3, deletionPolicy="Orphan")
    await h.reconcile("keeper", 1)
    await h.reconcile("keeper", 1)  # a listing made after the three VMs were
    h.delete_orphaning("again")
    assert len(_live(h.ec2, "again")) == 3
    h.proxy.reset_counts()
    await _with_listings_held(h.proxy, h.reconcile("again", 5, deletionPolicy="Orphan"))
    assert h.counts() == {"RunInstances": 1}
    await h.reconcile("again", 5, deletionPolicy="Orphan")
    assert h.counts()["RunInstances"] == 1
    assert len(_ever(h.ec2, "again")) == 5  # 3 adopted, 2 created, none twice


async def test_a_pool_applied_again_lists_first_when_the_listing_predates_its_orphans(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """The predecessor created under other credentials (another Secret for the same cloud
    account: another shared listing) after this listing was made. Served, the listing would
    hide the orphans and the pool would start them again (6 VMs); the reconciler-wide write
    log (``cloudpilot.cloud.listing_reuse.WriteLog``) makes the pool list first."""
    h = Harness(*cloud)
    h.secrets["other-credentials"] = {"key": b"AKIAOTHERIDENTITY000", "secret": b"other-secret"}
    other = {"credentialsSecret": {"name": "other-credentials"}}
    await h.reconcile("keeper", 1, **other)  # the other credentials' listing: no VM of "again"
    await h.reconcile("again", 3, deletionPolicy="Orphan")  # lists with its own, creates 3
    h.delete_orphaning("again")
    h.proxy.reset_counts()
    await h.reconcile("again", 3, deletionPolicy="Orphan", **other)
    await h.reconcile("again", 3, deletionPolicy="Orphan", **other)
    assert h.counts() == {"DescribeInstances": 2}  # listed first, and nothing to create
    assert len(_ever(h.ec2, "again")) == 3


async def test_after_a_restart_the_first_pool_of_the_account_lists_before_it_creates(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """A new process (a new reconciler) has no listing, whatever the old one had: a pool
    applied again over orphans right after the restart lists, then creates only the rest."""
    before = Harness(*cloud)
    await before.reconcile("keeper", 1)
    await before.reconcile("again", 3, deletionPolicy="Orphan")
    after = Harness(*cloud)  # the restarted operator
    after.uids["again"] = "uid-again-after-restart"
    after.proxy.reset_counts()
    await after.reconcile("again", 5, deletionPolicy="Orphan")
    assert after.counts() == {"DescribeInstances": 1, "DescribeImages": 1, "RunInstances": 1}
    await after.reconcile("again", 5, deletionPolicy="Orphan")
    assert after.counts()["RunInstances"] == 1
    assert len(_ever(after.ec2, "again")) == 5


async def test_a_pool_applied_again_right_after_an_uncertain_create_does_not_start_it_twice(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """The predecessor's ``RunInstances`` times out while the proxy still holds it: the
    cloud acts on it only later, after any listing the re-applied pool (a new uid, an empty
    memory) can make. The hold after an uncertain create is the reconciler's, per queue
    prefix (``listing_reuse.create_hold_left``): the new pool's create is refused unsent,
    and its next cycles adopt the three VMs instead of starting three more (6 without it)."""
    h = Harness(*cloud)
    await h.reconcile("keeper", 1)
    # A short client timeout, so that the held call gives up (a lost answer, as on a dead link).
    fast = {"driver": {**h.ec2.driver_options(h.proxy.endpoint), "timeout": 2}}
    h.proxy.reset_counts()
    h.proxy.hold("RunInstances")
    try:
        await h.reconcile("again", 3, deletionPolicy="Orphan", **fast)
        h.delete_orphaning("again")
        await h.reconcile("again", 3, deletionPolicy="Orphan", **fast)  # at once
        sent = h.proxy.counts["RunInstances"]
    finally:
        h.proxy.release()
    assert sent == 1  # the new pool's create was held back, not sent
    # The cloud now carries the first create out; the new pool's cycles list and adopt.
    wait_for(lambda: len(_ever(h.ec2, "again")) >= 3, DEADLINE, message="the late VMs")

    async def converged() -> None:
        while (await h.reconcile("again", 3, deletionPolicy="Orphan", **fast)).get(
            "replicas"
        ) != 3 or len(_live(h.ec2, "again")) != 3:
            pass

    await asyncio.wait_for(converged(), DEADLINE)
    await h.reconcile("again", 3, deletionPolicy="Orphan", **fast)
    assert h.proxy.counts["RunInstances"] == 1
    assert len(_ever(h.ec2, "again")) == 3  # terminated ones counted too


# -- the operator on the real kube-apiserver ---------------------------------------------------


def _proxied(stack: Stack, proxy: LatencyProxy) -> dict[str, Any]:
    return {"driver": stack.ec2.driver_options(proxy.endpoint)}


@pytest.fixture
def slow_stack(stack_without_operator: Stack) -> Iterator[tuple[Stack, LatencyProxy]]:
    """The operator with its default-like interval (60 s: a listing serves other pools for
    30 s), so that the account stays listed while a test applies its next pool."""
    stack = stack_without_operator
    with LatencyProxy(stack.ec2.endpoint) as proxy:
        stack.start_operator(reconcile_interval=60.0)
        try:
            yield stack, proxy
        finally:
            stack.stop_operator()


def _run_instances_while_listings_held(proxy: LatencyProxy, expected: int) -> None:
    proxy.hold("DescribeInstances")
    try:
        wait_for(
            lambda: proxy.counts.get("RunInstances", 0) >= expected,
            DEADLINE,
            message="the new pool's RunInstances while listings are held",
        )
    finally:
        proxy.release()


def test_operator_a_new_pool_on_a_listed_account_gets_its_vms_in_one_run_instances(
    slow_stack: tuple[Stack, LatencyProxy],
) -> None:
    stack, proxy = slow_stack
    stack.apply_pool("keeper", replicas=1, **_proxied(stack, proxy))
    stack.wait_settled("keeper", 1)
    proxy.reset_counts()
    stack.apply_pool("newcomer", replicas=4, **_proxied(stack, proxy))
    _run_instances_while_listings_held(proxy, 1)
    stack.wait_settled("newcomer", 4)
    assert proxy.counts.get("RunInstances") == 1
    assert len(_ever(stack.ec2, "newcomer", stack.namespace)) == 4


def _keeper_and_three_orphans(stack: Stack, proxy: LatencyProxy) -> None:
    """Pool "keeper" (1 VM) keeps the account listed; pool "again" (3 VMs, Orphan) is
    deleted, its VMs left running for a pool of the same name to adopt."""
    stack.apply_pool("keeper", replicas=1, **_proxied(stack, proxy))
    stack.apply_pool("again", replicas=3, deletionPolicy="Orphan", **_proxied(stack, proxy))
    stack.wait_settled("keeper", 1)
    stack.wait_settled("again", 3)
    stack.delete_pool("again")
    wait_for(lambda: stack.pool("again") is None, 30, message="the pool gone")


def test_operator_a_pool_applied_again_over_orphans_on_a_listed_account_adopts_them(
    slow_stack: tuple[Stack, LatencyProxy],
) -> None:
    stack, proxy = slow_stack
    _keeper_and_three_orphans(stack, proxy)
    assert len(_live(stack.ec2, "again", stack.namespace)) == 3  # orphaned, still running
    stack.scale_pool("keeper", 2)  # its cycle lists the account: the orphans are in it
    stack.wait_settled("keeper", 2)
    proxy.reset_counts()
    stack.apply_pool("again", replicas=5, deletionPolicy="Orphan", **_proxied(stack, proxy))
    _run_instances_while_listings_held(proxy, 1)
    stack.wait_settled("again", 5)
    assert proxy.counts.get("RunInstances") == 1
    assert len(_ever(stack.ec2, "again", stack.namespace)) == 5  # 3 adopted, 2 created


def test_operator_restarted_then_a_pool_applied_again_over_orphans_adopts_them(
    slow_stack: tuple[Stack, LatencyProxy],
) -> None:
    stack, proxy = slow_stack
    _keeper_and_three_orphans(stack, proxy)
    stack.stop_operator()
    stack.start_operator(reconcile_interval=60.0)  # a new process: no listing, no memory
    proxy.reset_counts()
    stack.apply_pool("again", replicas=5, deletionPolicy="Orphan", **_proxied(stack, proxy))
    stack.wait_settled("again", 5)
    assert proxy.counts.get("RunInstances") == 1
    assert len(_ever(stack.ec2, "again", stack.namespace)) == 5  # 3 adopted, 2 created
