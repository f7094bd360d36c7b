"""kopf handlers: a table of contents from ``kubectl apply`` to VMs and back to status.

* a **daemon** per pool runs the reconcile loop: reconcile, write status if it changed,
  post events, sleep until the next reconcile is due (a minute when quiet, seconds while
  converging or backing off), wake early on a spec change or when stopped;
* a spec **update** (including ``kubectl scale``) wakes the pool's daemon at once;
* a **delete** handler (it makes kopf hold the pool's finalizer) destroys the pool's VMs,
  or leaves them with ``deletionPolicy: Orphan``, and keeps the pool until they are gone.

Logic lives in :class:`cloudpilot.reconciler.Reconciler`; these functions only adapt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from typing import Any

import kopf

from cloudpilot import constants, metrics
from cloudpilot.kube.status import patch_status
from cloudpilot.models.queues import ConfigError
from cloudpilot.reconciler import Event, PoolRef, Reconciler

logger = logging.getLogger(__name__)
RESOURCE = (constants.API_GROUP, constants.API_VERSION, constants.PLURAL)
TEARDOWN_RETRY = 5.0


def _ref(body: kopf.Body) -> PoolRef:
    meta = body.get("metadata", {})
    return PoolRef(namespace=meta["namespace"], name=meta["name"], uid=meta.get("uid", ""))


def _post(body: kopf.Body, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf's bookkeeping goes to ``cloudpilot.io`` annotations; status stays ours."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=constants.ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=constants.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = constants.FINALIZER
    settings.posting.level = logging.WARNING  # log lines are not events; ours are explicit
    settings.watching.server_timeout = 300
    # Namespaced installs may withhold cluster-wide list rights: no namespace discovery then.
    settings.scanning.disabled = os.environ.get("CLOUDPILOT_CLUSTER_DISCOVERY") == "false"


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    wakeups: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, then KUBECONFIG / ~/.kube/config."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)

    @kopf.daemon(
        *RESOURCE, registry=registry, cancellation_timeout=constants.DAEMON_CANCELLATION_TIMEOUT
    )
    async def reconcile_loop(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        pool = _ref(body)
        wakeup = wakeups[pool.uid]
        while not stopped:
            wakeup.clear()
            started = time.monotonic()
            try:
                outcome = await reconciler.reconcile(pool, body)
                await patch_status(pool.namespace, pool.name, outcome.status_patch)
                _post(body, outcome.events)
                delay = outcome.next_delay
                metrics.observe_reconcile(pool.key, time.monotonic() - started)
                metrics.set_pool_status(
                    pool.key, {**(body.get("status") or {}), **outcome.status_patch}
                )
            except Exception:
                # A bug or an API outage must not end the pool's loop for good.
                logger.exception("reconcile of %s failed; retrying", pool.key)
                metrics.observe_reconcile(pool.key, time.monotonic() - started, failed=True)
                delay = constants.DEFAULT_CONVERGING_INTERVAL
            await _sleep(delay, wakeup, stopped)
        wakeups.pop(pool.uid, None)

    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    def spec_changed(body: kopf.Body, **_: Any) -> None:
        pool = _ref(body)
        reconciler.mark_due(pool)
        wakeups[pool.uid].set()

    @kopf.on.delete(*RESOURCE, registry=registry)
    async def pool_deleted(body: kopf.Body, **_: Any) -> None:
        pool = _ref(body)
        try:
            remaining, events = await reconciler.finalize(pool, body)
        except ConfigError as exc:
            kopf.warn(body, reason="TeardownBlocked", message=str(exc))
            raise kopf.TemporaryError(str(exc), delay=60) from None
        _post(body, events)
        if not remaining:
            metrics.forget_pool(pool.key)
        if remaining:
            raise kopf.TemporaryError(
                f"waiting for {remaining} VM(s) of the pool to be destroyed",
                delay=TEARDOWN_RETRY,
            )


async def _sleep(delay: float, wakeup: asyncio.Event, stopped: kopf.DaemonStopped) -> None:
    """Sleep until the delay ends, the spec changes, or kopf stops the daemon."""

    async def halt() -> None:
        await stopped.wait()

    woken = asyncio.ensure_future(wakeup.wait())
    halted = asyncio.ensure_future(halt())
    try:
        await asyncio.wait({woken, halted}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        halted.cancel()
