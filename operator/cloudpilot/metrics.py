"""Prometheus metrics of the operator: what a site admin graphs and alerts on.

Why a **private** registry: ``prometheus_client``'s global registry also collects the
process and platform collectors and anything an imported library registers; a private one
exposes exactly the series documented here (and tests can make a fresh one each, with no
state leaking between them).

Why plain functions over plain data: the reconciler and the kopf handlers call these with
what they already have (an operation name, seconds, a classified error, queue summaries or
the ``status.queues`` dicts) and never import ``prometheus_client`` themselves. Every
function is cheap, thread-safe and never raises on odd input: metrics must not take a
reconcile down.

Label cardinality stays bounded: labels are the pool's namespace and name, queue names,
phases, operations and reasons, all bounded by what users declare or by enums; VM ids and
names, messages and error texts are never labels. A label that is not from a known set is
additionally capped (:data:`MAX_LABEL_VALUES` distinct values per label, then ``Other``),
so a bug upstream cannot grow the series without bound; a deleted pool's series are removed
by :func:`forget_pool`.

Series (all prefixed ``cloudpilot_``):

=====================================  ========  ==========================================
name                                   type      labels
=====================================  ========  ==========================================
pilots                                 gauge     namespace, pool, queue, phase
pilots_desired                         gauge     namespace, pool, queue
queue_backoff                          gauge     namespace, pool, queue (1 while backing off)
queues_in_backoff                      gauge     namespace, pool
pool_condition                         gauge     namespace, pool, type (1 while True)
proxy_expiry_timestamp_seconds         gauge     namespace, pool (the first-expiring proxy)
vms_created_total                      counter   namespace, pool, queue
vms_deleted_total                      counter   namespace, pool, queue, reason
vm_failures_total                      counter   namespace, pool, queue, operation, reason
cloud_api_calls_total                  counter   operation
cloud_api_errors_total                 counter   operation, reason
cloud_api_call_duration_seconds        histo     operation
reconcile_duration_seconds             histo     (none: operator-wide)
reconcile_errors_total                 counter   namespace, pool
leader                                 gauge     (1 while this replica leads)
build_info                             gauge     version
=====================================  ========  ==========================================
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NamedTuple
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "MAX_LABEL_VALUES",
    "PHASES",
    "MetricsServer",
    "OperatorMetrics",
    "count_vm_failures",
    "count_vms_created",
    "count_vms_deleted",
    "default",
    "forget_pool",
    "observe_cloud_call",
    "observe_reconcile",
    "render",
    "set_leader",
    "set_pool_conditions",
    "set_pool_phases",
    "set_pool_status",
    "start_metrics_server",
]

logger = logging.getLogger(__name__)

PREFIX: Final = "cloudpilot"
PHASES: Final = ("Starting", "Running", "Done", "Failed", "Unknown")
"""The pilot phases of the API; every queue reports all five (zeros included), so that
``sum by (phase)`` never has gaps and a phase dropping to zero is visible."""

MAX_LABEL_VALUES: Final = 64
"""Distinct values one free-form label (operation, reason, queue per pool) may take before
new values are folded into ``Other``: a safety net, far above what enums produce."""

OTHER: Final = "Other"

CLOUD_LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Cloud API latency: tens of milliseconds for a cached list, a minute or two for a large
batched create on a slow OpenStack; beyond that the call has timed out anyway."""

RECONCILE_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""A quiet reconcile is one list call (sub-second); a scale-up of hundreds of VMs runs
for minutes."""


def _pool_labels(pool_key: str) -> tuple[str, str]:
    """``namespace/name`` → (namespace, name); a key without a slash is a bare name."""
    namespace, _, name = pool_key.rpartition("/")
    return namespace, name


def _get(item: Any, name: str, default: Any = None) -> Any:
    """Read a field from a dataclass-like object or a mapping (``status.queues`` entries and
    ``planner.QueueSummary`` use the same names)."""
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def _text(value: Any) -> str:
    """Enum members and plain strings alike (``ErrorKind.QUOTA`` → ``QuotaExceeded``)."""
    raw = getattr(value, "value", value)
    return str(raw) if raw not in (None, "") else "Unknown"


class _Bounded:
    """Caps the distinct values of one label; past the cap, new values become ``Other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> str:
        text = _text(value)[:63]
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(text)
            return text


@dataclass
class MetricsServer:
    """The running HTTP endpoint; :meth:`stop` shuts it down and frees the port."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _epoch(value: Any) -> float | None:
    """An RFC 3339 time (``2026-01-02T03:04:05Z``) or an aware ``datetime`` as Unix seconds."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.timestamp()
    return None


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


CONDITION_TYPES: Final = ("Ready", "Reconciling", "Stalled")


class QueueGauges(NamedTuple):
    """One queue's gauges: pilots by phase (in ``PHASES`` order), desired, in back-off."""

    phases: tuple[int, ...]
    desired: int
    backoff: int


class PoolGauges(Collector):
    """The per-pool gauges (pilots by phase, desired, back-off, conditions) as plain tuples,
    turned into metric families when Prometheus scrapes.

    Same names, labels and values as ``Gauge`` children would give, for a fraction of the
    memory: what a pool costs here is one small tuple per queue and one for its conditions.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, dict[str, QueueGauges]] = {}
        self._conditions: dict[str, tuple[int, ...]] = {}
        self._proxy_expiry: dict[str, float] = {}

    def set_queues(self, pool_key: str, queues: dict[str, QueueGauges]) -> None:
        with self._lock:
            self._queues[pool_key] = queues

    def set_conditions(self, pool_key: str, flags: tuple[int, ...]) -> None:
        with self._lock:
            self._conditions[pool_key] = flags

    def set_proxy_expiry(self, pool_key: str, expiry: float | None) -> None:
        with self._lock:
            if expiry is None:
                self._proxy_expiry.pop(pool_key, None)
            else:
                self._proxy_expiry[pool_key] = expiry

    def forget(self, pool_key: str) -> None:
        with self._lock:
            self._queues.pop(pool_key, None)
            self._conditions.pop(pool_key, None)
            self._proxy_expiry.pop(pool_key, None)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            queues = dict(self._queues)
            conditions = dict(self._conditions)
            proxy_expiry = dict(self._proxy_expiry)
        return self._families(queues, conditions, proxy_expiry)

    @staticmethod
    def _families(
        queues: Mapping[str, Mapping[str, QueueGauges]] | None = None,
        conditions: Mapping[str, tuple[int, ...]] | None = None,
        proxy_expiry: Mapping[str, float] | None = None,
    ) -> list[Metric]:
        pool = ["namespace", "pool"]
        pilots = GaugeMetricFamily(
            f"{PREFIX}_pilots",
            "Pilot VMs by pool, queue and phase.",
            labels=[*pool, "queue", "phase"],
        )
        desired = GaugeMetricFamily(
            f"{PREFIX}_pilots_desired",
            "Desired live pilot VMs by pool and queue.",
            labels=[*pool, "queue"],
        )
        backoff = GaugeMetricFamily(
            f"{PREFIX}_queue_backoff",
            "1 while a queue's creations are held in back-off after failures, else 0.",
            labels=[*pool, "queue"],
        )
        in_backoff = GaugeMetricFamily(
            f"{PREFIX}_queues_in_backoff", "Queues of the pool held in back-off.", labels=pool
        )
        condition = GaugeMetricFamily(
            f"{PREFIX}_pool_condition",
            "1 while the pool's condition (Ready, Reconciling, Stalled) is True, else 0.",
            labels=[*pool, "type"],
        )
        expiry = GaugeMetricFamily(
            f"{PREFIX}_proxy_expiry_timestamp_seconds",
            "Unix time at which the pool's first-expiring pilot proxy expires.",
            labels=pool,
        )
        for key, by_queue in (queues or {}).items():
            namespace, name = _pool_labels(key)
            for queue, gauges in by_queue.items():
                for phase, count in zip(PHASES, gauges.phases, strict=True):
                    pilots.add_metric([namespace, name, queue, phase], count)
                desired.add_metric([namespace, name, queue], gauges.desired)
                backoff.add_metric([namespace, name, queue], gauges.backoff)
            in_backoff.add_metric([namespace, name], sum(g.backoff for g in by_queue.values()))
        for key, flags in (conditions or {}).items():
            namespace, name = _pool_labels(key)
            for kind, flag in zip(CONDITION_TYPES, flags, strict=True):
                condition.add_metric([namespace, name, kind], flag)
        for key, when in (proxy_expiry or {}).items():
            expiry.add_metric(list(_pool_labels(key)), when)
        return [pilots, desired, backoff, in_backoff, condition, expiry]


class OperatorMetrics:
    """All of CloudPilot's series on one private registry.

    The module-level functions use :func:`default`; tests make their own instance.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, version: str = "") -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        pool = ["namespace", "pool"]
        # Per-pool gauges are plain numbers turned into series at scrape time: a
        # prometheus_client child per series costs ~1 KB, 11 series a pool, 11 MiB at
        # 1,000 pools (docs/performance.md).
        self.pool_gauges = PoolGauges()
        r.register(self.pool_gauges)
        self.vms_created = Counter(
            f"{PREFIX}_vms_created",
            "VMs created.",
            [*pool, "queue"],
            registry=r,
        )
        self.vms_deleted = Counter(
            f"{PREFIX}_vms_deleted",
            "VMs deleted, by reason (PilotDone, ScaleDown, ...).",
            [*pool, "queue", "reason"],
            registry=r,
        )
        self.vm_failures = Counter(
            f"{PREFIX}_vm_failures",
            "VM creations or deletions that failed, by operation and error class.",
            [*pool, "queue", "operation", "reason"],
            registry=r,
        )
        self.cloud_calls = Counter(
            f"{PREFIX}_cloud_api_calls",
            "Cloud API calls, by operation.",
            ["operation"],
            registry=r,
        )
        self.cloud_errors = Counter(
            f"{PREFIX}_cloud_api_errors",
            "Cloud API calls that failed, by error class.",
            ["operation", "reason"],
            registry=r,
        )
        self.cloud_latency = Histogram(
            f"{PREFIX}_cloud_api_call_duration_seconds",
            "Cloud API call latency.",
            ["operation"],
            buckets=CLOUD_LATENCY_BUCKETS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            # Operator-wide: a histogram per pool is ~15 series each, 15,000 at 1,000 pools,
            # a cardinality problem for Prometheus and ~14 KB of operator memory per pool.
            # Per-pool trouble shows in reconcile_errors and the pool's conditions.
            "Duration of one reconcile of one pool (all pools together).",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors",
            "Reconciles that ended with an unexpected exception.",
            pool,
            registry=r,
        )
        # The closed loop (cloudpilot.outcomes): what ended VMs cost, by how they ended.
        self.vm_seconds = Counter(
            f"{PREFIX}_vm_seconds",
            "VM-seconds of ended pilot VMs, by outcome (worked, fizzled, failed, reclaimed).",
            [*pool, "queue", "outcome"],
            registry=r,
        )
        self.queue_efficiency = Gauge(
            f"{PREFIX}_queue_efficiency",
            "Worked VM-seconds over all VM-seconds of the queue's recently ended pilots.",
            [*pool, "queue"],
            registry=r,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica holds the leader lease, else 0.",
            registry=r,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the version is a label.",
            ["version"],
            registry=r,
        )
        self.build_info.labels(version or _package_version()).set(1)

        self._operation = _Bounded()
        self._reason = _Bounded()
        self._queues: defaultdict[str, _Bounded] = defaultdict(_Bounded)
        self._lock = threading.Lock()
        # Label tuples written per pool key, so forget_pool removes exactly those.
        self._series: defaultdict[str, set[tuple[Any, tuple[str, ...]]]] = defaultdict(set)

    # -- bookkeeping --------------------------------------------------------------------------

    def _child(self, pool_key: str, metric: Any, *labels: str) -> Any:
        with self._lock:
            self._series[pool_key].add((metric, labels))
        return metric.labels(*labels)

    def _queue(self, pool_key: str, queue: Any) -> str:
        return self._queues[pool_key](queue)

    # -- cloud calls (the reconciler's ``on_cloud_call`` hook) -----------------------------------

    def observe_cloud_call(self, operation: str, seconds: float, error: Any = None) -> None:
        """One cloud API call: ``error`` is a ``memory.CloudError`` (its ``kind`` is the
        reason), an error-class string, or ``None`` for success."""
        op = self._operation(operation)
        self.cloud_calls.labels(op).inc()
        self.cloud_latency.labels(op).observe(max(float(seconds), 0.0))
        if error is not None:
            self.cloud_errors.labels(op, self._reason(_get(error, "kind", error))).inc()

    # -- reconcile -----------------------------------------------------------------------------

    def observe_reconcile(self, pool_key: str, seconds: float, *, failed: bool = False) -> None:
        namespace, name = _pool_labels(pool_key)
        self.reconcile_duration.observe(max(float(seconds), 0.0))
        if failed:
            self._child(pool_key, self.reconcile_errors, namespace, name).inc()

    # -- pool state (gauges: set to the current picture each cycle) -------------------------------

    def set_pool_phases(self, pool_key: str, queue_summaries: Iterable[Any]) -> None:
        """Publish the pool's current pilots by queue and phase, desired counts and back-off.

        ``queue_summaries`` are ``planner.QueueSummary`` objects or the ``status.queues``
        dicts (same field names: ``name``, ``desired``, ``starting`` ... ``held``). Queues
        absent from this call (removed from the spec and drained) lose their series.
        """
        queues: dict[str, QueueGauges] = {}
        for summary in queue_summaries:
            queue = self._queue(pool_key, _get(summary, "name"))
            counts = tuple(_count(_get(summary, phase.lower(), 0)) for phase in PHASES)
            backing_off = _text(_get(summary, "held")) == "BackOff"
            queues[queue] = QueueGauges(
                counts, _count(_get(summary, "desired", 0)), int(backing_off)
            )
        self.pool_gauges.set_queues(pool_key, queues)

    def set_pool_conditions(self, pool_key: str, conditions: Iterable[Any]) -> None:
        """Publish ``status.conditions`` (dicts or ``status.Condition`` objects).

        Ready, Reconciling and Stalled are always all three published (0 when absent), since
        kstatus drops Reconciling and Stalled while false.
        """
        true = {_text(_get(c, "type")) for c in conditions if _text(_get(c, "status")) == "True"}
        self.pool_gauges.set_conditions(
            pool_key, tuple(int(kind in true) for kind in CONDITION_TYPES)
        )

    def set_pool_status(self, pool_key: str, status: Mapping[str, Any]) -> None:
        """All of the above from a pool's whole ``status`` (as written to Kubernetes):
        ``status.queues``, ``status.conditions`` (missing sections are left as they are) and
        ``status.proxy.notAfter``.

        The proxy is the exception: status drops ``proxy`` when the pool no longer has one,
        so a missing (or unparsable) ``notAfter`` removes the series rather than leaving a
        stale expiry that would keep an alert firing.
        """
        if status.get("queues") is not None:
            self.set_pool_phases(pool_key, status["queues"])
        if status.get("conditions") is not None:
            self.set_pool_conditions(pool_key, status["conditions"])
        self.set_proxy_expiry(pool_key, _get(status.get("proxy") or {}, "notAfter"))

    def set_proxy_expiry(self, pool_key: str, not_after: Any) -> None:
        """Publish when the pool's pilot proxy expires (``status.proxy.notAfter``, an RFC 3339
        time or a ``datetime``); ``None`` or anything unparsable removes the series.

        A timestamp rather than seconds left: it does not need updating between reconciles,
        and ``cloudpilot_proxy_expiry_timestamp_seconds - time()`` gives the seconds left.
        """
        self.pool_gauges.set_proxy_expiry(pool_key, _epoch(not_after))

    # -- VM events (counters) ----------------------------------------------------------------------

    def count_vms_created(self, pool_key: str, queue: str, count: int = 1) -> None:
        if count > 0:
            namespace, name = _pool_labels(pool_key)
            self._child(
                pool_key, self.vms_created, namespace, name, self._queue(pool_key, queue)
            ).inc(count)

    def count_vms_deleted(self, pool_key: str, queue: str, reason: Any, count: int = 1) -> None:
        """``reason`` is a ``planner.DeleteReason`` (or its value)."""
        if count > 0:
            namespace, name = _pool_labels(pool_key)
            self._child(
                pool_key,
                self.vms_deleted,
                namespace,
                name,
                self._queue(pool_key, queue),
                self._reason(reason),
            ).inc(count)

    def count_vm_seconds(self, pool_key: str, queue: str, outcome: str, seconds: float) -> None:
        """An ended VM's lifetime, counted under how it ended (cloudpilot.outcomes)."""
        namespace, name = _pool_labels(pool_key)
        self._child(
            pool_key,
            self.vm_seconds,
            namespace,
            name,
            self._queue(pool_key, queue),
            self._reason(outcome),
        ).inc(max(seconds, 0.0))

    def set_queue_efficiency(self, pool_key: str, queue: str, efficiency: float | None) -> None:
        """The queue's efficiency; None (no ended pilot in the window) removes the series."""
        namespace, name = _pool_labels(pool_key)
        labels = (namespace, name, self._queue(pool_key, queue))
        if efficiency is None:
            with contextlib.suppress(KeyError):
                self.queue_efficiency.remove(*labels)
            return
        self._child(pool_key, self.queue_efficiency, *labels).set(efficiency)

    def count_vm_failures(
        self, pool_key: str, queue: str, operation: str, reason: Any, count: int = 1
    ) -> None:
        """A failed create or destroy; ``reason`` is an ``ErrorKind``, a ``CloudError`` or a
        string."""
        if count > 0:
            namespace, name = _pool_labels(pool_key)
            self._child(
                pool_key,
                self.vm_failures,
                namespace,
                name,
                self._queue(pool_key, queue),
                self._operation(operation),
                self._reason(_get(reason, "kind", reason)),
            ).inc(count)

    # -- lifecycle ---------------------------------------------------------------------------------

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def forget_pool(self, pool_key: str) -> None:
        """Remove every series of a deleted pool (its counters included)."""
        with self._lock:
            series = self._series.pop(pool_key, set())
            self._queues.pop(pool_key, None)
        for metric, labels in series:
            metric.remove(*labels)
        self.pool_gauges.forget(pool_key)

    # -- exposition --------------------------------------------------------------------------------

    def render(self) -> str:
        """The text exposition, as Prometheus would scrape it."""
        return generate_latest(self.registry).decode()

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve ``/metrics`` (any path, in fact) on ``host:port`` from a daemon thread.

        Port 0 picks a free port (see :attr:`MetricsServer.port`). In a pod it listens on
        all addresses so the Service can reach it; tests pass ``127.0.0.1``.
        """
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        logger.info("serving metrics on %s:%d", host, server.server_port)
        return MetricsServer(server, thread)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("cloudpilot")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


_default: OperatorMetrics | None = None
_default_lock = threading.Lock()


def default() -> OperatorMetrics:
    """The process's metrics, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OperatorMetrics()
        return _default


def start_metrics_server(port: int, host: str = "0.0.0.0") -> MetricsServer:
    return default().serve(port, host)


def observe_cloud_call(operation: str, seconds: float, error: Any = None) -> None:
    default().observe_cloud_call(operation, seconds, error)


def observe_reconcile(pool_key: str, seconds: float, *, failed: bool = False) -> None:
    default().observe_reconcile(pool_key, seconds, failed=failed)


def set_pool_phases(pool_key: str, queue_summaries: Iterable[Any]) -> None:
    default().set_pool_phases(pool_key, queue_summaries)


def set_pool_conditions(pool_key: str, conditions: Iterable[Any]) -> None:
    default().set_pool_conditions(pool_key, conditions)


def set_pool_status(pool_key: str, status: Mapping[str, Any]) -> None:
    default().set_pool_status(pool_key, status)


def count_vms_created(pool_key: str, queue: str, count: int = 1) -> None:
    default().count_vms_created(pool_key, queue, count)


def count_vms_deleted(pool_key: str, queue: str, reason: Any, count: int = 1) -> None:
    default().count_vms_deleted(pool_key, queue, reason, count)


def count_vm_failures(
    pool_key: str, queue: str, operation: str, reason: Any, count: int = 1
) -> None:
    default().count_vm_failures(pool_key, queue, operation, reason, count)


def count_vm_seconds(pool_key: str, queue: str, outcome: str, seconds: float) -> None:
    default().count_vm_seconds(pool_key, queue, outcome, seconds)


def set_queue_efficiency(pool_key: str, queue: str, efficiency: float | None) -> None:
    default().set_queue_efficiency(pool_key, queue, efficiency)


def set_leader(leading: bool) -> None:
    default().set_leader(leading)


def forget_pool(pool_key: str) -> None:
    default().forget_pool(pool_key)


def render() -> str:
    return default().render()
