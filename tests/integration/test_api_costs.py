"""What each operation costs in cloud API calls, counted by EC2 Action at the LatencyProxy.

The original (DIRAC's cloud CE) spends one call per pilot on status, two per kill, one
create per VM and a full catalogue listing per submission. CloudPilot's contract is the
floor: one ``DescribeInstances`` per account per cycle whatever the number of pools or
pilots, one ``RunInstances`` per batch, one ``TerminateInstances`` per scale-down, one
``DescribeImages`` per ``name:`` image per cache lifetime, and no Kubernetes write when
nothing changed. These are counts, never times: they hold on any machine.

The reconciler is driven directly (no kopf) where only cloud calls are counted; the last
test runs the real operator against the Kubernetes emulator to show quiet cycles write
nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from cloudpilot import constants, naming
from cloudpilot.account_tick import Tick
from cloudpilot.cloud import gateway as gateway_module
from cloudpilot.cloud.gateway import CloudGateway, CreateRequest, Credentials, ListedNode
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.decision import Outcome
from cloudpilot.kube.scheduler import Next, PoolScheduler
from cloudpilot.models.queues import QueueConfig, effective_queues
from cloudpilot.models.spec import parse_spec
from cloudpilot.reconciler import PoolRef, Reconciler, ReconcilerSettings
from cloudpilot_devtools import moto_ec2
from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy
from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver
from tests.support.kube import wait_for
from tests.support.stack import IMAGE, PILOT, Stack

pytestmark = pytest.mark.slow

CE = "ce.cloudpilot.test"
AMI_ID = "ami-0a1e9c0a1a9e94001"  # the same AMI as IMAGE, by id
NAMESPACE = "pilots"


@pytest.fixture
def cloud(ec2: EC2Emulator) -> Iterator[tuple[EC2Emulator, LatencyProxy]]:
    """The suite's moto on 127.0.0.1 (reset) and a counting proxy in front of it."""
    with LatencyProxy(ec2.endpoint) as proxy:
        yield ec2, proxy


class CountingBucket(TokenBucket):
    """The endpoint's real token bucket, counting the tokens taken."""

    def __init__(self, rate: float, burst: int) -> None:
        super().__init__(rate, burst)
        self.taken = 0

    async def acquire(self) -> None:
        await super().acquire()
        self.taken += 1


@dataclass
class Harness:
    """A reconciler whose Secrets come from a dict, pools as plain bodies."""

    ec2: EC2Emulator
    proxy: LatencyProxy
    settings: ReconcilerSettings = field(
        default_factory=lambda: ReconcilerSettings(rate_limit=1000.0, rate_burst=1000)
    )
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    secret_reads: Counter[str] = field(default_factory=Counter)
    uids: dict[str, str] = field(default_factory=dict)
    """A pool's uid when not ``uid-<name>``: a pool applied again gets a new one."""

    def __post_init__(self) -> None:
        key, secret = self.ec2.credentials
        self.secrets: dict[str, dict[str, bytes]] = {
            "ec2-credentials": {"key": key.encode(), "secret": secret.encode()},
            "pilot": {"pilot.sh": PILOT.encode()},
        }

        async def read_secret(namespace: str, name: str) -> dict[str, bytes]:
            self.secret_reads[name] += 1
            return self.secrets[name]

        # The pools name the moto driver's class path: an operator must allow it.
        self.settings = replace(
            self.settings,
            allowed_driver_classes=self.settings.allowed_driver_classes | {moto_ec2.CLASS_PATH},
        )
        self.reconciler = Reconciler(self.settings, read_secret=read_secret)

    def spec(self, replicas: int, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "replicas": replicas,
            "ce": CE,
            "cloudType": moto_ec2.CLASS_PATH,
            "driver": self.ec2.driver_options(self.proxy.endpoint),
            "credentialsSecret": {"name": "ec2-credentials"},
            "instance": {"image": IMAGE, "flavor": "t3.small"},
            "pilot": {"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
        }
        spec.update(extra)
        return spec

    async def reconcile(self, name: str, replicas: int, **extra: Any) -> dict[str, Any]:
        """One cycle of pool ``name``; returns its status as it would be stored."""
        await self.cycle(name, replicas, **extra)
        return self.statuses[name]

    async def cycle(self, name: str, replicas: int, **extra: Any) -> Outcome:
        """One cycle of pool ``name``, its status stored as kube.handlers would."""
        generation = self.generations.setdefault(name, 1)
        uid = self.uids.get(name, f"uid-{name}")
        body = {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": uid,
                "generation": generation,
            },
            "spec": self.spec(replicas, **extra),
            "status": dict(self.statuses.get(name, {})),
        }
        ref = PoolRef(NAMESPACE, name, uid)
        outcome = await self.reconciler.reconcile(ref, body)
        status = {**self.statuses.get(name, {}), **outcome.status_patch}
        self.statuses[name] = {k: v for k, v in status.items() if v is not None}
        return outcome

    def counts(self) -> Mapping[str, int]:
        return {k: v for k, v in self.proxy.counts.items() if v}

    def delete_orphaning(self, name: str) -> None:
        """What a pool deleted with ``deletionPolicy: Orphan`` leaves: its VMs, and no
        record in the reconciler (teardown's ``forget``). Applied again, it is a new
        object: a new uid, no status."""
        uid = self.uids.get(name, f"uid-{name}")
        self.reconciler.forget(PoolRef(NAMESPACE, name, uid))
        self.statuses.pop(name, None)
        self.uids[name] = f"{uid}-again"


def _driver(ec2: EC2Emulator) -> MotoEC2NodeDriver:
    return MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())


def _live(ec2: EC2Emulator) -> list[Any]:
    return [n for n in _driver(ec2).list_nodes() if str(n.state) in ("running", "pending")]


async def test_a_steady_pool_costs_exactly_one_describe_instances_per_cycle(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    h = Harness(*cloud)
    await h.reconcile("steady", 3)
    assert len(_live(h.ec2)) == 3
    h.proxy.reset_counts()
    for cycle in range(3):
        status = await h.reconcile("steady", 3)
        assert status["replicas"] == 3
        # Not DescribeAddresses too (libcloud's list_nodes would add it), nothing else.
        assert h.counts() == {"DescribeInstances": cycle + 1}


async def test_the_status_of_n_pilots_costs_one_list_call(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    n = 40
    h = Harness(*cloud)
    await h.reconcile("many", n)
    h.proxy.reset_counts()
    status = await h.reconcile("many", n)
    assert status["replicas"] == n and status["instanceCount"] == n
    assert len(status["instances"]) == n
    assert h.counts() == {"DescribeInstances": 1}


@pytest.mark.parametrize(("n", "batch"), [(25, 10), (7, 100)])
async def test_a_scale_up_of_n_costs_one_run_instances_per_batch(
    cloud: tuple[EC2Emulator, LatencyProxy], n: int, batch: int
) -> None:
    h = Harness(*cloud, settings=ReconcilerSettings(batch_size=batch, rate_limit=1000.0))
    await h.reconcile("up", 0)
    h.proxy.reset_counts()
    await h.reconcile("up", n)
    counts = h.counts()
    assert counts["RunInstances"] == math.ceil(n / batch)
    assert counts["DescribeInstances"] == 1
    # Tags go in the RunInstances call; no per-VM call of any kind.
    assert set(counts) <= {"RunInstances", "DescribeInstances", "DescribeImages"}
    assert len(_live(h.ec2)) == n


async def test_a_default_cycle_of_creations_is_one_run_instances(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """With the operator's defaults, a scale-up by maxCreatesPerCycle (500) is one call:
    EC2's per-call maximum (1,000) applies, not batches of 100."""
    h = Harness(*cloud, settings=ReconcilerSettings(rate_limit=1000.0))
    await h.reconcile("up", 0)
    h.proxy.reset_counts()
    await h.reconcile("up", constants.DEFAULT_MAX_CREATES_PER_CYCLE)
    assert h.counts()["RunInstances"] == 1
    assert len(_live(h.ec2)) == constants.DEFAULT_MAX_CREATES_PER_CYCLE


async def test_a_name_image_is_looked_up_once_across_scale_ups(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    h = Harness(*cloud, settings=ReconcilerSettings(batch_size=5, rate_limit=1000.0))
    await h.reconcile("named", 12)  # three batches, one name: image
    await h.reconcile("named", 20)  # a second scale-up, same gateway
    assert h.counts()["DescribeImages"] == 1
    assert h.counts()["RunInstances"] == 3 + 2
    assert len(_live(h.ec2)) == 20


async def test_a_new_pools_image_lookup_runs_beside_its_listing_not_after_it(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """A new pool pays one round trip for listing and lookup, not two in a row: the
    ``DescribeImages`` is answered while the ``DescribeInstances`` is still held."""
    h = Harness(*cloud)
    h.proxy.hold("DescribeInstances")
    cycle = asyncio.ensure_future(h.reconcile("fresh", 3))
    try:
        held = await asyncio.to_thread(h.proxy.wait_for_held, 1)
        assert held, "the listing never reached the cloud"
        await asyncio.to_thread(
            wait_for,
            lambda: h.counts().get("DescribeImages") == 1,
            10,
            message="the image lookup while the listing is held",
        )
        assert "RunInstances" not in h.counts()  # nothing is created before the listing
    finally:
        h.proxy.release()
    await cycle
    assert h.counts() == {"DescribeInstances": 1, "DescribeImages": 1, "RunInstances": 1}
    assert len(_live(h.ec2)) == 3


async def test_a_scale_up_is_sent_while_its_listing_is_still_held(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """``kubectl scale`` of a pool listed before: the create goes out at once, decided from
    the last listing and the creations remembered since, with the listing beside it (one
    round trip, not two); the listing then finds nothing more to create."""
    h = Harness(*cloud)
    await h.reconcile("up", 1)
    h.proxy.reset_counts()
    h.proxy.hold("DescribeInstances")
    cycle = asyncio.ensure_future(h.reconcile("up", 4))
    try:
        await asyncio.to_thread(
            wait_for,
            lambda: h.counts().get("RunInstances") == 1,
            10,
            message="the RunInstances while the listing is held",
        )
        # Held at the proxy, the listing cannot have been answered: the create did not wait.
        assert not cycle.done()
        assert await asyncio.to_thread(h.proxy.wait_for_held, 1), "the listing never went out"
    finally:
        h.proxy.release()
    status = await cycle
    assert h.counts() == {"DescribeInstances": 1, "RunInstances": 1}
    assert h.reconciler.early_scale_ups == 1
    assert status["replicas"] == 4 and len(_live(h.ec2)) == 4
    # The next cycles (a fresh listing each) agree: nothing more is created.
    await h.reconcile("up", 4)
    await h.reconcile("up", 4)
    assert h.counts()["RunInstances"] == 1 and len(_live(h.ec2)) == 4


async def test_a_lookup_that_failed_beside_the_listing_is_left_to_the_create(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """The early lookup is a head start, not a gate: its failure is not reported, and the
    create looks the image up again (and would report what still fails)."""
    h = Harness(*cloud)
    h.proxy.fail_next("DescribeImages", "InternalError")
    status = await h.reconcile("retry", 2)
    assert status.get("lastError") is None
    assert h.counts()["DescribeImages"] == 2
    assert len(_live(h.ec2)) == 2


async def test_a_cycle_that_waited_while_deletion_began_touches_nothing(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """A reconcile queued behind a running one must not act once the pool is being
    deleted: teardown owns the pool then, and a creation could outlive the finalizer."""
    h = Harness(*cloud)
    ref = PoolRef(NAMESPACE, "leaving", "uid-leaving")
    metadata: dict[str, Any] = {
        "name": "leaving",
        "namespace": NAMESPACE,
        "uid": "uid-leaving",
        "generation": 1,
    }
    # The scheduler hands out bodies whose metadata is live (pool_bodies.PoolBodies).
    first = {"metadata": metadata, "spec": h.spec(2), "status": {}}
    second = {"metadata": metadata, "spec": h.spec(5), "status": {}}
    h.proxy.hold("DescribeInstances")
    running = asyncio.ensure_future(h.reconciler.reconcile(ref, first))
    try:
        assert await asyncio.to_thread(h.proxy.wait_for_held, 1)
        waiting = asyncio.ensure_future(h.reconciler.reconcile(ref, second))
        await asyncio.sleep(0)  # one loop step: the queued cycle reaches the pool's lock
        assert h.reconciler.pools[ref.uid].lock._waiters  # type: ignore[attr-defined]
        metadata["deletionTimestamp"] = "2026-11-21T12:00:00Z"  # the watch event arrives
    finally:
        h.proxy.release()
    await running
    outcome = await waiting

    assert outcome.status_patch == {} and outcome.events == []
    assert h.counts()["DescribeInstances"] == 1  # the waiting cycle did not even list
    assert len(_live(h.ec2)) == 2  # what the first cycle made, not the second's 5


async def test_new_credentials_clear_a_create_back_off_at_once(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """A key that may list but not create (an IAM policy too narrow) backs the queue off
    for long; fixing the Secret retries the create on the next cycle, not hours later."""
    h = Harness(*cloud)
    h.proxy.fail_next("RunInstances", "UnauthorizedOperation")
    status = await h.reconcile("iam", 2)
    assert status["lastError"]["reason"] == "BadCredentials" and _live(h.ec2) == []

    await h.reconcile("iam", 2)  # same credentials: still backing off
    assert h.counts()["RunInstances"] == 1

    h.secrets["ec2-credentials"]["key"] = b"AKIAROTATEDKEY000001"  # moto takes any key
    h.reconciler.caches.secret_reads.clear()  # the next cycle reads the Secret again
    await h.reconcile("iam", 2)
    assert h.counts()["RunInstances"] == 2
    assert len(_live(h.ec2)) == 2


async def test_a_pool_stalled_on_an_expired_proxy_waits_a_full_interval(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """No creation can happen until the proxy is renewed (the Secret change wakes the pool
    anyway), so the pool is not re-listed at the converging pace meanwhile."""
    from tests.support.proxies import ProxyFactory

    h = Harness(*cloud)
    h.secrets["pilot-proxy"] = {"proxy": ProxyFactory().expired()}
    body = {
        "metadata": {"name": "stale", "namespace": NAMESPACE, "uid": "uid-stale", "generation": 1},
        "spec": h.spec(
            3,
            pilot={
                "executableSecret": {"name": "pilot", "key": "pilot.sh"},
                "proxySecret": {"name": "pilot-proxy", "key": "proxy"},
            },
        ),
        "status": {},
    }
    outcome = await h.reconciler.reconcile(PoolRef(NAMESPACE, "stale", "uid-stale"), body)

    assert outcome.status_patch["lastError"]["reason"] == "ProxyExpired"
    assert "RunInstances" not in h.counts()
    assert outcome.next_delay == h.settings.interval


async def test_proxy_credentials_work_whichever_queue_of_the_account_has_the_proxy(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """``secret = PROXY`` needs a pilot proxy; one queue of the account having one is
    enough, wherever it stands in the list of queues."""
    from tests.support.proxies import ProxyFactory

    h = Harness(*cloud)
    auth = b"[DEFAULT]\nkey = AKIAFEDCLOUD00000001\nsecret = PROXY\n"
    h.secrets["fedcloud"] = {"cloud.auth": auth}
    h.secrets["pilot-proxy"] = {"proxy": ProxyFactory().rfc()}
    with_proxy = {
        "executableSecret": {"name": "pilot", "key": "pilot.sh"},
        "proxySecret": {"name": "pilot-proxy", "key": "proxy"},
    }
    spec = h.spec(
        0,
        credentialsSecret={"name": "fedcloud"},
        queues=[
            {"name": "with-proxy", "replicas": 1, "pilot": with_proxy},
            {"name": "without", "replicas": 1},
        ],
    )
    del spec["replicas"]  # queues carry their own
    body = {
        "metadata": {"name": "fed", "namespace": NAMESPACE, "uid": "uid-fed", "generation": 1},
        "spec": spec,
        "status": {},
    }
    outcome = await h.reconciler.reconcile(PoolRef(NAMESPACE, "fed", "uid-fed"), body)
    status = outcome.status_patch
    assert status.get("lastError") is None, status.get("lastError")
    assert len(_live(h.ec2)) == 2


async def test_pools_on_one_credentials_secret_share_one_read_per_half_interval(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    h = Harness(*cloud)
    await asyncio.gather(*(h.reconcile(f"s{i}", 1) for i in range(5)))
    await asyncio.gather(*(h.reconcile(f"s{i}", 2) for i in range(5)))  # a second cycle
    # One read of each Secret serves all five pools for both cycles (they are within half
    # a reconcile interval of each other), not one per pool per cycle.
    assert h.secret_reads == {"ec2-credentials": 1, "pilot": 1}


async def test_a_raw_image_id_costs_no_lookup_at_all(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    h = Harness(*cloud)
    await h.reconcile("raw", 4, instance={"image": AMI_ID, "flavor": "t3.small"})
    assert "DescribeImages" not in h.counts()
    assert h.counts()["RunInstances"] == 1


async def test_scaling_to_zero_costs_one_terminate_instances(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    n = 30
    h = Harness(*cloud)
    await h.reconcile("down", n, scaleDownPolicy="DeleteRunning")
    h.proxy.reset_counts()
    status = await h.reconcile("down", 0, scaleDownPolicy="DeleteRunning")
    assert h.counts() == {"DescribeInstances": 1, "TerminateInstances": 1}
    assert status["replicas"] == 0
    assert _live(h.ec2) == []


async def test_a_hundred_pools_on_one_account_share_one_listing_per_cycle(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    h = Harness(*cloud)
    pools = [f"p{i:03d}" for i in range(100)]
    # Bring them up together: one listing serves all the first cycles, then one batch each.
    await asyncio.gather(*(h.reconcile(p, 1) for p in pools))
    assert h.counts()["DescribeInstances"] == 1
    assert h.counts()["RunInstances"] == 100
    assert len(_live(h.ec2)) == 100

    # Steady cycles, all pools at once: the listing in flight is joined, not repeated.
    for cycle in range(2):
        h.proxy.reset_counts()
        statuses = await asyncio.gather(*(h.reconcile(p, 1) for p in pools))
        assert h.counts() == {"DescribeInstances": 1}, f"cycle {cycle}"
        assert all(s["replicas"] == 1 and len(s["instances"]) == 1 for s in statuses)
        # Each pool got its own VM out of the shared listing, and only that one.
        assert len({s["instances"][0]["id"] for s in statuses}) == 100

    # Pools one after another within the reuse window: a recent listing serves them too.
    h.proxy.reset_counts()
    for p in pools:
        await h.reconcile(p, 1)
    assert h.counts() == {"DescribeInstances": 1}


async def test_quiet_pools_created_apart_share_one_listing_per_interval(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """Pools created at different moments used to keep their phases: spread over more than
    half an interval, one account was listed twice an interval. Driven by the operator's
    own scheduler: their quiet cycles come due on the account's tick, so in steady state
    each tick makes at most one listing, shared by every pool (cloudpilot.account_tick)."""
    interval = 1.0
    settings = ReconcilerSettings(
        interval=interval, converging_interval=0.5, rate_limit=1000.0, rate_burst=1000
    )
    h = Harness(*cloud, settings=settings)
    pools = [f"apart{i}" for i in range(4)]
    runs: Counter[str] = Counter()
    ran = asyncio.Condition()

    async def reconcile_one(uid: str) -> Next:  # kube.handlers.reconcile_pool, minus kopf
        outcome = await h.cycle(uid, 0)  # no VMs: quiet from the first cycle on
        async with ran:
            runs[uid] += 1
            ran.notify_all()
        return Next(outcome.next_delay, outcome.tick)

    async def until(predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(30), ran:
                await ran.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"not reached: {what} (runs: {dict(runs)})") from None

    scheduler = PoolScheduler(reconcile_one, retry_delay=0.5)
    scheduler.start()
    try:
        scheduler.due_now(pools[0])
        await until(lambda: runs[pools[0]] >= 1, "the first pool's first cycle")  # warm
        for pool in pools[1:]:
            # The scenario, not a synchronisation: pools created a quarter interval apart.
            await asyncio.sleep(interval / len(pools))
            scheduler.due_now(pool)
        await until(lambda: all(runs[p] >= 2 for p in pools), "every pool's second cycle")
        (gateway,) = h.reconciler.caches.gateways.values()
        tick = gateway.listing.tick
        assert tick is not None
        fetches, started, seen = gateway.listing.fetches, time.monotonic(), sum(runs.values())
        first = runs[pools[0]]
        await until(lambda: runs[pools[0]] >= first + 6, "six more cycles of the first pool")
        listings = gateway.listing.fetches - fetches
        ticks = tick_index(tick, time.monotonic()) - tick_index(tick, started) + 1
        # At most one listing started per tick (+1: one may have been on the wire as the
        # window opened); before, about two per interval for pools spread like these.
        assert listings <= ticks + 1, f"{listings} listings over {ticks} ticks"
        assert sum(runs.values()) - seen > listings  # and they were shared
        # Each listing is that fresh because the pools come due on the tick, together.
        dues = [scheduler._queue.due_at(p) for p in pools]
        assert all(d is None or d == tick.first_at_or_after(d) for d in dues), dues
        assert h.counts()["DescribeInstances"] == gateway.listing.fetches
    finally:
        await scheduler.stop()


def tick_index(tick: Tick, t: float) -> int:
    return math.floor((t - tick.phase) / tick.interval)


async def test_a_pool_back_early_gets_a_newer_listing_not_the_one_it_saw(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """Sharing must not hide progress: a pool that comes back (converging, or checking its
    teardown) is never served the listing it already had."""
    h = Harness(*cloud)
    await h.reconcile("a", 1)
    await h.reconcile("b", 1)
    h.proxy.reset_counts()
    await h.reconcile("a", 1)  # new listing (a has seen the last one)
    await h.reconcile("b", 1)  # reuses the one a just made
    assert h.counts() == {"DescribeInstances": 1}
    prefix = naming.pool_prefix(NAMESPACE, "a")
    (vm,) = [v for v in _live(h.ec2) if v.name.startswith(prefix)]
    # The pilot ends after working an hour (not a fizzle, which the closed loop would not
    # replace at once): the cloud changes under a shared listing.
    h.ec2.age_instance(vm.id, timedelta(hours=1))
    h.ec2.halt_instance(vm.id)
    status = await h.reconcile("a", 1)  # sees it at once, deletes and replaces it
    assert h.counts()["DescribeInstances"] == 2
    assert h.counts()["TerminateInstances"] == 1
    assert status["replicas"] == 1


async def test_every_cloud_call_takes_a_token_from_the_endpoint_bucket(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """The per-endpoint rate limit only protects the account if nothing bypasses it: list,
    name lookup, batched create, batched destroy and the per-VM destroy fallback."""
    ec2, proxy = cloud
    h = Harness(ec2, proxy)
    queue = _queue(h, "limited")
    bucket = CountingBucket(1000.0, 1000)
    gw = CloudGateway(
        queue.account,
        Credentials(*ec2.credentials),
        limiter=bucket,
        batch_size=4,
        allowed_driver_classes=frozenset({moto_ec2.CLASS_PATH}),
    )
    request = CreateRequest(
        queue=queue,
        count=10,
        name=naming.new_vm_name(naming.queue_prefix(NAMESPACE, "limited", "default")),
        user_data=b"#cloud-config\n",
        tags=naming.vm_tags(NAMESPACE, "limited", "default", CE),
    )
    result = await gw.create(request)  # one lookup, three batches
    assert result.error is None and len(result.created) == 10
    listed = await gw.list_nodes()
    outcome = await gw.destroy(listed[:6])  # one TerminateInstances
    ghost = ListedNode(id="i-0123456789abcdef0", name="x", state="running", created_at=None)
    # An unknown id fails the batch: the fallback sends one call per VM, each rate limited.
    outcome = await gw.destroy([*listed[6:8], ghost])
    assert outcome[ghost.id] is not None and outcome[listed[6].id] is None
    counts = h.counts()
    assert counts["DescribeImages"] == 1 and counts["RunInstances"] == 3
    assert counts["TerminateInstances"] == 1 + 1 + 3
    assert bucket.taken == sum(counts.values())


def _queue(h: Harness, pool: str) -> QueueConfig:
    spec = parse_spec(h.spec(1))
    (queue,) = effective_queues(spec, namespace=NAMESPACE, pool_name=pool)
    return queue


async def test_a_long_listing_is_paged_one_call_per_page(
    cloud: tuple[EC2Emulator, LatencyProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "EC2_LIST_PAGE_SIZE", 5)
    # moto pages by reservation (one per RunInstances): twelve batches of one.
    h = Harness(*cloud, settings=ReconcilerSettings(batch_size=1, rate_limit=1000.0))
    status = await h.reconcile("paged", 12)
    h.proxy.reset_counts()
    status = await h.reconcile("paged", 12)
    assert status["replicas"] == 12
    assert h.counts() == {"DescribeInstances": 3}


async def test_the_listing_leaves_out_terminated_and_foreign_instances_server_side(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    ec2, proxy = cloud
    h = Harness(ec2, proxy)
    await h.reconcile("mine", 3)
    driver = _driver(ec2)
    image = driver.list_images(ex_image_ids=[AMI_ID])[0]
    size = next(s for s in driver.list_sizes() if s.id == "t3.small")
    driver.create_node(name="hand-made", image=image, size=size)
    gone = _live(ec2)[0]
    driver.destroy_node(gone)
    (gateway,) = h.reconciler.caches.gateways.values()
    listed = await gateway.list_nodes()
    assert len(listed) == 2
    assert gone.id not in {n.id for n in listed}
    assert all(n.tags.get(constants.TAG_MANAGED_BY) == "cloudpilot" for n in listed)


async def test_after_a_refused_batch_the_batches_not_yet_sent_are_not_sent(
    cloud: tuple[EC2Emulator, LatencyProxy],
) -> None:
    """Batches go out concurrently, but a quota refusal stops the ones still waiting: they
    would be refused too, and the queue backs off."""
    ec2, proxy = cloud
    h = Harness(ec2, proxy, settings=ReconcilerSettings(batch_size=10, parallelism=1))
    proxy.fail_next("RunInstances", "InstanceLimitExceeded")
    status = await h.reconcile("quota", 25)
    assert h.counts()["RunInstances"] == 1
    assert status["replicas"] == 0
    assert _live(ec2) == []
    h.proxy.reset_counts()
    # With room for all batches at once, one refusal leaves the others' VMs standing.
    h2 = Harness(ec2, proxy, settings=ReconcilerSettings(batch_size=10, parallelism=8))
    proxy.fail_next("RunInstances", "InstanceLimitExceeded")
    # Hold the batches at the proxy until all three are on the wire, so the refusal cannot
    # arrive before the others were sent (that order is the case under test).
    proxy.hold("RunInstances")
    reconcile = asyncio.ensure_future(h2.reconcile("quota2", 25))
    assert await asyncio.to_thread(proxy.wait_for_held, 3, 30), "3 batches not in flight"
    proxy.release()
    await reconcile
    assert h2.counts()["RunInstances"] == 3
    assert len(_live(ec2)) in (15, 20)  # the refused batch was one of 10 or the one of 5


def test_a_quiet_cycle_writes_nothing_to_kubernetes(stack_without_operator: Stack) -> None:
    """Status is patched only when it changes, and nothing else writes on a quiet cycle.

    Every write bumps the written object's resourceVersion: none of the objects in the
    pool's namespace (the pool, its Events, Secrets, ConfigMaps, Leases) may change while
    the operator keeps reconciling a pool whose VMs do not change. (The list's own
    resourceVersion is etcd's revision for the whole cluster, which the API server's own
    leases move every few seconds, so it says nothing about the operator.)
    """
    stack = stack_without_operator
    with LatencyProxy(stack.ec2.endpoint) as proxy:
        stack.start_operator()
        stack.apply_pool("quiet", replicas=2, driver=stack.ec2.driver_options(proxy.endpoint))
        stack.wait_status("quiet", lambda s: s.get("running") == 2, what="2 running")
        baseline = proxy.counts.get("DescribeInstances", 0)
        # Let the status settle (the Ready condition follows the running count).
        wait_for(
            lambda: proxy.counts.get("DescribeInstances", 0) >= baseline + 2,
            30,
            message="two more cycles",
        )
        before = _cluster_version(stack)
        events_before = len(stack.events())
        listed = proxy.counts.get("DescribeInstances", 0)
        wait_for(
            lambda: proxy.counts.get("DescribeInstances", 0) >= listed + 4,
            30,
            message="four quiet cycles",
        )
        assert _cluster_version(stack) == before
        assert len(stack.events()) == events_before
        assert set(proxy.counts) == {"DescribeImages", "RunInstances", "DescribeInstances"}
        stack.stop_operator()


def _cluster_version(stack: Stack) -> dict[str, str]:
    """Every object in the test's namespace, by kind and name, with its resourceVersion."""
    import kubernetes

    pools = stack.custom.list_namespaced_custom_object(
        constants.API_GROUP, constants.API_VERSION, stack.namespace, constants.PLURAL
    )
    versions = {
        f"pool/{p['metadata']['name']}": p["metadata"]["resourceVersion"] for p in pools["items"]
    }
    leases = kubernetes.client.CoordinationV1Api(stack.core.api_client)
    for kind, listing in (
        ("event", stack.core.list_namespaced_event(stack.namespace)),
        ("secret", stack.core.list_namespaced_secret(stack.namespace)),
        ("configmap", stack.core.list_namespaced_config_map(stack.namespace)),
        ("lease", leases.list_namespaced_lease(stack.namespace)),
    ):
        for item in listing.items:
            versions[f"{kind}/{item.metadata.name}"] = item.metadata.resource_version
    return versions
