"""kopf handlers: a table of contents from ``kubectl apply`` to VMs and back to status.

* every **watch event** of a pool updates CloudPilot's slim copy of it
  (:class:`~cloudpilot.pool_bodies.PoolBodies`); a new pool or a new spec (including
  ``kubectl scale``) is reconciled at once, a pool being deleted is no longer scheduled;
* one **scheduler** (:mod:`cloudpilot.kube.scheduler`), started and stopped with the
  operator, reconciles each pool when it is due: reconcile, post events, write status if
  it changed (in that order: :func:`publish`), schedule the next reconcile (seconds while
  converging or backing off; when quiet, the next tick of the pool's account, about a
  minute: :mod:`cloudpilot.account_tick`);
* a **delete** handler (it makes kopf hold the pool's finalizer) destroys the pool's VMs,
  or leaves them with ``deletionPolicy: Orphan``, and keeps the pool until they are gone.

One scheduler rather than a kopf daemon per pool: a daemon costs a task, its frames, a
stopper and a logger for each pool, most of the operator's memory at a thousand pools
(docs/performance.md). Logic lives in :class:`cloudpilot.reconciler.Reconciler`; these
functions only adapt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from cloudpilot import constants, leader, metrics
from cloudpilot.cycle_events import Event
from cloudpilot.heap_trim import HeapTrimmer
from cloudpilot.kube.events import post_events
from cloudpilot.kube.scheduler import Next, PoolScheduler
from cloudpilot.kube.status import patch_status
from cloudpilot.pool_bodies import Change, PoolBodies
from cloudpilot.reconciler import PoolRef, Reconciler

logger = logging.getLogger(__name__)
RESOURCE = (constants.API_GROUP, constants.API_VERSION, constants.PLURAL)
WATCH_HANDLER = "pool-event"
TEARDOWN_HANDLER = "teardown"


class _QuietWatchHandler(logging.Filter):
    """Drop kopf's "Handler 'pool-event' succeeded." line: kopf logs every handler's
    success at INFO, which for the watch handler is one line per status write of every
    pool (thousands a minute at a thousand pools). Its failures are still logged."""

    message = f"Handler {WATCH_HANDLER!r} succeeded."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.getMessage() != self.message


class _QuietTeardownRetry(logging.Filter):
    """kopf logs each retry of a waiting teardown at ERROR (and, with posting on, hands it
    to its event poster): one line per retry of an expected wait that CloudPilot explains
    itself (conditions, one Warning event per cause). The line is kept, at INFO, and
    marked for kopf's poster to skip."""

    prefix = f"Handler {TEARDOWN_HANDLER!r} failed temporarily"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(self.prefix):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.k8s_skip = True  # kopf's poster skips records marked so
        return True


def _quiet_watch_handler() -> None:
    kopf_objects = logging.getLogger("kopf.objects")
    for kind in (_QuietWatchHandler, _QuietTeardownRetry):
        if not any(isinstance(f, kind) for f in kopf_objects.filters):
            kopf_objects.addFilter(kind())


def _ref(body: Mapping[str, Any]) -> PoolRef:
    meta = body.get("metadata", {})
    return PoolRef(namespace=meta["namespace"], name=meta["name"], uid=meta.get("uid", ""))


async def publish(
    pool: PoolRef, body: Mapping[str, Any], events: Sequence[Event], status_patch: dict[str, Any]
) -> bool:
    """A cycle's Events, then its status (a teardown does the same); False when the Lease
    lapsed before the status could be written (nothing more was sent).

    Events first: whoever sees a condition (a user, a test) can then find the Event that
    explains it, and a status write that fails loses no Event (a repeat of a blocking one
    next cycle only raises its count). No round trip is added: the same calls, in the other
    order, and none at all in a quiet cycle. Posting the Events takes awaits, so the Lease
    is checked again before the status write (and before each Event, in ``post_events``).
    """
    await post_events(body, events)
    if not leader.may_act():
        return False  # the replica that leads now writes the status
    await patch_status(pool.namespace, pool.name, status_patch)
    return True


def configure_kopf(settings: kopf.OperatorSettings, *, cluster_discovery: bool = True) -> None:
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
    # Bounded per-object workers: at start-up, one per pool at once was the operator's
    # memory peak (their patches' TLS connections); see constants.KOPF_WORKER_LIMIT.
    settings.queueing.worker_limit = constants.KOPF_WORKER_LIMIT
    settings.queueing.idle_timeout = constants.KOPF_IDLE_TIMEOUT
    # Namespaced installs may withhold cluster-wide list rights: no namespace discovery then.
    # (CLOUDPILOT_CLUSTER_DISCOVERY=false, OperatorSettings.cluster_discovery)
    settings.scanning.disabled = not cluster_discovery


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    *,
    concurrency: int = constants.MAX_CONCURRENT_RECONCILES,
    cluster_discovery: bool = True,
) -> None:
    bodies = PoolBodies()

    async def reconcile_pool(uid: str) -> Next | float | None:
        body = bodies.get(uid)
        if body is None:
            return None  # deleted while it waited for its turn
        pool = _ref(body)
        started = time.monotonic()
        try:
            outcome = await reconciler.reconcile(pool, body)
            if not leader.may_act():
                # The Lease lapsed during the cycle: whoever holds it now writes status.
                return retry_delay
            if not await publish(pool, body, outcome.events, outcome.status_patch):
                return retry_delay
            status = bodies.record_status(uid, outcome.status_patch)
        except Exception:
            # A bug or an API outage must not end the pool's reconciles for good.
            logger.exception("reconcile of %s failed; retrying", pool.key)
            metrics.observe_reconcile(pool.key, time.monotonic() - started, failed=True)
            return retry_delay
        if not body["metadata"].get("deletionTimestamp"):
            # Once deletion began, teardown may already have dropped the pool's series;
            # writing them now would bring them back for good.
            metrics.observe_reconcile(pool.key, time.monotonic() - started)
            metrics.set_pool_status(pool.key, status or {})
        return Next(outcome.next_delay, outcome.tick)

    retry_delay = reconciler.settings.converging_interval
    scheduler = PoolScheduler(reconcile_pool, concurrency=concurrency, retry_delay=retry_delay)
    heap = HeapTrimmer()  # freed JSON of watch events back to the system (heap_trim)
    _quiet_watch_handler()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, then KUBECONFIG / ~/.kube/config."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, cluster_discovery=cluster_discovery)
        scheduler.start()
        heap.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await scheduler.stop()
        await heap.stop()
        await reconciler.dirac.close()  # DiracX HTTP sessions (cloudpilot.dirac)

    @kopf.on.event(*RESOURCE, id=WATCH_HANDLER, registry=registry)
    async def pool_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        uid = body.get("metadata", {}).get("uid", "")
        change = bodies.observe(event.get("type"), body)
        if change in (Change.NEW, Change.SPEC_CHANGED):
            scheduler.due_now(uid)
        elif change is Change.DELETING:
            scheduler.drop(uid)
        elif change is Change.GONE:
            # Usually teardown has forgotten the pool already; not when someone removed
            # the finalizer by hand (what a blocked teardown's message offers).
            scheduler.drop(uid)
            pool = _ref(body)
            reconciler.forget(pool)
            metrics.forget_pool(pool.key)

    @kopf.on.delete(*RESOURCE, id=TEARDOWN_HANDLER, registry=registry)
    async def pool_deleted(body: kopf.Body, **_: Any) -> None:
        await tear_down(reconciler, body)


async def tear_down(reconciler: Reconciler, body: Mapping[str, Any]) -> None:
    """One teardown attempt, then its Events and status (the delete handler).

    Written as a cycle's are (:func:`publish`): the attempt awaits the cloud (listing,
    destroying), and a replica whose Lease lapsed meanwhile must not overwrite the teardown
    status the new leader writes, nor post Events for it. Raises ``kopf.TemporaryError``
    while the pool must wait (whoever leads then tries again).
    """
    pool = _ref(body)
    outcome = await reconciler.finalize(pool, body)
    if outcome.release:
        await post_events(body, outcome.events)
        metrics.forget_pool(pool.key)
        return
    try:
        await publish(pool, body, outcome.events, outcome.status_patch)
    except Exception as exc:  # status is a courtesy here; the retry is not
        logger.warning("could not write the teardown status of %s: %s", pool.key, exc)
    # Retried on CloudPilot's back-off, not kopf's default minute; the why is in the
    # pool's conditions and one Warning event per cause (see cloudpilot.teardown).
    raise kopf.TemporaryError(outcome.summary or "teardown waits", delay=outcome.retry_in)
