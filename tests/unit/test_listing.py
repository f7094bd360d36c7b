"""The shared listing: one cloud listing per account serves every pool that asks in time.

What must hold: concurrent requests make one listing; a recent one is reused by pools that
have not seen it; a pool is never handed the listing it already had (so sharing never hides
progress); a failure is not cached; a cancelled pool does not cancel the others' listing;
and each pool gets exactly its own VMs out of the snapshot. Clocks are fakes: no sleeps.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from cloudpilot.account_tick import Tick
from cloudpilot.cloud import listing as listing_module
from cloudpilot.cloud.listing import SharedListing, shared_listing
from cloudpilot.naming import new_vm_name, pool_prefix, queue_prefix
from tests.support.listing_fakes import Clock, Node


class Cloud:
    """A fake list call: counts calls; can be held open or made to fail."""

    def __init__(self, nodes: tuple[Node, ...] = ()) -> None:
        self.nodes = nodes
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def fetch(self) -> tuple[Node, ...]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.nodes


async def test_concurrent_requests_make_one_listing() -> None:
    cloud = Cloud((Node("a"),))
    cloud.gate = asyncio.Event()
    shared: SharedListing[Node] = SharedListing(max_age=0.0)
    waiters = [asyncio.ensure_future(shared.get(f"pool-{i}", cloud.fetch)) for i in range(50)]
    await asyncio.sleep(0)
    cloud.gate.set()
    snapshots = await asyncio.gather(*waiters)
    assert cloud.calls == 1
    assert {s.seq for s in snapshots} == {1}
    assert shared.fetches == 1 and shared.served == 50


async def test_a_recent_listing_serves_pools_that_have_not_seen_it() -> None:
    clock = Clock()
    cloud = Cloud()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    await shared.get("a", cloud.fetch)  # the first listing: ticks at 100 + k * 60
    clock.now = 150.0
    first = await shared.get("a", cloud.fetch)  # "a" has seen the other
    clock.now += 29.0
    assert await shared.get("b", cloud.fetch) is first
    assert cloud.calls == 2
    clock.now += 1.0  # 30 s old, and from before the latest tick (160): too old for anyone
    assert (await shared.get("c", cloud.fetch)).seq == 3
    assert cloud.calls == 3


async def test_a_pool_never_gets_the_same_listing_twice() -> None:
    clock = Clock()
    cloud = Cloud()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    first = await shared.get("a", cloud.fetch)
    again = await shared.get("a", cloud.fetch)  # young, but "a" has seen it
    assert again.seq == first.seq + 1
    # "b" gets the newest, then "a" (which has the newest) makes another.
    assert (await shared.get("b", cloud.fetch)).seq == again.seq
    assert (await shared.get("a", cloud.fetch)).seq == again.seq + 1
    assert cloud.calls == 3


async def test_a_listing_older_than_a_create_under_a_prefix_is_not_served_for_it() -> None:
    """A pool applied again (new uid, same prefix) after its predecessor created VMs and
    was deleted with Orphan must not get a listing made before those VMs existed."""
    clock = Clock()
    cloud = Cloud()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    before = await shared.get("old-uid", cloud.fetch, "cp-p-")
    clock.now += 1.0
    shared.note_write("cp-p-")  # the predecessor's create returned
    clock.now += 1.0
    again = await shared.get("new-uid", cloud.fetch, "cp-p-")
    assert again.seq == before.seq + 1 and again.started > before.started
    # Other prefixes still share it: a write concerns only its own pool's VMs.
    assert await shared.get("other-uid", cloud.fetch, "cp-q-") is again
    assert cloud.calls == 2


async def test_a_listing_on_its_way_before_a_create_is_not_joined_for_that_prefix() -> None:
    clock = Clock()
    cloud = Cloud()
    cloud.gate = asyncio.Event()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    early = asyncio.ensure_future(shared.get("a", cloud.fetch, "cp-a-"))
    for _ in range(3):  # let the listing task start: its start time is read then
        await asyncio.sleep(0)
    assert cloud.calls == 1  # on the wire
    clock.now += 1.0
    shared.note_write("cp-p-")
    late = asyncio.ensure_future(shared.get("p", cloud.fetch, "cp-p-"))
    await asyncio.sleep(0)
    cloud.gate.set()
    first, second = await asyncio.gather(early, late)
    assert first.seq == 1 and second.seq == 2  # "p" waited for a listing after its write
    assert cloud.calls == 2


def test_write_marks_are_kept_as_long_as_a_listing_may_be_reused() -> None:
    """A tick's listing may be reused for up to one interval (60 s here): so long must a
    create under a prefix keep older listings from that prefix's pool."""
    clock = Clock()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    shared.note_write("cp-a-")
    clock.now += 59.0
    shared.note_write("cp-b-")
    assert list(shared.writes._writes) == ["cp-a-", "cp-b-"]
    clock.now += 2.0
    shared.note_write("cp-c-")
    assert list(shared.writes._writes) == ["cp-b-", "cp-c-"]


async def test_the_first_listing_sets_the_accounts_ticks() -> None:
    clock = Clock()
    cloud = Cloud()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    assert shared.tick is None  # never listed: nothing to align on
    await shared.get("a", cloud.fetch)
    clock.now += 45.0
    await shared.get("a", cloud.fetch)  # later listings do not move the phase
    assert shared.tick == Tick(phase=100.0, interval=60.0)
    assert SharedListing(max_age=0.0).tick is None  # no reuse, no interval: no ticks


async def test_a_listing_made_since_the_latest_tick_serves_the_whole_burst() -> None:
    """A thousand pools due at one tick go through the scheduler 64 at a time: those that
    start after half an interval still get the tick's listing, not a second one."""
    clock = Clock()
    cloud = Cloud()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    await shared.get("first", cloud.fetch)  # phase 100: ticks at 160, 220, ...
    clock.now = 160.5
    tick = await shared.get("pool-0", cloud.fetch)
    for i in range(1, 60):
        clock.now = 160.5 + i  # up to 59 s into the burst
        assert await shared.get(f"pool-{i}", cloud.fetch) is tick
    assert cloud.calls == 2
    clock.now = 220.0  # the next tick: a new listing
    assert (await shared.get("pool-60", cloud.fetch)).seq == tick.seq + 1


async def test_a_tick_listing_older_than_a_create_under_a_prefix_is_not_served_for_it() -> None:
    clock = Clock()
    cloud = Cloud()
    shared: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    await shared.get("first", cloud.fetch)
    clock.now = 161.0
    tick = await shared.get("a", cloud.fetch, "cp-a-")
    clock.now = 170.0
    shared.note_write("cp-p-")  # a create of a pool's predecessor (see note_write)
    clock.now = 210.0  # 49 s after the tick's listing, 40 s after the write
    assert (await shared.get("p", cloud.fetch, "cp-p-")).started == 210.0
    assert (await shared.get("q", cloud.fetch, "cp-q-")).seq == tick.seq + 1  # the newest


async def test_listings_reach_each_pool_in_the_order_they_were_made() -> None:
    clock = Clock()
    cloud = Cloud()
    shared: SharedListing[Node] = SharedListing(max_age=5.0, clock=clock)
    seen: dict[str, list[int]] = {}
    for step in range(40):
        pool = f"p{step % 3}"
        clock.now += 1.0 + (step % 4)
        seen.setdefault(pool, []).append((await shared.get(pool, cloud.fetch)).seq)
    for seqs in seen.values():
        assert seqs == sorted(set(seqs)), "a pool got an older or the same listing again"


async def test_a_failed_listing_reaches_every_waiter_and_is_not_kept() -> None:
    cloud = Cloud()
    cloud.gate = asyncio.Event()
    cloud.fail = RuntimeError("throttled")
    shared: SharedListing[Node] = SharedListing(max_age=30.0)
    waiters = [asyncio.ensure_future(shared.get(p, cloud.fetch)) for p in ("a", "b")]
    await asyncio.sleep(0)
    cloud.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    cloud.fail = None
    assert (await shared.get("a", cloud.fetch)).seq == 1
    assert cloud.calls == 2


async def test_a_cancelled_pool_does_not_cancel_the_listing_others_wait_for() -> None:
    cloud = Cloud((Node("x"),))
    cloud.gate = asyncio.Event()
    shared: SharedListing[Node] = SharedListing(max_age=30.0)
    quitter = asyncio.ensure_future(shared.get("a", cloud.fetch))
    stayer = asyncio.ensure_future(shared.get("b", cloud.fetch))
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.sleep(0)
    cloud.gate.set()
    assert (await stayer).nodes == (Node("x"),)
    assert quitter.cancelled()
    assert cloud.calls == 1


async def test_each_pool_gets_its_own_vms_out_of_the_snapshot() -> None:
    pools = [("pilots", "alpha"), ("pilots", "alpha-2"), ("other", "alpha"), ("pilots", "b")]
    nodes = []
    for namespace, pool in pools:
        for queue in ("default", "gpu"):
            nodes += [Node(new_vm_name(queue_prefix(namespace, pool, queue))) for _ in range(3)]
    foreign = [Node("VMDIRAC3_1a2b3c4d"), Node("hand-made"), Node("")]
    shared: SharedListing[Node] = SharedListing(max_age=30.0)
    snapshot = await shared.get("x", Cloud((*nodes, *foreign)).fetch)
    for namespace, pool in pools:
        prefix = pool_prefix(namespace, pool)
        mine = snapshot.with_prefix(prefix)
        assert len(mine) == 6
        assert mine == tuple(n for n in nodes if n.name.startswith(prefix))
    assert snapshot.with_prefix(pool_prefix("pilots", "nobody")) == ()
    # Any other prefix is answered by a scan; None means everything.
    assert snapshot.with_prefix("VMDIRAC3_") == (foreign[0],)
    assert len(snapshot.with_prefix(None)) == len(nodes) + len(foreign)


async def test_the_seen_marks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing_module, "MAX_TRACKED_CONSUMERS", 10)
    shared: SharedListing[Node] = SharedListing(max_age=30.0)
    cloud = Cloud()
    for i in range(25):
        await shared.get(f"pool-{i}", cloud.fetch)
    assert len(shared._seen) == 10
    assert cloud.calls == 1


def test_listings_are_shared_per_scope_and_key_and_go_with_their_last_user() -> None:
    class Scope:
        pass

    one, two = Scope(), Scope()
    first = shared_listing(one, "ec2|creds", max_age=30.0)
    assert shared_listing(one, "ec2|creds", max_age=30.0) is first
    other = shared_listing(one, "ec2|other-creds", max_age=30.0)
    assert other is not first
    assert shared_listing(two, "ec2|creds", max_age=30.0) is not first
    del first  # the last gateway using these credentials went (a rotated Secret)
    gc.collect()
    assert set(listing_module._REGISTRY[one]) == {"ec2|other-creds"}


def test_max_age_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        SharedListing(max_age=-1.0)
