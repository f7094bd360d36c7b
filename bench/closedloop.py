"""The closed loop's figures (issue 13): VMs created per hour when pilots find no work, open
loop against closed loop, and how fast a pool fills an account's quota when it asks for
more than fits.

**No work.** Every pilot halts 60 s after boot (an empty task queue). The real reconciler
(libcloud's EC2 driver through the latency proxy, the gateway, decide/conclude) runs on an
injected clock for an hour of the operator's time: each cycle comes when the operator asked
to be called back (its own ``next_delay``), the emulator's launch times follow the same
clock, and a VM halts once its 60 s are up. Nothing sleeps: an hour takes seconds. The VMs
created are counted (moto keeps terminated instances listed). The same function is the
end-to-end test's scenario (tests/integration/test_closed_loop_hour.py).

**Quota fill.** The proxy refuses past ``quota`` live instances (EC2's
InstanceLimitExceeded, or a partial RunInstances); the pool asks for ``replicas`` > quota.
Wall-clock seconds and RunInstances calls until ``quota`` VMs are live, cycles run back to
back as the scheduler would when the operator asks for the converging interval (no wait).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import Cloud, ReconcilerHarness, emulated_cloud

PILOT_SECONDS = 60.0
"""How long a pilot with no work keeps its VM up after boot."""


class FakeClock:
    """The operator's clock, moved on by the scenario (never by real time)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class NoWorkRun:
    closed_loop: bool
    replicas: int
    hours: float
    cycles: int
    vms_created: int
    run_instances: int
    state: str
    """The queue's closedLoop.state at the end (Disabled for the open loop)."""
    consecutive_fizzles: int

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__}


_NOT_GONE = ["pending", "running", "stopping", "stopped"]


def _pool_vms(cloud: Cloud, name: str) -> list[Any]:
    """The pool's VMs that are not terminated, listed directly (not through the proxy, so
    the operator's call counts stay its own). Terminated ones are filtered out by moto:
    an hour of open-loop churn leaves hundreds."""
    not_gone: Any = {"instance-state-name": _NOT_GONE}  # libcloud's stub says str
    nodes = cloud.driver(proxied=False).list_nodes(ex_filters=not_gone)
    return [n for n in nodes if n.name.startswith(f"cp-{name}")]


async def no_work(
    cloud: Cloud, *, closed_loop: bool, replicas: int = 10, hours: float = 1.0
) -> NoWorkRun:
    """Run ``hours`` of the operator's clock with pilots that find no work; count VMs."""
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start)
    harness = ReconcilerHarness(cloud, clock=clock)
    name = "nowork-closed" if closed_loop else "nowork-open"
    extra = {} if closed_loop else {"closedLoop": {"enabled": False}}
    launched: dict[str, datetime] = {}
    end = start + timedelta(hours=hours)
    cycles = 0
    calls_before = cloud.proxy.counts.get("RunInstances", 0)
    status: dict[str, Any] = {}
    while clock.now < end:
        status, outcome = await harness.cycle(name, replicas, **extra)
        cycles += 1
        for node in _pool_vms(cloud, name):
            if node.id not in launched:  # created in this cycle, at the operator's "now"
                launched[node.id] = clock.now
                cloud.ec2.set_launch_time(node.id, clock.now)
        clock.now += timedelta(seconds=outcome.next_delay)
        for node in _pool_vms(cloud, name):
            up = clock.now - launched[node.id] >= timedelta(seconds=PILOT_SECONDS)
            if up and str(node.state) == "running":
                cloud.ec2.halt_instance(node.id)  # the pilot found no work and ended
    (queue,) = status.get("queues") or [{}]
    loop = queue.get("closedLoop") or {}
    return NoWorkRun(
        closed_loop=closed_loop,
        replicas=replicas,
        hours=hours,
        cycles=cycles,
        vms_created=len(launched),
        run_instances=cloud.proxy.counts.get("RunInstances", 0) - calls_before,
        state=str(loop.get("state")),
        consecutive_fizzles=int(loop.get("consecutiveFizzles") or 0),
    )


@dataclass(frozen=True)
class QuotaFill:
    quota: int
    replicas: int
    seconds: float
    cycles: int
    run_instances: int
    live: int
    state: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__}


async def fill_quota(cloud: Cloud, *, quota: int = 50, replicas: int = 80) -> QuotaFill:
    cloud.proxy.instance_limit = quota
    harness = ReconcilerHarness(cloud)
    started = time.perf_counter()
    cycles, live = 0, 0
    status: dict[str, Any] = {}
    while live < quota and cycles < 50:
        status = await harness.reconcile("fill", replicas)
        cycles += 1
        live = sum(1 for n in _pool_vms(cloud, "fill") if str(n.state) in ("running", "pending"))
    seconds = time.perf_counter() - started
    for _ in range(2):  # what the pool then says (it learned the quota)
        status = await harness.reconcile("fill", replicas)
    (queue,) = status.get("queues") or [{}]
    loop = queue.get("closedLoop") or {}
    return QuotaFill(
        quota,
        replicas,
        round(seconds, 3),
        cycles,
        cloud.proxy.counts.get("RunInstances", 0),
        live,
        str(loop.get("state")),
        str(loop.get("message")),
    )


def run(replicas: int = 10) -> dict[str, Any]:
    """Both scenarios on a fresh emulated cloud each; the figures for docs/performance.md."""
    report: dict[str, Any] = {}
    runs = []
    for closed in (False, True):
        with emulated_cloud() as cloud:
            runs.append(asyncio.run(no_work(cloud, closed_loop=closed, replicas=replicas)))
    open_run, closed_run = runs
    report["no_work"] = [r.as_dict() for r in runs]
    report["no_work_ratio"] = closed_run.vms_created / max(open_run.vms_created, 1)
    with emulated_cloud() as cloud:
        report["quota_fill"] = asyncio.run(fill_quota(cloud)).as_dict()
    return report


if __name__ == "__main__":
    print(run())
