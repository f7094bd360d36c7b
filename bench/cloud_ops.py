"""Bring-up, status and scale-to-zero: the original's way, CloudPilot's, and the floor.

Each scenario runs its three contenders one after the other in the same process, against
the same emulator behind the same latency proxy, each on an emptied cloud:

* **baseline**: what DIRAC's cloud CE does, through the same libcloud driver and proxy: per
  submission one image catalogue listing then one ``create_node`` per VM in sequence; one
  ``DescribeInstances`` per pilot for status; two calls per kill (look the VM up, destroy it);
* **cloudpilot**: one cycle of CloudPilot's real reconciler (shared listing, cached lookups,
  concurrent ``MinCount=MaxCount`` batches, user data rendered once, batched terminate);
  for bring-up also a scale-up of a pool that ran before, a new pool on an account another
  pool keeps listed, and the gateway's create alone;
* **floor**: the same work as one API call straight to the emulator (through the proxy):
  one ``RunInstances`` of N, one ``DescribeInstances``, one ``TerminateInstances`` of N.

moto spends CPU per instance (≈ 20 ms on the reference machine), so the floor is not one
round trip but one round trip plus the emulator's work; that is why it is timed, not assumed.

A baseline that would run for long is *sampled*: its first ``sample`` operations are timed
and the rest extrapolated linearly (one-at-a-time calls cost the same each); results say so.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from libcloud.compute.base import Node, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from bench.common import (
    AMI_ID,
    CE,
    DRIVER_CLASS,
    FLAVOR,
    NAMESPACE,
    Cloud,
    ReconcilerHarness,
    Timer,
    pool_spec,
    ratio,
)
from cloudpilot import constants, naming
from cloudpilot.cloud.gateway import CloudGateway, CreateRequest, Credentials, _describe_instances
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.models.queues import effective_queues
from cloudpilot.models.spec import parse_spec
from cloudpilot.reconciler import ReconcilerSettings

USER_DATA = b"#cloud-config\n" + b"# pilot wrapper and settings\n" * 60


@dataclass
class Contender:
    seconds: float
    calls: int
    sampled: str = ""
    """Empty when run in full, else ``"k of N"``: the time is extrapolated from k."""


@dataclass
class Result:
    scenario: str
    n: int
    latency_ms: int
    baseline: Contender
    cloudpilot: Contender
    """A new pool's first reconcile cycle (bring-up), or the cycle that does the work."""
    floor: Contender
    scale_up: Contender | None = None
    """Bring-up only: the cycle that scales a pool that has run before (lookup cached)."""
    gateway: Contender | None = None
    """Bring-up only: the gateway's create once the cycle has decided (no listing)."""
    listed_account: Contender | None = None
    """Bring-up only: a new pool on an account another pool keeps listed."""

    @property
    def speedup(self) -> float:
        return ratio(self.baseline.seconds, self.cloudpilot.seconds)

    @property
    def vs_floor(self) -> float:
        return ratio(self.cloudpilot.seconds, self.floor.seconds)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(speedup=round(self.speedup, 2), vs_floor=round(self.vs_floor, 2))
        for name in ("scale_up", "gateway", "listed_account"):
            part = getattr(self, name)
            if part is not None:
                data[f"{name}_vs_floor"] = round(ratio(part.seconds, self.floor.seconds), 2)
                data[f"{name}_speedup"] = round(ratio(self.baseline.seconds, part.seconds), 2)
        return data


def _size(driver: Any) -> NodeSize:
    return NodeSize(FLAVOR, FLAVOR, 0, 0, 0, 0.0, driver)


def _sample_size(n: int, latency: float, budget: float, sample: int) -> int:
    """How many one-at-a-time operations to really run: all, unless that exceeds budget."""
    predicted = n * (latency + 0.03)
    return n if predicted <= budget else min(n, sample)


def _contender(
    seconds_for_done: float, done: int, n: int, calls: int, fixed: float = 0.0
) -> Contender:
    """Extrapolate ``done`` timed operations (after ``fixed`` set-up time) to ``n``."""
    if done >= n:
        return Contender(round(fixed + seconds_for_done, 3), calls)
    per_op = seconds_for_done / done
    calls_per_op = calls / done if done else 0
    return Contender(
        round(fixed + per_op * n, 3), round(calls_per_op * n), sampled=f"{done} of {n}"
    )


# -- bring-up ------------------------------------------------------------------------------


def baseline_bring_up(
    cloud: Cloud, n: int, latency: float, budget: float, sample: int
) -> Contender:
    cloud.fresh(latency)
    driver: Any = cloud.driver()  # libcloud's own unannotated calls, made as DIRAC makes them
    with Timer() as setup:
        # DIRAC lists the whole catalogue on every submission, even for a raw id.
        images = driver.list_images()
        image = next(i for i in images if i.id == AMI_ID)
        size = _size(driver)
    setup_calls = cloud.calls()
    todo = _sample_size(n, latency, budget, sample)
    with Timer() as loop:
        for _ in range(todo):
            driver.create_node(
                name=f"VMDIRAC3_{secrets.token_hex(4)}",
                image=image,
                size=size,
                ex_userdata=USER_DATA.decode(),
            )
    calls = cloud.calls() - setup_calls
    result = _contender(loop.seconds, todo, n, calls, fixed=setup.seconds)
    result.calls += setup_calls
    return result


def cloudpilot_bring_up(cloud: Cloud, n: int, latency: float) -> Contender:
    """A new pool of n: one reconcile cycle of a new reconciler (list, look the ``name:``
    image up, create in batches)."""
    cloud.fresh(latency)
    harness = ReconcilerHarness(cloud)
    with Timer() as t:
        status = asyncio.run(harness.reconcile("bringup", n))
    if status.get("replicas") != n:
        raise RuntimeError(f"CloudPilot brought up {status.get('replicas')} of {n}")
    return Contender(round(t.seconds, 3), cloud.calls())


def _second_cycle_timed(
    cloud: Cloud, latency: float, first: tuple[str, int], second: tuple[str, int], what: str
) -> Contender:
    """Reconcile ``first`` (pool, replicas) at no latency, then time one cycle of ``second``
    at ``latency``: the shape of every "after one pool ran" contender."""
    cloud.fresh(0.0)

    async def run() -> tuple[float, int]:
        harness = ReconcilerHarness(cloud)
        await harness.reconcile(*first)
        cloud.proxy.latency = latency
        cloud.proxy.reset_counts()
        with Timer() as t:
            status = await harness.reconcile(*second)
        if status.get("replicas") != second[1]:
            raise RuntimeError(f"CloudPilot {what} {status.get('replicas')} of {second[1]}")
        return t.seconds, cloud.calls()

    seconds, calls = asyncio.run(run())
    return Contender(round(seconds, 3), calls)


def cloudpilot_scale_up(cloud: Cloud, n: int, latency: float) -> Contender:
    """``kubectl scale`` of a pool that has run before (1 VM, image already resolved) to
    1 + n: one reconcile cycle (the listing, then the batches)."""
    return _second_cycle_timed(cloud, latency, ("scaled", 1), ("scaled", 1 + n), "scaled to")


def cloudpilot_new_pool_on_listed_account(cloud: Cloud, n: int, latency: float) -> Contender:
    """A new pool of n on an account another pool keeps listed: that pool (1 VM) is
    reconciled first at no latency (the account's listing, the image lookup), then the new
    pool's first cycle, timed: served the shared listing, it creates at once."""
    return _second_cycle_timed(cloud, latency, ("keeper", 1), ("newcomer", n), "brought up")


def gateway_create(cloud: Cloud, n: int, latency: float) -> Contender:
    """What CloudPilot sends once a cycle has decided to create n: ``CloudGateway.create``
    (concurrent batches; the image already resolved, as after a pool's first VM)."""
    cloud.fresh(0.0)

    async def run() -> tuple[float, int]:
        spec = parse_spec(pool_spec(cloud, n))
        (queue,) = effective_queues(spec, namespace=NAMESPACE, pool_name="gw")
        gateway = CloudGateway(
            queue.account,
            Credentials(*cloud.ec2.credentials),
            limiter=TokenBucket(1000.0, 1000),
            allowed_driver_classes=frozenset({DRIVER_CLASS}),
        )
        prefix = naming.queue_prefix(NAMESPACE, "gw", queue.name)

        def request(count: int) -> CreateRequest:
            return CreateRequest(
                queue=queue,
                count=count,
                name=naming.new_vm_name(prefix),
                user_data=USER_DATA,
                tags=naming.vm_tags(NAMESPACE, "gw", queue.name, CE),
            )

        await gateway.create(request(1))  # resolves the name: image
        cloud.proxy.latency = latency
        cloud.proxy.reset_counts()
        with Timer() as t:
            result = await gateway.create(request(n))
        if result.error is not None or len(result.created) != n:
            raise RuntimeError(f"gateway created {len(result.created)} of {n}: {result.error}")
        return t.seconds, cloud.calls()

    seconds, calls = asyncio.run(run())
    return Contender(round(seconds, 3), calls)


def floor_bring_up(cloud: Cloud, n: int, latency: float) -> Contender:
    cloud.fresh(latency)
    driver: Any = cloud.driver()  # libcloud's own unannotated calls
    image = NodeImage(AMI_ID, None, driver)  # type: ignore[arg-type]  # an id has no name
    with Timer() as t:
        nodes = driver.create_node(
            name="floor",
            image=image,
            size=_size(driver),
            ex_userdata=USER_DATA.decode(),
            ex_mincount=n,
            ex_maxcount=n,
        )
    if len(nodes) != n:
        raise RuntimeError(f"the floor call started {len(nodes)} of {n}")
    return Contender(round(t.seconds, 3), cloud.calls())


def bring_up(cloud: Cloud, n: int, latency: float, *, budget: float, sample: int) -> Result:
    floor = floor_bring_up(cloud, n, latency)
    ours = cloudpilot_bring_up(cloud, n, latency)
    scaled = cloudpilot_scale_up(cloud, n, latency)
    listed = cloudpilot_new_pool_on_listed_account(cloud, n, latency)
    gateway = gateway_create(cloud, n, latency)
    base = baseline_bring_up(cloud, n, latency, budget, sample)
    return Result(
        "bring-up",
        n,
        round(latency * 1000),
        base,
        ours,
        floor,
        scale_up=scaled,
        gateway=gateway,
        listed_account=listed,
    )


# -- status and scale to zero ----------------------------------------------------------------


async def _pool_with(cloud: Cloud, n: int, **extra: Any) -> tuple[ReconcilerHarness, list[str]]:
    """A CloudPilot pool of n VMs made at zero latency; returns the harness and the ids.

    The harness must then be used in the same event loop (its gateways' queues and locks
    belong to it): the scenarios below are coroutines run by one ``asyncio.run`` each.
    """
    cloud.fresh(0.0)
    harness = ReconcilerHarness(cloud, settings=ReconcilerSettings(rate_limit=1000.0))
    await harness.reconcile("pool", n, **extra)
    ids = [n.id for n in cloud.driver(proxied=False).list_nodes() if n.id is not None]
    if len(ids) != n:
        raise RuntimeError(f"set-up made {len(ids)} of {n} VMs")
    return harness, ids


def _describe_one(driver: Any, vm_id: str) -> Any:
    """One DescribeInstances for one instance: the original's per-pilot status call."""
    params = {"Action": "DescribeInstances", "InstanceId.1": vm_id}
    return driver.connection.request(driver.path, params=params).object


def status(cloud: Cloud, n: int, latency: float, *, budget: float, sample: int) -> Result:
    return asyncio.run(_status(cloud, n, latency, budget=budget, sample=sample))


async def _status(cloud: Cloud, n: int, latency: float, *, budget: float, sample: int) -> Result:
    harness, ids = await _pool_with(cloud, n)
    cloud.proxy.latency = latency
    cloud.proxy.reset_counts()
    with Timer() as t:
        got = await harness.reconcile("pool", n)
    if got.get("replicas") != n:
        raise RuntimeError(f"status shows {got.get('replicas')} of {n}")
    ours = Contender(round(t.seconds, 3), cloud.calls())

    driver = cloud.driver()
    cloud.proxy.reset_counts()
    with Timer() as t:
        _describe_instances(driver, None)
    floor = Contender(round(t.seconds, 3), cloud.calls())

    cloud.proxy.reset_counts()
    todo = _sample_size(n, latency, budget, sample)
    with Timer() as t:
        for vm_id in ids[:todo]:
            _describe_one(driver, vm_id)
    base = _contender(t.seconds, todo, n, cloud.calls())
    return Result("status", n, round(latency * 1000), base, ours, floor)


def scale_to_zero(cloud: Cloud, n: int, latency: float, *, budget: float, sample: int) -> Result:
    return asyncio.run(_scale_to_zero(cloud, n, latency, budget=budget, sample=sample))


async def _scale_to_zero(
    cloud: Cloud, n: int, latency: float, *, budget: float, sample: int
) -> Result:
    policy = {"scaleDownPolicy": "DeleteRunning"}
    harness, _ = await _pool_with(cloud, n, **policy)
    cloud.proxy.latency = latency
    cloud.proxy.reset_counts()
    with Timer() as t:
        got = await harness.reconcile("pool", 0, **policy)
    if got.get("replicas") != 0:
        raise RuntimeError("CloudPilot did not scale to zero")
    ours = Contender(round(t.seconds, 3), cloud.calls())

    _, ids = await _pool_with(cloud, n)
    driver: Any = cloud.driver()  # libcloud's own unannotated calls, made as DIRAC makes them
    cloud.proxy.latency = latency
    cloud.proxy.reset_counts()
    with Timer() as t:
        params = {"Action": "TerminateInstances"}
        params.update({f"InstanceId.{i}": vm_id for i, vm_id in enumerate(ids, 1)})
        driver.connection.request(driver.path, params=params)
    floor = Contender(round(t.seconds, 3), cloud.calls())

    _, ids = await _pool_with(cloud, n)
    cloud.proxy.latency = latency
    cloud.proxy.reset_counts()
    todo = _sample_size(2 * n, latency, budget, 2 * sample) // 2
    with Timer() as t:
        for vm_id in ids[:todo]:
            _describe_one(driver, vm_id)  # the original looks the VM up...
            # ...then destroys it
            driver.destroy_node(Node(vm_id, "", NodeState.UNKNOWN, [], [], driver))
    base = _contender(t.seconds, todo, n, cloud.calls())
    return Result("scale-to-zero", n, round(latency * 1000), base, ours, floor)


def expected_calls(n: int, batch: int = constants.DEFAULT_BATCH_SIZE) -> dict[str, int]:
    """What CloudPilot should cost (checked by the tests; printed for reference)."""
    return {"bring-up": 2 + math.ceil(n / batch), "status": 1, "scale-to-zero": 2}
