"""Start the operator: kopf's registry with CloudPilot's handlers and one reconciler."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import kopf

from cloudpilot import redaction
from cloudpilot.kube import handlers
from cloudpilot.reconciler import Reconciler, ReconcilerSettings
from cloudpilot.settings import OperatorSettings


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
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
        )
    )


async def run_operator(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    reconciler: Reconciler | None = None,
) -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, reconciler or build_reconciler(settings))
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
