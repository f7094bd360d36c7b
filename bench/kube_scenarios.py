"""Scenarios on a REAL kube-apiserver + etcd (tests/support/apiserver.py) with the operator in
a subprocess: ``kubectl scale`` to ``RunInstances`` on the wire, and many pools.

* **scale-to-wire**: a pool of 1 is scaled up by one, ``runs`` times, through the scale
  subresource (what ``kubectl scale`` sends). For each run: the wall-clock time just before
  the patch, and the arrival at the latency proxy of the ``RunInstances`` it caused (the
  proxy's request log, stamped before its injected latency). The difference is what the
  operator adds (watch delivery, scheduling, the decision, any round trip it waits for).
* **manypools**: ``pools`` pools on one account (one in ten with a pilot) created while the
  operator runs; once all have a status for their spec: the operator's RSS, the
  ``DescribeInstances`` per interval, and the pools whose object changed (status writes)
  over a window of intervals.
* **restart**: ``pools`` pools created with *no* operator running, then the operator
  started, and once settled started again: for each start the time until every pool was
  reconciled, the peak RSS (``VmHWM``), the settled RSS, listings and pools written, and a
  memory timeline (``bench.memory_probe``) to see what the peak was made of.

All need the kube-apiserver binary (``~/.cache/cloudpilot-e2e/bin``) and etcd. The kmock
emulator is not used: it slows down past a few hundred objects (bench/operator_scale.py).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import NAMESPACE, Cloud, pool_spec
from bench.operator_scale import _create_pools, _official, _operator, _rss_mb
from cloudpilot import constants
from cloudpilot.kube import client as kube_client

OPERATOR_TREE = os.environ.get("BENCH_OPERATOR_TREE")
"""Another checkout's ``operator/`` for the operator subprocess (a before/after run)."""


@contextlib.contextmanager
def real_api_server() -> Iterator[Path]:
    """A fresh kube-apiserver + etcd with the CRD and the bench namespace; its kubeconfig."""
    # The test suite's helpers, outside this package's typed files (mypy checks bench/).
    apiserver: Any = importlib.import_module("tests.support.apiserver")
    cluster: Any = importlib.import_module("tests.support.cluster")
    kubernetes: Any = importlib.import_module("kubernetes")

    with apiserver.ControlPlane() as plane, kube_client.using_kubeconfig(plane.admin):
        client = kubernetes.config.new_client_from_config(config_file=str(plane.admin))
        try:
            cluster.install_crd(client)
            cluster.create_namespace(client, NAMESPACE)
        finally:
            client.close()
        yield plane.admin


_CLIENTS: dict[str, Any] = {}


def _custom() -> Any:
    """The official client's CustomObjectsApi for the current ``KUBECONFIG``, made once (a
    new client per call would put its set-up between the clock and the patch)."""
    path = os.environ["KUBECONFIG"]
    if path not in _CLIENTS:
        _CLIENTS[path] = _official("CustomObjectsApi")
    return _CLIENTS[path]


def _pool(name: str) -> dict[str, Any]:
    return dict(
        _custom().get_namespaced_custom_object(
            constants.API_GROUP, constants.API_VERSION, NAMESPACE, constants.PLURAL, name
        )
    )


def _wait(predicate: Any, timeout: float, what: str, poll: float = 0.02) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(poll)  # polling period of a bounded wait
    raise TimeoutError(f"not within {timeout:g} s: {what}")


# -- kubectl scale -> RunInstances on the wire ------------------------------------------------


@dataclass
class ScaleToWire:
    latency_ms: int
    runs: int
    seconds: list[float] = field(default_factory=list)
    early: bool | None = None

    def ms(self, q: float) -> float:
        ordered = sorted(self.seconds)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return round(ordered[index] * 1000, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "runs": self.runs,
            "median_ms": round(statistics.median(self.seconds) * 1000, 1),
            "p95_ms": self.ms(0.95),
            "max_ms": self.ms(1.0),
            "min_ms": self.ms(0.0),
            "each_ms": [round(s * 1000, 1) for s in self.seconds],
            "operator_tree": OPERATOR_TREE or "this checkout",
        }


def scale_to_wire(cloud: Cloud, *, runs: int = 20, latency: float = 0.1) -> ScaleToWire:
    cloud.fresh(latency)
    result = ScaleToWire(round(latency * 1000), runs)
    log = Path(tempfile.mkdtemp(prefix="cloudpilot-bench-")) / "operator-scale.log"
    with real_api_server() as kubeconfig:
        _create_pools(cloud, 0)  # the Secrets
        _custom().create_namespaced_custom_object(
            constants.API_GROUP,
            constants.API_VERSION,
            NAMESPACE,
            constants.PLURAL,
            {
                "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
                "kind": constants.KIND,
                "metadata": {"name": "scaled", "namespace": NAMESPACE},
                "spec": pool_spec(cloud, 1),
            },
        )
        with _operator(kubeconfig, 15.0, log, tree=OPERATOR_TREE):
            for replicas in range(1, runs + 1):
                _settled(replicas, cloud)
                sent = time.time()
                _custom().patch_namespaced_custom_object_scale(
                    constants.API_GROUP,
                    constants.API_VERSION,
                    NAMESPACE,
                    constants.PLURAL,
                    "scaled",
                    {"spec": {"replicas": replicas + 1}},
                )

                def arrived(sent: float = sent) -> float | None:
                    for at, action in cloud.proxy.request_log:
                        if action == "RunInstances" and at >= sent:
                            return at
                    return None

                _wait(lambda: arrived() is not None, 60, "RunInstances after the patch")
                at = arrived()
                assert at is not None
                result.seconds.append(at - sent)
            _settled(runs + 1, cloud)
    return result


def _settled(replicas: int, cloud: Cloud) -> None:
    """The pool shows ``replicas`` for its spec and a quiet cycle has listed them."""

    def done() -> bool:
        pool = _pool("scaled")
        status = pool.get("status") or {}
        return (
            status.get("replicas") == replicas
            and status.get("observedGeneration") == pool["metadata"]["generation"]
            and not any(i.get("phase") == "Starting" for i in status.get("instances", []))
        )

    _wait(done, 120, f"pool at {replicas}", poll=0.1)


# -- many pools on one account ------------------------------------------------------------------


@dataclass
class ManyPools:
    pools: int
    pilots: int
    idle_rss_mb: float
    create_seconds: float
    converge_seconds: float
    rss_mb: float
    peak_rss_mb: float
    interval: float
    window_cycles: int
    describe_instances_per_cycle: float
    pools_written_per_cycle: float
    other_calls: dict[str, int]


def _resource_versions() -> dict[str, str]:
    listing = _custom().list_namespaced_custom_object(
        constants.API_GROUP, constants.API_VERSION, NAMESPACE, constants.PLURAL
    )
    return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in listing["items"]}


def _reconciled(wanted: dict[str, int]) -> int:
    listing = _custom().list_namespaced_custom_object(
        constants.API_GROUP, constants.API_VERSION, NAMESPACE, constants.PLURAL
    )
    done = 0
    for item in listing["items"]:
        status = item.get("status") or {}
        if status.get("replicas") == wanted.get(item["metadata"]["name"]) and status.get(
            "observedGeneration"
        ) == item["metadata"].get("generation"):
            done += 1
    return done


def many_pools(
    cloud: Cloud, pools: int, *, interval: float = 60.0, window_cycles: int = 2
) -> ManyPools:
    cloud.fresh(0.0)
    log = Path(tempfile.mkdtemp(prefix="cloudpilot-bench-")) / "operator-many.log"
    with (
        real_api_server() as kubeconfig,
        _operator(kubeconfig, interval, log, tree=OPERATOR_TREE) as proc,
    ):
        _wait(lambda: _rss_mb(proc.pid)[0] > 0, 30, "operator started", poll=0.5)
        time.sleep(5.0)  # start-up: imports, preload, login, the first (empty) watch
        idle, _ = _rss_mb(proc.pid)
        started = time.monotonic()
        wanted = _create_pools(cloud, pools)
        created = time.monotonic() - started
        _wait(
            lambda: _reconciled(wanted) == len(wanted),
            max(600.0, pools * 0.2),
            "every pool reconciled",
            poll=10.0,
        )
        converged = time.monotonic() - started
        time.sleep(interval)  # let the converging pools settle into their quiet interval
        cloud.proxy.reset_counts()
        before = _resource_versions()
        time.sleep(interval * window_cycles)  # the measurement window
        after = _resource_versions()
        counts = cloud.counts()
        rss, peak = _rss_mb(proc.pid)
    written = sum(1 for name, rv in after.items() if before.get(name) != rv)
    return ManyPools(
        pools=pools,
        pilots=sum(wanted.values()),
        idle_rss_mb=idle,
        create_seconds=round(created, 1),
        converge_seconds=round(converged, 1),
        rss_mb=rss,
        peak_rss_mb=peak,
        interval=interval,
        window_cycles=window_cycles,
        describe_instances_per_cycle=round(counts.pop("DescribeInstances", 0) / window_cycles, 2),
        pools_written_per_cycle=round(written / window_cycles, 1),
        other_calls=counts,
    )


# -- the operator (re)started with many pools in place -----------------------------------------


@dataclass
class StartPhase:
    """One start of the operator against pools that exist already."""

    phase: str
    reconciled_seconds: float
    """From the operator's start until every pool was reconciled once by it."""
    peak_rss_mb: float
    rss_mb: float
    """An interval after every pool was reconciled (at least one heap trim later)."""
    listings: int
    """``DescribeInstances`` from the start until ``rss_mb`` was read."""
    pools_written: int
    """Pools whose object changed over the same span (status writes, finalizers)."""
    other_calls: dict[str, int]
    timeline: str
    """``bench.memory_probe``'s samples of this start (JSON lines)."""


@dataclass
class Restart:
    pools: int
    pilots: int
    create_seconds: float
    interval: float
    phases: list[StartPhase]


def _reconciles(port: int) -> float:
    """Reconciles the operator has finished, from its metrics (0 before it serves them)."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{port}/metrics?name[]=cloudpilot_reconcile_duration_seconds_count"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0
    for line in text.splitlines():
        if line.startswith("cloudpilot_reconcile_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(
    phase: str, kubeconfig: Path, cloud: Cloud, wanted: dict[str, int], interval: float
) -> StartPhase:
    """Start the operator against ``wanted``'s pools; wait until each was reconciled."""
    workdir = Path(tempfile.mkdtemp(prefix="cloudpilot-bench-"))
    timeline = workdir / "timeline.jsonl"
    port = _free_port()
    before = _resource_versions()
    cloud.proxy.reset_counts()
    with _operator(
        kubeconfig,
        interval,
        workdir / "operator.log",
        tree=OPERATOR_TREE,
        extra_env={"CLOUDPILOT_METRICS_PORT": str(port)},
        timeline=timeline,
    ) as proc:
        # Every pool is due at once when the operator starts (each is new to it), so the
        # first len(wanted) reconciles are one per pool; the status check covers a first
        # start, where a pool's first reconcile may leave it converging.
        took = _wait(
            lambda: _reconciles(port) >= len(wanted) and _reconciled(wanted) == len(wanted),
            max(600.0, len(wanted) * 0.2),
            f"{phase}: every pool reconciled",
            poll=5.0,
        )
        time.sleep(interval)  # settled: a quiet interval (and at least one heap trim) later
        rss, peak = _rss_mb(proc.pid)
        counts = cloud.counts()
    after = _resource_versions()
    return StartPhase(
        phase=phase,
        reconciled_seconds=round(took, 1),
        peak_rss_mb=peak,
        rss_mb=rss,
        listings=counts.pop("DescribeInstances", 0),
        pools_written=sum(1 for name, rv in after.items() if before.get(name) != rv),
        other_calls=counts,
        timeline=str(timeline),
    )


def restart(cloud: Cloud, pools: int, *, interval: float = 60.0) -> Restart:
    """``pools`` pools created with no operator running; then the operator started (every
    pool new to it, one in ten to scale up) and, once settled, started again (every pool
    converged: what a rolling upgrade or an evicted pod does). Each start's peak RSS
    (``VmHWM``) is its own process's."""
    cloud.fresh(0.0)
    with real_api_server() as kubeconfig:
        started = time.monotonic()
        wanted = _create_pools(cloud, pools)
        created = time.monotonic() - started
        phases = [
            _start("first start", kubeconfig, cloud, wanted, interval),
            _start("restart", kubeconfig, cloud, wanted, interval),
        ]
    return Restart(
        pools=pools,
        pilots=sum(wanted.values()),
        create_seconds=round(created, 1),
        interval=interval,
        phases=phases,
    )
