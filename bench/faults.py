"""Convergence under a mix of cloud faults (issue 12, part 5): how long a 50-VM pool takes to
converge when the cloud throttles, fails, hangs and loses answers, and whether the pool ever
holds more VMs than asked for.

The fault mix, served in this order through the latency proxy (50 ms per request):

* ``RunInstances``: throttled (503 ``RequestLimitExceeded``) twice, one request that hangs
  (never answered), one whose answer is lost after the cloud acted;
* ``DescribeInstances``: failing (500 ``InternalError``) twice, one request that hangs.

The real reconciler runs cycle after cycle with the delays it asks for itself (the
operator's default intervals and back-off), as the scheduler would. A watcher lists the
cloud directly (not through the proxy) after every cycle to find the most VMs that were
live at once, and at the end counts every VM the cloud ever held (terminated ones stay
listed in moto), so a duplicate created and deleted again would show. Nothing is
asserted: the figures go to docs/performance.md.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.common import NAMESPACE, Cloud, ReconcilerHarness, emulated_cloud, pool_spec
from cloudpilot.reconciler import PoolRef, ReconcilerSettings

LATENCY = 0.05


@dataclass
class FaultRun:
    n: int
    seconds: float
    cycles: int
    max_live: int
    created_total: int
    """Every VM the cloud ever held for the pool, terminated ones included."""
    run_instances: int
    faults: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__}


def _inject(cloud: Cloud) -> None:
    proxy = cloud.proxy
    proxy.fail_next("RunInstances", "RequestLimitExceeded", times=2)
    proxy.hang_next("RunInstances")
    proxy.lose_answer_next("RunInstances")
    proxy.fail_next("DescribeInstances", "InternalError", times=2)
    proxy.hang_next("DescribeInstances")


def _live(cloud: Cloud) -> int:
    return sum(
        1
        for n in cloud.driver(proxied=False).list_nodes()
        if str(n.state) in ("running", "pending")
    )


async def _converge(cloud: Cloud, n: int, settings: ReconcilerSettings, limit: float) -> FaultRun:
    harness = ReconcilerHarness(cloud, settings)
    reconciler = harness.reconciler
    ref = PoolRef(NAMESPACE, "faults", "uid-faults")
    status: dict[str, Any] = {}
    started = time.monotonic()
    cycles = max_live = 0
    spec = pool_spec(cloud, n)
    # The operator's own bounded wait (constants.CLOUD_CALL_TIMEOUT), not the 60 s the
    # other scenarios give moto's large batches: what a hung request costs is the point.
    spec["driver"].pop("timeout", None)
    while time.monotonic() - started < limit:
        body = {
            "metadata": {"name": "faults", "namespace": NAMESPACE, "uid": "uid-faults"},
            "spec": spec,
            "status": dict(status),
        }
        body["metadata"]["generation"] = 1
        outcome = await reconciler.reconcile(ref, body)
        cycles += 1
        status = {k: v for k, v in {**status, **outcome.status_patch}.items() if v is not None}
        live = await asyncio.to_thread(_live, cloud)
        max_live = max(max_live, live)
        if live == n and status.get("replicas") == n:
            break
        await asyncio.sleep(outcome.next_delay)  # the delay the operator asked for
    return FaultRun(
        n=n,
        seconds=time.monotonic() - started,
        cycles=cycles,
        max_live=max_live,
        created_total=len(cloud.driver(proxied=False).list_nodes()),
        run_instances=cloud.proxy.counts.get("RunInstances", 0),
        faults=dict(cloud.proxy.faults_served),
    )


def converge_under_faults(n: int = 50, limit: float = 300.0) -> FaultRun:
    with emulated_cloud() as cloud:
        cloud.fresh(LATENCY)
        _inject(cloud)
        settings = ReconcilerSettings(rate_limit=1000.0, rate_burst=1000)
        return asyncio.run(_converge(cloud, n, settings, limit))


if __name__ == "__main__":
    result = converge_under_faults()
    print(result)
