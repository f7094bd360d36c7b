"""Start the operator: kopf's registry with CloudPilot's handlers and one reconciler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from cloudpilot import leader, metrics, redaction, warmup
from cloudpilot.kube import client, handlers
from cloudpilot.kube.status import patch_status
from cloudpilot.reconciler import Reconciler, ReconcilerSettings
from cloudpilot.settings import OperatorSettings

#: What every LogRecord has: the JSON formatter emits anything else (``extra=``) as a key.
#: kopf's per-object extras: its settings object is not for a log line, and the object
#: reference becomes the ``namespace`` and ``pool`` keys.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "settings",
    "k8s_skip",
    "k8s_ref",
}

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``--log-format json``): the time in
    ISO 8601 UTC with a ``Z`` zone, and a record's ``extra=`` fields (the audit trail's
    namespace, pool, queue, vm_ids, reason) as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            entry.update(namespace=ref.get("namespace") or "", pool=ref["name"])
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                # Extra fields pass through redaction too: they are as public as the message.
                entry[key] = redaction.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO, log_format: str = "plain") -> None:
    """``log_format``: ``plain`` or ``json`` (anything else is a bug of the caller: the
    settings and the flags refuse other values before this is reached)."""
    if log_format not in ("plain", "json"):
        raise ValueError(f"unknown log format {log_format!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    redaction.install_log_filter()


def build_reconciler(settings: OperatorSettings) -> Reconciler:
    return Reconciler(
        ReconcilerSettings(
            interval=settings.reconcile_interval,
            converging_interval=settings.converging_interval,
            parallelism=settings.parallelism,
            batch_size=settings.batch_size,
            rate_limit=settings.rate_limit,
            rate_burst=settings.rate_burst,
            proxy_warn_margin=settings.proxy_warn_margin,
            max_creates_per_cycle=settings.max_creates_per_cycle,
            allowed_driver_classes=settings.allowed_driver_classes,
            unreachable_stall_after=settings.unreachable_stall_after,
            dirac_vanished_grace=settings.dirac_vanished_grace,
        ),
        on_cloud_call=metrics.observe_cloud_call,
        write_status=lambda pool, patch: patch_status(pool.namespace, pool.name, patch),
    )


async def run_operator_with_election(
    settings: OperatorSettings, *, stop_flag: asyncio.Event | None = None
) -> None:
    """``cloudpilot operator``: metrics, then the operator — under leader election when the
    chart enables it (more than one replica), so only the Lease holder ever acts. One
    Kubernetes client serves the Lease and every term's operator."""
    server = metrics.start_metrics_server(settings.metrics_port) if settings.metrics_port else None
    # Before the watch starts: the first pool must not pay for imports and compilation.
    warmup.preload(settings.allowed_driver_classes)
    election = settings.election
    try:
        async with client.KubeClient() as kube:
            if not election.enabled:
                await run_operator(settings, stop_flag=stop_flag, kube=kube)
                return
            await _run_elected(settings, kube, stop_flag)
    finally:
        if server is not None:
            server.stop()


async def _run_elected(
    settings: OperatorSettings, kube: client.KubeClient, stop_flag: asyncio.Event | None
) -> None:
    election = settings.election
    await leader.run_with_leader_election(
        lambda stop: run_operator(settings, stop_flag=stop, kube=kube),
        namespace=election.namespace,
        name=election.name,
        lease_seconds=election.lease_seconds,
        renew_deadline=election.renew_deadline,
        retry_period=election.retry_period,
        stop_flag=stop_flag,
        on_leadership=metrics.set_leader,
        standby_health_port=settings.health_port,
        handle_signals=True,
        api=leader.KubernetesLeaseAPI(kube),
    )


async def run_operator(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    reconciler: Reconciler | None = None,
    kube: client.KubeApi | None = None,
) -> None:
    """kopf with CloudPilot's handlers until ``stop_flag``; every request CloudPilot itself
    sends goes through ``kube`` (a client of its own if none is given, closed at the end)."""
    async with contextlib.AsyncExitStack() as owned:
        if kube is None:
            kube = await owned.enter_async_context(client.KubeClient())
        with client.using(kube):
            await _run_kopf(settings, stop_flag, ready_flag, reconciler)


async def _run_kopf(
    settings: OperatorSettings,
    stop_flag: asyncio.Event | None,
    ready_flag: asyncio.Event | None,
    reconciler: Reconciler | None,
) -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(
        registry,
        reconciler or build_reconciler(settings),
        concurrency=settings.max_concurrent_reconciles,
        cluster_discovery=settings.cluster_discovery,
    )
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=settings.all_namespaces and not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


class OperatorThread:
    """The operator in a thread with its own event loop: for the demo and the tests, which
    drive the emulators and assertions from the main thread."""

    def __init__(
        self,
        settings: OperatorSettings,
        *,
        reconciler_factory: Callable[[], Reconciler] | None = None,
    ) -> None:
        self.settings = settings
        self._factory = reconciler_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="cloudpilot-operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            waiter = asyncio.ensure_future(ready.wait())
            waiter.add_done_callback(lambda _: self._ready.set())
            reconciler = self._factory() if self._factory else None
            await run_operator(
                self.settings, stop_flag=self._stop, ready_flag=ready, reconciler=reconciler
            )

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the starting thread
            self.error = exc
        finally:
            self._ready.set()

    def __enter__(self) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout=60):
            raise TimeoutError("the operator did not become ready within 60 s")
        if self.error is not None:
            raise RuntimeError("the operator failed to start") from self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def __exit__(self, *exc: object) -> None:
        self.stop()
