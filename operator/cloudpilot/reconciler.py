"""One reconcile of one pool: read, decide, act, report.

This is the service the kopf handlers call. It reads the pool's Secrets, lists each cloud
account the pool uses once, asks the pure planner what to do, does it through the cloud
gateway, and returns the status patch and events for the handler to write. It never
raises for a cloud or configuration problem: those become conditions, events and
back-off, and every other pool carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets as pysecrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudpilot import audit, constants, leader, metrics, planner, redaction, teardown
from cloudpilot import memory as mem
from cloudpilot.closedloop import ClosedLoop, attach
from cloudpilot.cloud import errors
from cloudpilot.cloud.drivers import driver_class
from cloudpilot.cloud.gateway import CloudGateway, CreateRequest, Credentials, ListedNode
from cloudpilot.cloud.listing import LISTING_REUSE_FRACTION
from cloudpilot.cloud.options import check_queues
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.context import build_user_data
from cloudpilot.credentials.errors import InvalidProxyError
from cloudpilot.credentials.proxy import ProxyReason
from cloudpilot.credentials.proxyfiles import ProxyFileStore
from cloudpilot.credentials.resolve import credentials_from_secret
from cloudpilot.inventory import owned_vms, queue_prefixes
from cloudpilot.kube import secrets as kube_secrets
from cloudpilot.models.queues import CloudAccount, ConfigError, QueueConfig, effective_queues
from cloudpilot.models.spec import (
    DeletionPolicy,
    PoolSpec,
    ScaleDownPolicy,
    describe_validation_error,
    parse_spec,
)
from cloudpilot.models.vms import ObservedVM
from cloudpilot.naming import new_vm_name, pool_prefix, queue_prefix, vm_tags
from cloudpilot.pilot_proxy import QueueProxy, assess, load_queue_proxies, unusable_proxy
from cloudpilot.settings import class_paths
from cloudpilot.status import OBSERVATION_KEYS, StatusInputs, build_status, status_patch

logger = logging.getLogger(__name__)

SecretReader = Callable[[str, str], Awaitable[dict[str, bytes]]]
SecretGetter = Callable[[str], Awaitable[dict[str, bytes]]]
StatusWriter = Callable[["PoolRef", dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the pool; ``queue`` and ``vm_ids`` are for the audit log
    only (not compared: they do not change what ``kubectl describe`` shows)."""

    type: str
    reason: str
    message: str
    queue: str = field(default="", compare=False)
    vm_ids: tuple[str, ...] = field(default=(), compare=False)
    audited: bool = field(default=False, compare=False)


@dataclass
class Outcome:
    status_patch: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    next_delay: float = constants.DEFAULT_RECONCILE_INTERVAL


TEARDOWN_PROGRESS_RETRY = 5.0
"""Seconds between two looks at a deletion whose VMs are being destroyed (at most the
converging interval)."""


@dataclass
class TeardownOutcome:
    """One attempt at deleting a pool: release it, or wait ``retry_in`` seconds."""

    release: bool
    status_patch: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    retry_in: float = 0.0
    summary: str = ""


@dataclass(frozen=True)
class ReconcilerSettings:
    interval: float = constants.DEFAULT_RECONCILE_INTERVAL
    converging_interval: float = constants.DEFAULT_CONVERGING_INTERVAL
    parallelism: int = constants.DEFAULT_CREATE_PARALLELISM
    batch_size: int = constants.DEFAULT_BATCH_SIZE
    rate_limit: float = 20.0
    rate_burst: int = 40
    proxy_warn_margin: float = 6 * 3600.0
    """A pilot proxy this close to expiry raises the ProxyExpiring condition."""
    max_creates_per_cycle: int = constants.DEFAULT_MAX_CREATES_PER_CYCLE
    """Most VMs one cycle of one pool asks for: a reconcile is bounded work whatever the
    pool asks, and other pools are served between the cycles of a big scale-up."""
    allowed_driver_classes: frozenset[str] = frozenset()
    """``cloudType`` class paths pools may name (OperatorSettings.allowed_driver_classes)."""

    def __post_init__(self) -> None:
        # Any iterable in, a checked frozenset out: it is part of a cache key downstream.
        object.__setattr__(self, "allowed_driver_classes", class_paths(self.allowed_driver_classes))

    unreachable_stall_after: float = constants.DEFAULT_UNREACHABLE_STALL_AFTER
    """An endpoint that takes no connection for this long makes the pool Stalled."""


@dataclass(frozen=True)
class PoolRef:
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class _AccountView:
    gateway: CloudGateway | None
    listing: list[ListedNode]
    error: mem.CloudError | None = None
    rotated: bool = False
    """The account's credentials changed since this pool's last cycle."""


class Reconciler:
    """Holds what outlives one cycle: memories, locks, gateways, rate limiters."""

    def __init__(
        self,
        settings: ReconcilerSettings | None = None,
        *,
        read_secret: SecretReader = kube_secrets.read_secret,
        read_configmap: Callable[[str, str], Awaitable[dict[str, str]]] = (
            kube_secrets.read_configmap
        ),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_cloud_call: Callable[[str, float, mem.CloudError | None], None] | None = None,
        write_status: StatusWriter | None = None,
    ) -> None:
        self.settings = settings or ReconcilerSettings()
        self._read_secret = read_secret
        self._clock = clock
        self._on_cloud_call = on_cloud_call
        self._memories: dict[str, mem.PoolMemory] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._gateways: dict[tuple[CloudAccount, str], CloudGateway] = {}
        self._limiters: dict[str, TokenBucket] = {}
        self._fingerprints: dict[tuple[str, CloudAccount], str] = {}
        self._gateway_used: dict[tuple[CloudAccount, str], float] = {}
        self._gateways_swept = float("-inf")
        self._proxy_files = ProxyFileStore()
        self._secret_cache: dict[
            tuple[str, str], tuple[float, asyncio.Future[dict[str, bytes]]]
        ] = {}
        self._secret_max_age = self.settings.interval * LISTING_REUSE_FRACTION
        self._secret_owners: dict[str, set[str]] = {}
        # The last usable spec of each pool as recorded in its status (``teardownSpec``), as
        # compact JSON: re-parsed only if the pool is deleted (see cloudpilot.teardown).
        # Parsed models would cost ~4 KB a pool for a case that almost never happens.
        self._recorded: dict[str, str] = {}
        self._write_status = write_status
        """Writes ``status.teardownSpec`` before a spec is first acted on. None (harnesses
        without an API server): the record is kept in process only."""
        self._teardowns: dict[str, teardown.TeardownState] = {}
        self._read_configmap = read_configmap
        self.closed_loop = ClosedLoop()
        """Per-pool loops and per-account learned quotas (cloudpilot.closedloop)."""

    async def _read_secret_shared(self, namespace: str, name: str) -> dict[str, bytes]:
        """Secret reads shared by every pool for a short while (half the reconcile
        interval, as the cloud listing): a thousand pools on one credentials Secret make one
        GET per interval, not a thousand. Concurrent reads of one Secret wait for the first."""
        key = (namespace, name)
        now = time.monotonic()
        cached = self._secret_cache.get(key)
        if cached is not None and now - cached[0] < self._secret_max_age:
            return await cached[1]
        # Expired reads are dropped whenever a new one starts, so the Secrets of deleted
        # pools do not pile up in memory.
        for stale in [
            k for k, (at, _) in self._secret_cache.items() if now - at >= self._secret_max_age
        ]:
            del self._secret_cache[stale]
        reading = asyncio.ensure_future(self._read_secret(namespace, name))
        self._secret_cache[key] = (now, reading)
        try:
            return await reading
        except BaseException:
            self._secret_cache.pop(key, None)  # a failed read is never served from cache
            raise

    @property
    def proxy_files(self) -> ProxyFileStore:
        """Where PROXY credentials are written (0600 files in a private directory)."""
        return self._proxy_files

    # -- lifecycle --------------------------------------------------------------------------

    def forget(self, pool: PoolRef) -> None:
        for store in (self._memories, self._recorded, self._teardowns):
            store.pop(pool.uid, None)
        self.closed_loop.forget(pool.uid)
        for owner in self._secret_owners.pop(pool.uid, set()):
            redaction.forget(owner)
        self._proxy_files.release(pool.key)
        for key in [k for k in self._fingerprints if k[0] == pool.uid]:
            del self._fingerprints[key]
        for gateway in self._gateways.values():
            gateway.listing.forget(pool.uid)  # which listing this pool saw last
        # Called under the pool's lock by teardown. A reconcile that was already waiting
        # for the lock sees the deletionTimestamp and does nothing (see reconcile).
        self._locks.pop(pool.uid, None)

    # -- the cycle --------------------------------------------------------------------------

    async def reconcile(self, pool: PoolRef, body: Mapping[str, Any]) -> Outcome:
        """One cycle: list, plan, act, and say what status to write and when to come back."""
        async with self._locks[pool.uid]:
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                # ``body`` is live: deletion was requested while this cycle waited for the
                # lock, and teardown (``finalize``) owns the pool now. Acting could create
                # VMs for a pool whose finalizer is about to go.
                return Outcome(status_patch={}, next_delay=self.settings.interval)
            outcome = await self._reconcile(pool, body)
            outcome.events = _audited(pool, outcome.events)
            return outcome

    async def _reconcile(self, pool: PoolRef, body: Mapping[str, Any]) -> Outcome:
        now = self._clock()
        generation = int(body.get("metadata", {}).get("generation") or 0)
        previous = body.get("status") or {}
        try:
            spec = parse_spec(dict(body.get("spec") or {}))
            queues = effective_queues(spec, namespace=pool.namespace, pool_name=pool.name)
            # Unknown driver/createOptions keys, class paths not allowed: before any driver.
            check_queues(queues, self._driver_class)
        except (ValueError, ConfigError) as exc:
            message = describe_validation_error(exc)
            return self._blocked(pool, previous, generation, now, mem.ErrorKind.CONFIG, message)

        secret = _cycle_secrets(pool.namespace, self._read_secret_shared)
        try:
            proxies = await load_queue_proxies(
                queues, namespace=pool.namespace, owner=pool.key, secret=secret
            )
        except ConfigError as exc:
            return self._blocked(pool, previous, generation, now, mem.ErrorKind.CONFIG, str(exc))
        report = assess(
            proxies,
            now=now,
            warn_margin=timedelta(seconds=self.settings.proxy_warn_margin),
            previous_status=previous,
        )

        memory = mem.for_generation(self._memories.get(pool.uid, mem.PoolMemory()), generation)
        warm = {q.name for q in queues if q.replicas > 0 and q.name not in memory.backoff}
        views = await self._list_accounts(pool, queues, secret, proxies, warm)
        observed = self._observed(pool, queues, views)
        memory = mem.observe(memory, (vm.id for vm in observed), now)
        if any(v.rotated for v in views.values()):
            # New credentials (a fixed key, a widened IAM policy) clear the back-off their
            # predecessors earned: the next create is tried now, not in an hour. The hold
            # after an uncertain create stays: it guards against a duplicate, not a fault.
            memory = replace(
                memory, backoff={q: b for q, b in memory.backoff.items() if b.error.uncertain}
            )
        # An account that could not be listed blocks the whole pool's plan this cycle.
        blocking = next((v.error for v in views.values() if v.error is not None), None)
        memory = mem.record_outage(memory, blocking, now)
        limits = planner.PoolLimits(
            spec.limits.max_instances if spec.limits else None,
            spec.limits.max_starting if spec.limits else None,
        )
        removed_queue_policy = spec.scale_down_policy or ScaleDownPolicy.DRAIN

        def plan_now(
            memory: mem.PoolMemory, gates: Mapping[str, planner.QueueGate] | None = None
        ) -> planner.Plan:
            the_plan = planner.plan(
                queues,
                observed,
                memory,
                now,
                limits=limits,
                removed_queue_policy=removed_queue_policy,
                max_creates=self.settings.max_creates_per_cycle,
                gates=gates,
            )
            # An expired pilot proxy: new pilots could not work. Deletions go on.
            return replace(
                the_plan,
                creations=tuple(
                    c for c in the_plan.creations if c.queue not in report.stopped_queues
                ),
            )

        the_plan = plan_now(memory) if blocking is None else planner.Plan()
        # -- closed loop (cloudpilot.closedloop): count how VMs ended, then plan again with
        # what the loop allows (holds, ramp-up, the account's learned quota).
        loop = self.closed_loop
        accounts = _account_keys(queues, views)
        loop_events = loop.observe(
            pool.uid,
            pool.key,
            queues,
            observed,
            memory,
            accounts,
            previous,
            now,
            listed=blocking is None,
        )
        if blocking is None:
            loop_events += loop.classify_deletions(
                pool.key, pool.uid, the_plan.deletions, queues, now
            )
            the_plan = plan_now(memory, loop.gates(pool.uid, queues, observed, memory, now))
        # -- end closed loop
        if report.stopped_queues and blocking is None and report.stop is not None:
            kind = (
                mem.ErrorKind.PROXY_EXPIRED
                if report.stop.reason is ProxyReason.EXPIRED
                else mem.ErrorKind.INVALID_PROXY
            )
            blocking = mem.CloudError(kind, report.stop.message)

        events: list[Event] = []
        by_queue = {q.name: q for q in queues}
        if not leader.may_act():
            # Fencing: this replica's Lease lapsed; whoever holds it now does the work.
            the_plan = planner.Plan(queues=the_plan.queues)
        elif blocking is None and views:
            # Every account listed: this spec may create VMs now. Recorded first, so that a
            # deletion can always find the spec the pool's VMs were made with.
            try:
                await self._record_spec(pool, body.get("spec") or {}, previous)
            except Exception as exc:
                # No record, no new VM; deletions and replacements of stuck VMs go on, and
                # the condition says why (e.g. a CRD older than the operator: upgrade it).
                the_plan = replace(the_plan, creations=())
                blocking = mem.CloudError(
                    mem.ErrorKind.TRANSIENT,
                    "cannot record status.teardownSpec before creating VMs "
                    f"(is the CRD up to date?): {errors.scrub(f'{type(exc).__name__}: {exc}')}",
                )
        memory = await self._delete(pool, the_plan.deletions, views, by_queue, memory, events, now)
        memory = await self._create(
            pool, spec, the_plan.creations, views, by_queue, memory, events, now, secret
        )
        self._memories[pool.uid] = memory

        # What the plan would be now, after acting: the status and the next delay come
        # from it (the same filter, so a stalled queue does not look like it converges).
        listed = bool(views) and all(v.error is None for v in views.values())
        gates = loop.gates(pool.uid, queues, observed, memory, now)
        after = plan_now(memory, gates) if listed else the_plan
        loop.remember_listed(pool.uid, observed, memory)
        loop_blocks, loop_conditions, notices = loop.report(
            pool.uid, pool.key, queues, after, previous, now
        )
        loop_events += notices
        events += [Event(n.type, n.reason, n.message, queue=n.queue) for n in loop_events]
        if (
            blocking is not None
            and (previous.get("lastError") or {}).get("message")
            != blocking.message[: constants.MAX_MESSAGE_LENGTH]
        ):
            events.append(Event("Warning", blocking.kind.value, blocking.message))
        if report.event is not None:
            events.append(Event(*report.event))
        status = build_status(
            StatusInputs(
                generation=generation,
                plan=after,
                observed=observed,
                memory=memory,
                now=now,
                error=blocking,
                prefixes=queue_prefixes(queues),
                extra={"proxy": report.status} if report.status else None,
                extra_conditions=[
                    *([report.verdict.condition] if report.verdict else ()),
                    *loop_conditions,
                ],
                outage=memory.outage,
                unreachable_stall_after=self.settings.unreachable_stall_after,
            ),
            previous,
        )
        attach(status, loop_blocks)
        events += _stall_events(previous, status, blocking)
        delay = self._next_delay(after, memory, now, blocking, _outage_delay(memory, spec))
        wake = loop.next_wake(pool.uid, now)
        return Outcome(
            status_patch=status_patch(previous, status),
            events=events,
            next_delay=min(delay, wake) if wake is not None else delay,
        )

    def _driver_class(self, cloud_type: str) -> type:
        """``cloudType`` resolved under this operator's allow-list of class paths."""
        return driver_class(cloud_type, self.settings.allowed_driver_classes)

    def _blocked(
        self,
        pool: PoolRef,
        previous: Mapping[str, Any],
        generation: int,
        now: datetime,
        kind: mem.ErrorKind,
        message: str,
    ) -> Outcome:
        """The spec cannot be acted on: say why and touch nothing in the cloud."""
        error = mem.CloudError(kind, errors.scrub(message))
        memory = self._memories.get(pool.uid, mem.PoolMemory())
        status = build_status(
            StatusInputs(
                generation=generation,
                plan=planner.Plan(),
                observed=[],
                memory=memory,
                now=now,
                error=error,
            ),
            previous,
        )
        # Keep what is known about the VMs: an invalid edit must not make them look gone.
        status.update({k: previous[k] for k in OBSERVATION_KEYS if k in previous})
        # One Event per distinct problem, with the condition's reason: not one every cycle.
        already = (previous.get("lastError") or {}).get("message") == status["lastError"]["message"]
        return Outcome(
            status_patch=status_patch(previous, status),
            events=[] if already else [Event("Warning", error.kind.value, error.message)],
            next_delay=self.settings.interval,
        )

    def _next_delay(
        self,
        after: planner.Plan,
        memory: mem.PoolMemory,
        now: datetime,
        blocking: mem.CloudError | None,
        outage_delay: float | None = None,
    ) -> float:
        delays = [self.settings.interval]
        if outage_delay is not None:
            # An unreachable endpoint: back off (capped by the interval), not every
            # converging interval, however the plan looks.
            return max(min(outage_delay, self.settings.interval), 1.0)
        converging = (
            after.creations
            or memory.pending
            or memory.deleting
            or any(q.starting or q.deleting for q in after.queues)
        )
        if converging:
            delays.append(self.settings.converging_interval)
        if blocking and blocking.kind is mem.ErrorKind.TRANSIENT:
            delays.append(min(self.settings.converging_interval, constants.TRANSIENT_LISTING_RETRY))
        for backoff in memory.backoff.values():
            delays.append(max((backoff.retry_at - now).total_seconds(), 1.0))
            if backoff.error.uncertain:
                # The failed create may have been carried out (a timeout, a lost answer):
                # look at the cloud again soon; the back-off still holds new creations.
                delays.append(constants.TRANSIENT_LISTING_RETRY)
        return min(delays)

    # -- reading ----------------------------------------------------------------------------

    async def _credentials(
        self,
        pool: PoolRef,
        account: CloudAccount,
        queue: QueueConfig,
        secret: SecretGetter,
        proxy: QueueProxy | None,
    ) -> Credentials:
        data = await secret(account.credentials_secret)
        provider = None
        if proxy is not None:
            problem = unusable_proxy(proxy.pem)
            provider = (
                self._proxy_files.provider(
                    pool.key, account.credentials_secret, proxy.source, proxy.pem
                )
                if problem is None
                else _refuse_proxy(proxy.source, problem)
            )
        credentials = credentials_from_secret(
            data,
            ce=queue.ce,
            namespace=pool.namespace,
            secret_name=account.credentials_secret,
            proxy_path_provider=provider,
        )
        if not credentials.uses_proxy:
            self._proxy_files.release(pool.key, account.credentials_secret)
        return credentials

    def _gateway(self, account: CloudAccount, credentials: Credentials) -> CloudGateway:
        key = (account, credentials.fingerprint)
        gateway = self._gateways.get(key)
        if gateway is None:
            limiter = self._limiters.setdefault(
                account.endpoint, TokenBucket(self.settings.rate_limit, self.settings.rate_burst)
            )
            gateway = CloudGateway(
                account,
                credentials,
                limiter=limiter,
                parallelism=self.settings.parallelism,
                batch_size=self.settings.batch_size,
                on_call=self._on_cloud_call,
                # Pools on one endpoint and credentials share a listing this young.
                listing_max_age=self.settings.interval * LISTING_REUSE_FRACTION,
                allowed_driver_classes=self.settings.allowed_driver_classes,
            )
            self._gateways[key] = gateway
        # A rotated Secret makes a new gateway; the old one goes once no pool has used it
        # for two intervals. Not at once: pools sharing a Secret may resolve it to
        # different credentials (PROXY with each pool's own proxy), and would otherwise
        # rebuild each other's drivers every cycle.
        # Accounts no pool uses any more (a deleted pool, edited driver options) go the same
        # way; the sweep runs at most once an interval.
        now = time.monotonic()
        self._gateway_used[key] = now
        if now - self._gateways_swept >= self.settings.interval:
            self._gateways_swept = now
            horizon = now - 2 * self.settings.interval
            for stale in [k for k, used in self._gateway_used.items() if used < horizon]:
                self._gateways.pop(stale, None)
                del self._gateway_used[stale]
        return gateway

    async def _list_accounts(
        self,
        pool: PoolRef,
        queues: Sequence[QueueConfig],
        secret: SecretGetter | None = None,
        proxies: Mapping[str, QueueProxy] | None = None,
        warm: Collection[str] = (),
    ) -> dict[CloudAccount, _AccountView]:
        """List every account the pool's queues use, once each (shared with other pools).

        ``warm``: queues that may create VMs this cycle. Their image, flavor and network
        lookups run beside the listing, so a new pool pays one round trip for both.
        """
        secret = secret or _cycle_secrets(pool.namespace, self._read_secret_shared)
        proxies = proxies or {}
        # One queue speaks for each account: one with a pilot proxy if any has one, since
        # ``secret = PROXY`` credentials need one (whatever order the queues come in).
        accounts: dict[CloudAccount, QueueConfig] = {}
        for q in sorted(queues, key=lambda q: q.name not in proxies):
            accounts.setdefault(q.account, q)

        async def one(account: CloudAccount, queue: QueueConfig) -> _AccountView:
            try:
                credentials = await self._credentials(
                    pool, account, queue, secret, proxies.get(queue.name)
                )
                gateway = self._gateway(account, credentials)
                rotated = self._note_rotation(pool, account, credentials)
                # One listing of the account serves every pool on it; this pool's VMs
                # are cut out of it by their name prefix.
                listing, _ = await asyncio.gather(
                    gateway.list_shared(pool.uid, prefix=pool_prefix(pool.namespace, pool.name)),
                    asyncio.gather(
                        *(
                            gateway.prepare(q)
                            for q in queues
                            if q.account == account and q.name in warm
                        )
                    ),
                )
            except Exception as exc:
                return _AccountView(None, [], errors.classify(exc, "list"))
            return _AccountView(gateway, listing, rotated=rotated)

        results = await asyncio.gather(*(one(a, q) for a, q in accounts.items()))
        return dict(zip(accounts, results, strict=True))

    def _note_rotation(self, pool: PoolRef, account: CloudAccount, creds: Credentials) -> bool:
        """Whether the pool's credentials for ``account`` changed since its last cycle."""
        key = (pool.uid, account)
        rotated = self._fingerprints.get(key) not in (None, creds.fingerprint)
        self._fingerprints[key] = creds.fingerprint
        return rotated

    # -- acting -----------------------------------------------------------------------------

    async def _delete(
        self,
        pool: PoolRef,
        deletions: Sequence[planner.Deletion],
        views: Mapping[CloudAccount, _AccountView],
        queues: Mapping[str, QueueConfig],
        memory: mem.PoolMemory,
        events: list[Event],
        now: datetime,
    ) -> mem.PoolMemory:
        if not deletions:
            return memory
        _audit_planned_deletions(pool, deletions)
        grouped: defaultdict[CloudGateway, list[planner.Deletion]] = defaultdict(list)
        for deletion in deletions:
            gateway = self._gateway_for_vm(deletion.vm, views, queues)
            if gateway is not None:
                grouped[gateway].append(deletion)
        results: dict[str, mem.CloudError | None] = {}
        outcomes = await asyncio.gather(
            *(gw.destroy([_listed(d.vm) for d in ds]) for gw, ds in grouped.items())
        )
        for outcome in outcomes:
            results.update(outcome)
        done = [vm_id for vm_id, error in results.items() if error is None]
        memory = mem.record_deleting(memory, done, now)
        by_id = {d.vm.id: d for d in deletions}
        ok = [by_id[i] for i in done]
        for deletion in ok:
            metrics.count_vms_deleted(pool.key, deletion.vm.queue, deletion.reason.value)
        events += _capped(
            _audited(
                pool,
                [
                    Event(
                        "Normal",
                        "Deleted",
                        f"Deleted VM {d.vm.name} ({d.vm.id}) of queue {d.vm.queue}: "
                        f"{d.reason.value}",
                        queue=d.vm.queue,
                        vm_ids=(d.vm.id,),
                    )
                    for d in ok
                ],
            ),
            "Deleted",
            "Deleted {n} more VM(s)",
        )
        failed = [(by_id[i], e) for i, e in results.items() if e is not None]
        for deletion, error in failed:
            metrics.count_vm_failures(pool.key, deletion.vm.queue, "destroy", error.kind.value)
        events += _capped(
            _audited(
                pool,
                [
                    Event(
                        "Warning",
                        "DeleteFailed",
                        f"Could not delete VM {d.vm.name} ({d.vm.id}): {e.message}",
                        queue=d.vm.queue,
                        vm_ids=(d.vm.id,),
                    )
                    for d, e in failed
                ],
            ),
            "DeleteFailed",
            "{n} more deletions failed",
        )
        return memory

    def _gateway_for_vm(
        self,
        vm: ObservedVM,
        views: Mapping[CloudAccount, _AccountView],
        queues: Mapping[str, QueueConfig],
    ) -> CloudGateway | None:
        queue = queues.get(vm.queue)
        if queue is not None:
            return views[queue.account].gateway
        # A removed queue's VM: it was listed through one of the pool's accounts.
        for view in views.values():
            if view.gateway is not None and any(n.id == vm.id for n in view.listing):
                return view.gateway
        return None

    async def _create(
        self,
        pool: PoolRef,
        spec: PoolSpec,
        creations: Sequence[planner.Creation],
        views: Mapping[CloudAccount, _AccountView],
        queues: Mapping[str, QueueConfig],
        memory: mem.PoolMemory,
        events: list[Event],
        now: datetime,
        secret: SecretGetter,
    ) -> mem.PoolMemory:
        async def one(creation: planner.Creation) -> tuple[planner.Creation, Any]:
            queue = queues[creation.queue]
            gateway = views[queue.account].gateway
            assert gateway is not None
            try:
                user_data = await self._user_data(pool, queue, secret)
            except Exception as exc:
                return creation, errors.classify(exc, "render")
            request = CreateRequest(
                queue=queue,
                count=creation.count,
                name=new_vm_name(queue_prefix(pool.namespace, pool.name, queue.name)),
                user_data=user_data,
                tags=vm_tags(pool.namespace, pool.name, queue.name, queue.ce),
                client_token=pysecrets.token_hex(12),
            )
            return creation, await gateway.create(request)

        for creation in creations:
            audit.record(
                pool.namespace,
                pool.name,
                "ScaleUpPlanned",
                f"queue {creation.queue}: creating {creation.count} VM(s)",
                queue=creation.queue,
            )
        for creation, result in await asyncio.gather(*(one(c) for c in creations)):
            if isinstance(result, mem.CloudError):
                metrics.count_vm_failures(pool.key, creation.queue, "create", result.kind.value)
                memory = mem.record_failure(
                    memory, creation.queue, result, now, **_backoff_args(spec)
                )
                events += _audited(
                    pool,
                    [
                        Event(
                            "Warning",
                            "CreateFailed",
                            f"queue {creation.queue}: {result.message}",
                            queue=creation.queue,
                        )
                    ],
                )
                continue
            metrics.count_vms_created(pool.key, creation.queue, len(result.created))
            refused = result.error is not None and result.error.kind is mem.ErrorKind.QUOTA
            self.closed_loop.learn(
                pool.uid,
                creation.queue,
                requested=result.requested,
                created=len(result.created),
                refused=refused,
                now=now,
            )
            memory = mem.record_created(
                memory,
                (
                    mem.PendingVM(id=n.id, name=n.name, queue=creation.queue, created_at=now)
                    for n in result.created
                ),
            )
            events += _capped(
                _audited(
                    pool,
                    [
                        Event(
                            "Normal",
                            "Created",
                            f"Created VM {n.name} ({n.id}) in queue {creation.queue}",
                            queue=creation.queue,
                            vm_ids=(n.id,),
                        )
                        for n in result.created
                    ],
                ),
                "Created",
                "Created {n} more VM(s)",
            )
            if result.error is not None:
                metrics.count_vm_failures(
                    pool.key, creation.queue, "create", result.error.kind.value
                )
                if not (refused and queues[creation.queue].closed_loop.enabled):
                    # A quota refusal is not a fault to back off from: the closed loop has
                    # learned the account's headroom and plans within it from now on.
                    memory = mem.record_failure(
                        memory, creation.queue, result.error, now, **_backoff_args(spec)
                    )
                events += _audited(
                    pool,
                    [
                        Event(
                            "Warning",
                            "CreateFailed",
                            f"queue {creation.queue}: created {len(result.created)} of "
                            f"{result.requested}: {result.error.message}",
                            queue=creation.queue,
                        )
                    ],
                )
            else:
                memory = mem.record_success(memory, creation.queue)
        return memory

    async def _user_data(self, pool: PoolRef, queue: QueueConfig, secret: SecretGetter) -> bytes:
        """Rendered once per queue per cycle (and cached across cycles while the inputs
        are unchanged); every VM of a batch gets the same bytes."""
        rendered = await build_user_data(
            queue,
            namespace=pool.namespace,
            pool=pool.name,
            read_secret=lambda _namespace, name: secret(name),
            read_configmap=self._read_configmap,
        )
        redaction.register(f"{pool.key}:userdata:{queue.name}", rendered.secret_values)
        self._secret_owners.setdefault(pool.uid, set()).add(f"{pool.key}:userdata:{queue.name}")
        return rendered.payload

    # -- teardown ---------------------------------------------------------------------------

    async def _record_spec(
        self, pool: PoolRef, spec: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        """Record ``spec`` in ``status.teardownSpec`` before it is first acted on.

        The write must succeed before any VM is created with the spec (a failure raises and
        the cycle creates nothing): that is what lets a deletion tell a pool that never had
        a VM from one whose VMs it must find (see :mod:`cloudpilot.teardown`). One write per
        usable spec change; a JSON string, so that a merge patch replaces it whole.
        """
        compact = _spec_json(spec)
        if self._recorded.get(pool.uid) == compact:
            return
        if self._write_status is not None and previous.get("teardownSpec") != compact:
            await self._write_status(pool, {"teardownSpec": compact})
        self._recorded[pool.uid] = compact

    async def finalize(self, pool: PoolRef, body: Mapping[str, Any]) -> TeardownOutcome:
        """One attempt at deleting a pool: destroy its VMs (policy Delete), or say why not.

        The decisions (which spec, release or wait, what status and events, how long) are
        :mod:`cloudpilot.teardown`'s; this only lists, destroys and reports.
        """
        async with self._locks[pool.uid]:
            status = body.get("status") or {}
            raw_spec = dict(body.get("spec") or {})
            current, current_error = _parse(pool, raw_spec)
            recorded_json = self._recorded.get(pool.uid) or status.get("teardownSpec")
            recorded: tuple[PoolSpec, list[QueueConfig]] | None = None
            recorded_error: str | None = None
            if recorded_json:
                try:
                    recorded, recorded_error = _parse(pool, json.loads(recorded_json))
                except ValueError as exc:
                    recorded_error = f"not JSON: {exc}"
            policy_from = current or recorded
            facts = teardown.Facts(
                current_error=current_error,
                recorded=bool(recorded_json),
                recorded_error=recorded_error,
                orphan=policy_from is not None
                and policy_from[0].deletion_policy is DeletionPolicy.ORPHAN,
                status_shows_vms=teardown.status_shows_vms(status),
                recorded_differs=bool(recorded_json) and recorded_json != _spec_json(raw_spec),
            )
            source = teardown.choose_source(facts)
            events: list[Event] = []
            attempt: teardown.Attempt | None = None
            if source is teardown.Source.RECORDED and recorded is not None:
                attempt = await self._teardown_attempt(pool, recorded[1], events)
            elif source is teardown.Source.CURRENT and current is not None:
                attempt = await self._teardown_attempt(pool, current[1], events)
            verdict = teardown.decide(
                facts,
                source,
                attempt,
                self._teardowns.get(pool.uid, teardown.TeardownState()),
                previous_conditions=status.get("conditions") or (),
                initial_delay=self.settings.converging_interval,
                progress_delay=min(TEARDOWN_PROGRESS_RETRY, self.settings.converging_interval),
                jitter=random.random(),
            )
            events += [Event(n.type, n.reason, n.message) for n in verdict.events]
            events = _audited(pool, events)
            if verdict.release:
                self.forget(pool)
                if not any(e.reason in ("Released", "Orphaned") for e in events):
                    audit.record(
                        pool.namespace, pool.name, "Released", "finalizer removed: no VM left"
                    )
                return TeardownOutcome(release=True, events=events)
            self._teardowns[pool.uid] = verdict.state
            ready = verdict.conditions[0] if verdict.conditions else None
            return TeardownOutcome(
                release=False,
                status_patch=teardown.status_patch(
                    verdict,
                    status,
                    generation=int((body.get("metadata") or {}).get("generation") or 0),
                    now=self._clock(),
                ),
                events=events,
                retry_in=verdict.retry_in or self.settings.converging_interval,
                summary=ready.message if ready else "",
            )

    async def _teardown_attempt(
        self, pool: PoolRef, queues: Sequence[QueueConfig], events: list[Event]
    ) -> teardown.Attempt:
        """List, destroy what is listed, list again: how many VMs remain, or what failed."""
        views, observed, error = await self._owned(pool, queues)
        if error is not None:
            return teardown.Attempt(error=error)
        now = self._clock()
        memory = mem.observe(
            self._memories.get(pool.uid, mem.PoolMemory()), (vm.id for vm in observed), now
        )
        doomed = planner.plan_teardown(observed, memory)
        by_name = {q.name: q for q in queues}
        memory = await self._delete(pool, doomed, views, by_name, memory, events, now)
        self._memories[pool.uid] = memory
        if doomed:
            # Most clouds drop a destroyed VM from the listing at once: look again rather
            # than make the user wait a retry for nothing.
            _, observed, error = await self._owned(pool, queues)
            if error is not None:
                return teardown.Attempt(error=error)
        return teardown.Attempt(remaining=len(observed))

    async def _owned(
        self, pool: PoolRef, queues: Sequence[QueueConfig]
    ) -> tuple[dict[CloudAccount, _AccountView], list[ObservedVM], mem.CloudError | None]:
        """List every account of the pool (teardown): the pool's VMs, or the first failure."""
        secret = _cycle_secrets(pool.namespace, self._read_secret_shared)
        try:
            proxies = await load_queue_proxies(
                queues, namespace=pool.namespace, owner=pool.key, secret=secret
            )
        except ConfigError as exc:
            return {}, [], mem.CloudError(mem.ErrorKind.CONFIG, errors.scrub(str(exc)), "list")
        except Exception as exc:
            return {}, [], errors.classify(exc, "list")
        views = await self._list_accounts(pool, queues, secret, proxies)
        failed = [v.error for v in views.values() if v.error is not None]
        if failed:
            return views, [], failed[0]
        return views, self._observed(pool, queues, views), None

    @staticmethod
    def _observed(
        pool: PoolRef, queues: Sequence[QueueConfig], views: Mapping[CloudAccount, _AccountView]
    ) -> list[ObservedVM]:
        observed: list[ObservedVM] = []
        for account, view in views.items():
            if view.gateway is None:
                continue
            observed += owned_vms(
                view.listing,
                namespace=pool.namespace,
                pool=pool.name,
                queues=[q for q in queues if q.account == account],
                tags_supported=view.gateway.tags_supported,
            )
        return observed


def _account_keys(
    queues: Sequence[QueueConfig], views: Mapping[CloudAccount, _AccountView]
) -> dict[str, str]:
    """Queue -> the cloud account it runs on, as the closed loop keys learned quotas: the
    endpoint and the credentials' fingerprint (pools on one account share its quota)."""
    keys: dict[str, str] = {}
    for q in queues:
        view = views.get(q.account)
        if view is not None and view.gateway is not None:
            keys[q.name] = f"{q.account.endpoint}|{view.gateway.credentials.fingerprint}"
    return keys


def _spec_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, separators=(",", ":"), sort_keys=True)


def _parse(
    pool: PoolRef, raw: Mapping[str, Any]
) -> tuple[tuple[PoolSpec, list[QueueConfig]] | None, str | None]:
    """A spec and its queues, or why it cannot be used (never raises)."""
    try:
        spec = parse_spec(dict(raw))
        queues = effective_queues(spec, namespace=pool.namespace, pool_name=pool.name)
    except (ValueError, ConfigError) as exc:
        return None, errors.scrub(describe_validation_error(exc))
    return (spec, list(queues)), None


def _cycle_secrets(namespace: str, read: SecretReader) -> SecretGetter:
    """Each Secret read at most once per cycle, however many queues and accounts use it
    (and all of them see the same version of it)."""
    cache: dict[str, dict[str, bytes]] = {}

    async def secret(name: str) -> dict[str, bytes]:
        if name not in cache:
            cache[name] = await read(namespace, name)
        return cache[name]

    return secret


def _refuse_proxy(source: str, problem: str) -> Callable[[], str]:
    """A proxy path provider for a proxy nothing can use: it is never written to disk nor
    sent to the cloud (called only if the credentials say ``PROXY``)."""

    def refuse() -> str:
        raise InvalidProxyError(f"secret = PROXY, but the pilot proxy {source} is {problem}")

    return refuse


def _outage_delay(memory: mem.PoolMemory, spec: PoolSpec) -> float | None:
    """The next retry of an unreachable endpoint: the pool's back-off, by failed cycle."""
    outage = memory.outage
    if outage is None or outage.error.kind is not mem.ErrorKind.UNREACHABLE:
        return None
    args = _backoff_args(spec)
    return mem.backoff_delay(
        outage.failures,
        outage.error.kind,
        initial=args.get("initial", constants.BACKOFF_INITIAL),
        maximum=args.get("maximum", constants.BACKOFF_MAX),
        jitter=args["jitter"],
    )


def _stall_events(
    previous: Mapping[str, Any], status: Mapping[str, Any], blocking: mem.CloudError | None
) -> list[Event]:
    """A Warning when an unreachable endpoint turns from retried to Stalled: the error's
    own event came at its first failure, and this is the moment a human is needed."""
    if blocking is None or blocking.kind is not mem.ErrorKind.UNREACHABLE:
        return []

    def stalled(conditions: Any) -> dict[str, Any] | None:
        return next(
            (
                c
                for c in conditions or []
                if c.get("type") == "Stalled" and c.get("status") == "True"
            ),
            None,
        )

    now, before = stalled(status.get("conditions")), stalled(previous.get("conditions"))
    if now is None or (before is not None and before.get("reason") == now.get("reason")):
        return []
    return [Event("Warning", now["reason"], now["message"])]


def _listed(vm: ObservedVM) -> ListedNode:
    return ListedNode(id=vm.id, name=vm.name, state=vm.cloud_state, created_at=vm.created_at)


def _backoff_args(spec: PoolSpec) -> dict[str, Any]:
    args: dict[str, Any] = {"jitter": random.random()}
    if spec.backoff and spec.backoff.initial_seconds:
        args["initial"] = spec.backoff.initial_seconds
    if spec.backoff and spec.backoff.max_seconds:
        args["maximum"] = spec.backoff.max_seconds
    return args


def _capped(events: list[Event], reason: str, summary: str) -> list[Event]:
    limit = constants.MAX_VM_EVENTS_PER_CYCLE
    if len(events) <= limit:
        return events
    kept = events[:limit]
    # Each VM had its own audit line; the summary is only for the Events.
    kept.append(Event(events[0].type, reason, summary.format(n=len(events) - limit), audited=True))
    return kept


def _audited(pool: PoolRef, events: Sequence[Event]) -> list[Event]:
    """``events``, each logged once to the audit trail (those already logged pass as they are):
    every Event the pool gets is also a structured log line."""
    done: list[Event] = []
    for event in events:
        if not event.audited:
            audit.record(
                pool.namespace,
                pool.name,
                event.reason,
                event.message,
                type_=event.type,
                queue=event.queue,
                vm_ids=event.vm_ids,
            )
            event = replace(event, audited=True)
        done.append(event)
    return done


def _audit_planned_deletions(pool: PoolRef, deletions: Sequence[planner.Deletion]) -> None:
    """The decision before the action: which VMs a cycle means to delete, and why (one line
    per queue and reason)."""
    grouped: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
    for deletion in deletions:
        grouped[(deletion.vm.queue, deletion.reason.value)].append(deletion.vm.id)
    for (queue, why), ids in grouped.items():
        audit.record(
            pool.namespace,
            pool.name,
            "ScaleDownPlanned",
            f"queue {queue}: deleting {len(ids)} VM(s): {why}",
            queue=queue,
            vm_ids=ids,
        )
