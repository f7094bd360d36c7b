"""Many pools on one account: API calls per cycle, and the operator's memory.

* **steady state, reconciler**: 1, 100 or 1,000 pools on one account, every pool
  reconciling once per cycle (all at once, as the scheduler does when they are all due):
  cloud calls per cycle, against what the original spends (one status call per pilot)
  and what one listing per pool would (computed, labelled so).
* **operator**: the real operator (``python -m cloudpilot operator``) in a *subprocess*,
  against the Kubernetes emulator (a thread here) and the EC2 emulator behind the counting
  proxy. 1,000 pools with 0 or 1 replicas are created; once every pool has a status the
  operator's RSS is read from ``/proc/<pid>/status`` and ``DescribeInstances`` are counted
  over a few reconcile intervals. Then the operator is restarted (all pools exist already,
  so they are all due at once) and the same is measured again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import DRIVER_CLASS, NAMESPACE, PILOT, Cloud, ReconcilerHarness, Timer, pool_spec
from cloudpilot import constants
from cloudpilot.kube import client as kube_client
from cloudpilot.reconciler import ReconcilerSettings

REPO = Path(__file__).resolve().parents[1]


# -- steady state through the reconciler ---------------------------------------------------


@dataclass
class SteadyResult:
    pools: int
    pilots: int
    cycles: int
    calls_per_cycle: float
    describe_instances_per_cycle: float
    original_calls_per_cycle: int
    per_pool_listing_calls_per_cycle: int
    cycle_seconds: float


def steady_state(cloud: Cloud, pools: int, *, cycles: int = 3) -> SteadyResult:
    return asyncio.run(_steady_state(cloud, pools, cycles=cycles))


def _replicas(i: int, pools: int) -> int:
    """One pilot per pool up to 100 pools; every tenth pool past that (0 or 1 replicas)."""
    return 1 if pools <= 100 or i % 10 == 0 else 0


async def _steady_state(cloud: Cloud, pools: int, *, cycles: int) -> SteadyResult:
    cloud.fresh(0.0)
    harness = ReconcilerHarness(cloud, settings=ReconcilerSettings(rate_limit=1000.0))
    names = [f"pool-{i:04d}" for i in range(pools)]
    wanted = {name: _replicas(i, pools) for i, name in enumerate(names)}
    await asyncio.gather(*(harness.reconcile(n, r) for n, r in wanted.items()))
    await asyncio.gather(*(harness.reconcile(n, r) for n, r in wanted.items()))  # settle
    cloud.proxy.reset_counts()
    with Timer() as t:
        for _ in range(cycles):
            await asyncio.gather(*(harness.reconcile(n, r) for n, r in wanted.items()))
    counts = cloud.counts()
    pilots = sum(wanted.values())
    return SteadyResult(
        pools=pools,
        pilots=pilots,
        cycles=cycles,
        calls_per_cycle=round(cloud.calls() / cycles, 2),
        describe_instances_per_cycle=round(counts.get("DescribeInstances", 0) / cycles, 2),
        original_calls_per_cycle=pilots,
        # libcloud's list_nodes: DescribeInstances + DescribeAddresses, once per pool.
        per_pool_listing_calls_per_cycle=2 * pools,
        cycle_seconds=round(t.seconds / cycles, 3),
    )


# -- the operator in a subprocess -----------------------------------------------------------


@dataclass
class OperatorResult:
    phase: str
    pools: int
    pilots: int
    rss_mb: float
    peak_rss_mb: float
    converge_seconds: float
    interval: float
    window_cycles: int
    describe_instances_per_cycle: float
    other_calls: dict[str, int]


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()

    def to_mb(v: str) -> float:  # kB -> MiB
        return int(v.split()[0]) / 1024

    return round(to_mb(fields["VmRSS"]), 1), round(to_mb(fields["VmHWM"]), 1)


@contextlib.contextmanager
def _operator(
    kubeconfig: Path,
    interval: float,
    log: Path,
    *,
    tree: str | None = None,
    extra_env: dict[str, str] | None = None,
    timeline: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``tree``: the ``operator/`` directory to run (default: this checkout's);
    ``timeline``: run it under ``bench.memory_probe``, which samples its memory there."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "CLOUDPILOT_RECONCILE_INTERVAL": str(interval),
        "CLOUDPILOT_CONVERGING_INTERVAL": str(max(interval / 4, 1.0)),
        "CLOUDPILOT_RATE_LIMIT": "1000",
        "CLOUDPILOT_RATE_BURST": "1000",
        # The pools name the moto driver's class path: the operator must allow it.
        "CLOUDPILOT_ALLOWED_DRIVER_CLASSES": DRIVER_CLASS,
        "PYTHONPATH": tree or str(REPO / "operator"),  # bench/ comes from cwd (-m)
        **(extra_env or {}),
    }
    command = ["operator", "--namespace", NAMESPACE]
    if timeline is not None:
        command = ["bench.memory_probe", str(timeline), "--", *command]
    else:
        command = ["cloudpilot", *command]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@contextlib.contextmanager
def _emulator_process(kubeconfig: Path) -> Iterator[Path]:
    """The Kubernetes emulator in its own process: in the benchmark's process it shares a
    GIL with moto and the pool creation loop, and 1,000 pools never got created."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudpilot_devtools.kube_emulator",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline():
            raise RuntimeError("the Kubernetes emulator process did not start")
        yield kubeconfig
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@functools.cache
def _official_client(kubeconfig: str) -> Any:
    import kubernetes

    return kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]  # unannotated in kubernetes


def _official(api: str) -> Any:
    """The benchmark plays kubectl with the official client (a test dependency; the
    operator it measures has its own), against the ``KUBECONFIG`` it points at."""
    import kubernetes

    return getattr(kubernetes.client, api)(_official_client(os.environ["KUBECONFIG"]))


def _create_pools(cloud: Cloud, pools: int) -> dict[str, int]:
    import kubernetes

    core = _official("CoreV1Api")
    custom = _official("CustomObjectsApi")
    with contextlib.suppress(kubernetes.client.ApiException):
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE))
        )
    key, secret = cloud.ec2.credentials
    for name, data in (
        ("ec2-credentials", {"key": key, "secret": secret}),
        ("pilot", {"pilot.sh": PILOT}),
    ):
        with contextlib.suppress(kubernetes.client.ApiException):
            core.create_namespaced_secret(
                NAMESPACE,
                # data, not stringData: the emulator stores what it is given (no API
                # server conversion), and the operator reads .data.
                kubernetes.client.V1Secret(
                    metadata=kubernetes.client.V1ObjectMeta(name=name),
                    data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
                ),
            )
    wanted = {}
    if pools >= 1000:  # the Python client's default pool of 4 connections is the limit
        return _create_pools_concurrently(custom, cloud, pools)
    for i in range(pools):
        name = f"pool-{i:04d}"
        wanted[name] = _replicas(i, pools)
        custom.create_namespaced_custom_object(
            constants.API_GROUP,
            constants.API_VERSION,
            NAMESPACE,
            constants.PLURAL,
            {
                "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
                "kind": constants.KIND,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": pool_spec(cloud, wanted[name]),
            },
        )
    return wanted


def _create_pools_concurrently(custom: Any, cloud: Cloud, pools: int) -> dict[str, int]:
    from concurrent.futures import ThreadPoolExecutor

    wanted = {f"pool-{i:05d}": _replicas(i, pools) for i in range(pools)}

    def create(name: str) -> None:
        custom.create_namespaced_custom_object(
            constants.API_GROUP,
            constants.API_VERSION,
            NAMESPACE,
            constants.PLURAL,
            {
                "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
                "kind": constants.KIND,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": pool_spec(cloud, wanted[name]),
            },
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, wanted))
    return wanted


def _all_reconciled(wanted: dict[str, int]) -> bool:
    listing = _official("CustomObjectsApi").list_namespaced_custom_object(
        constants.API_GROUP, constants.API_VERSION, NAMESPACE, constants.PLURAL
    )
    done = 0
    for item in listing["items"]:
        status = item.get("status") or {}
        if status.get("replicas") == wanted.get(item["metadata"]["name"]) and status.get(
            "observedGeneration"
        ):
            done += 1
    return done == len(wanted)


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited ({proc.returncode}) while waiting: {what}")
        if predicate():
            return time.monotonic() - started
        time.sleep(5.0)  # polling period of a bounded wait (a list of every pool)
    raise TimeoutError(f"not within {timeout:g} s: {what}")


def _measure(
    phase: str,
    cloud: Cloud,
    proc: subprocess.Popen[bytes],
    wanted: dict[str, int],
    *,
    interval: float,
    window_cycles: int,
    timeout: float,
) -> OperatorResult:
    converge = _wait(lambda: _all_reconciled(wanted), timeout, "every pool reconciled", proc)
    time.sleep(interval)  # let the last converging pools settle into their quiet interval
    cloud.proxy.reset_counts()
    time.sleep(interval * window_cycles)  # the measurement window itself
    counts = cloud.counts()
    rss, peak = _rss_mb(proc.pid)
    listings = counts.pop("DescribeInstances", 0)
    return OperatorResult(
        phase=phase,
        pools=len(wanted),
        pilots=sum(wanted.values()),
        rss_mb=rss,
        peak_rss_mb=peak,
        converge_seconds=round(converge, 1),
        interval=interval,
        window_cycles=window_cycles,
        describe_instances_per_cycle=round(listings / window_cycles, 2),
        other_calls=counts,
    )


def operator_at_scale(
    cloud: Cloud, pools: int, *, interval: float, window_cycles: int, timeout: float = 600.0
) -> tuple[float, list[OperatorResult], Path]:
    """Returns (idle RSS in MiB with no pool, results per phase, the operator's log)."""
    cloud.fresh(0.0)
    workdir = Path(tempfile.mkdtemp(prefix="cloudpilot-bench-"))
    log = workdir / "operator.log"
    results: list[OperatorResult] = []
    with (
        _emulator_process(workdir / "kubeconfig") as kubeconfig,
        kube_client.using_kubeconfig(kubeconfig),
    ):
        with _operator(kubeconfig, interval, log) as proc:
            time.sleep(5.0)  # start-up: imports, login, first (empty) list
            idle_rss, _ = _rss_mb(proc.pid)
            wanted = _create_pools(cloud, pools)
            results.append(
                _measure(
                    "pools created while running",
                    cloud,
                    proc,
                    wanted,
                    interval=interval,
                    window_cycles=window_cycles,
                    timeout=timeout,
                )
            )
        with _operator(kubeconfig, interval, log) as proc:
            results.append(
                _measure(
                    "operator restarted with the pools in place",
                    cloud,
                    proc,
                    wanted,
                    interval=interval,
                    window_cycles=window_cycles,
                    timeout=timeout,
                )
            )
    return idle_rss, results, log
