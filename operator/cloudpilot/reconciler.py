"""One reconcile of one pool: gather, decide, act, report.

This is the service the kopf handlers call. It gathers what a cycle needs to know (the
spec, the pool's Secrets, one listing of each cloud account, the stored status, whether
this replica leads) into one :class:`~cloudpilot.decision.Observation`, asks
:func:`cloudpilot.decision.decide` what to do, does it through the cloud gateways, and
hands the results to :func:`cloudpilot.decision.conclude` for the status, the events and
the next delay. It decides nothing itself. It never raises for a cloud or configuration
problem: those become conditions, events and back-off, and every other pool carries on.

Per-pool state is one :class:`~cloudpilot.pool_state.PoolState` record; what pools share
(gateways, rate limiters, Secret reads, proxy files) is one
:class:`~cloudpilot.shared_caches.SharedCaches`.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets as pysecrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudpilot import (
    audit,
    constants,
    cycle_events,
    decision,
    leader,
    metrics,
    planner,
    redaction,
    teardown,
)
from cloudpilot import memory as mem
from cloudpilot.account_tick import Tick
from cloudpilot.closedloop import ClosedLoop
from cloudpilot.cloud import errors
from cloudpilot.cloud.drivers import driver_class
from cloudpilot.cloud.gateway import (
    CloudGateway,
    CreateRequest,
    CreateResult,
    Credentials,
    ListedNode,
)
from cloudpilot.cloud.options import check_queues
from cloudpilot.context import build_user_data
from cloudpilot.credentials.errors import InvalidProxyError
from cloudpilot.credentials.proxyfiles import ProxyFileStore
from cloudpilot.credentials.resolve import credentials_from_secret
from cloudpilot.cycle_events import Event, deletion_events
from cloudpilot.decision import AccountListing, Observation, Outcome, Results
from cloudpilot.dirac.link import DiracLink
from cloudpilot.inventory import owned_vms
from cloudpilot.kube import secrets as kube_secrets
from cloudpilot.models.queues import CloudAccount, ConfigError, QueueConfig, effective_queues
from cloudpilot.models.spec import DeletionPolicy, PoolSpec, describe_validation_error, parse_spec
from cloudpilot.models.vms import ObservedVM
from cloudpilot.naming import new_vm_name, pool_prefix, pool_selector, queue_prefix, vm_tags
from cloudpilot.nova_quota import Flavor, NovaReading
from cloudpilot.pilot_proxy import QueueProxy, assess, load_queue_proxies, unusable_proxy
from cloudpilot.pool_state import PoolState
from cloudpilot.reasons import Reason
from cloudpilot.settings import class_paths
from cloudpilot.shared_caches import CacheSettings, SecretReader, SharedCaches

__all__ = ["Event", "Outcome", "PoolRef", "Reconciler", "ReconcilerSettings", "TeardownOutcome"]

SecretGetter = Callable[[str], Awaitable[dict[str, bytes]]]
StatusWriter = Callable[["PoolRef", dict[str, Any]], Awaitable[Any]]

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
    dirac_vanished_grace: float = constants.DEFAULT_DIRAC_VANISHED_GRACE
    """A DiracX pilot whose VM vanished unwatched is ended once registered this long."""

    @property
    def tuning(self) -> decision.Tuning:
        return decision.Tuning(
            self.interval,
            self.converging_interval,
            self.max_creates_per_cycle,
            self.unreachable_stall_after,
        )

    @property
    def caches(self) -> CacheSettings:
        return CacheSettings(
            self.interval,
            self.parallelism,
            self.batch_size,
            self.rate_limit,
            self.rate_burst,
            self.allowed_driver_classes,
        )


@dataclass(frozen=True)
class PoolRef:
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class _Listing:
    """One account as listed this cycle: the gateway to act through, and its nodes."""

    gateway: CloudGateway | None
    nodes: list[ListedNode]
    error: mem.CloudError | None = None


class Reconciler:
    """Holds what outlives one cycle: one record per pool, and the shared caches."""

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
        self._clock = clock
        self.pools: dict[str, PoolState] = {}
        self.caches = SharedCaches(self.settings.caches, read_secret, on_cloud_call)
        self._write_status = write_status
        """Writes ``status.teardownSpec`` before a spec is first acted on. None (harnesses
        without an API server): the record is kept in process only."""
        self._read_configmap = read_configmap
        self.closed_loop = ClosedLoop()
        """Per-pool loops and per-account learned quotas (cloudpilot.closedloop)."""
        self.dirac = DiracLink(vanished_grace=self.settings.dirac_vanished_grace)
        """Pilot registration in DiracX and demand from it (pools with ``spec.dirac``)."""
        self.early_scale_ups = 0
        """Cycles whose creations went out beside their listing, not after it (for the
        tests and the benchmark: the early path is taken, not only allowed)."""

    @property
    def proxy_files(self) -> ProxyFileStore:
        """Where PROXY credentials are written (0600 files in a private directory)."""
        return self.caches.proxy_files

    def _state(self, pool: PoolRef) -> PoolState:
        return self.pools.setdefault(pool.uid, PoolState())

    # -- lifecycle --------------------------------------------------------------------------

    def forget(self, pool: PoolRef) -> None:
        """Drop the pool's record, and what the shared caches hold for it.

        Called under the pool's lock by teardown. A reconcile that was already waiting for
        the lock sees the deletionTimestamp and does nothing (see reconcile)."""
        self.pools.pop(pool.uid, None)
        redaction.forget_pool(pool.key)  # its user data and proxies, whichever were seen
        self.caches.release_pool(pool.uid, pool.key)
        self.closed_loop.forget(pool.uid)
        self.dirac.forget(pool.uid)

    # -- the cycle --------------------------------------------------------------------------

    async def reconcile(self, pool: PoolRef, body: Mapping[str, Any]) -> Outcome:
        """One cycle: gather, decide, act, and say what status to write and when to come back."""
        state = self._state(pool)
        async with state.lock:
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                # ``body`` is live: deletion was requested while this cycle waited for the
                # lock, and teardown (``finalize``) owns the pool now. Acting could create
                # VMs for a pool whose finalizer is about to go.
                return Outcome({}, [], self.settings.interval, state.memory)
            now = self._clock()
            # Each Secret read once for the whole cycle: what was assessed (an expired
            # proxy stops creations) is what the new VMs carry.
            secret = _cycle_secrets(pool.namespace, self.caches.read_secret)
            observation, listings = await self._observe(pool, body, state, now, secret)
            observation = await self._dirac_sync(pool, state, observation, now, secret)
            tuning = self.settings.tuning
            ground = decision.groundwork(observation, state.memory, now)
            # -- closed loop (cloudpilot.closedloop): how VMs ended, then what the loop
            # allows (holds, ramp-up, the account's learned quota), before the one decision.
            gates, loop_events = self._steer(pool, observation, ground, listings, now)
            if gates is not None:
                observation = replace(observation, gates=gates)
            # -- end closed loop
            chosen = decision.decide(observation, state.memory, now, tuning, ground=ground)
            results = await self._carry_out(
                pool, body, state, observation, chosen, listings, secret
            )
            loop = self.closed_loop.account_for(
                pool.uid,
                pool.key,
                observation.queues,
                observation.observed,
                decision.as_it_stands(chosen.plan, results),
                (*observation.early, *results.created),
                {*chosen.memory.deleting, *(i for i, e in results.deleted.items() if e is None)},
                observation.previous,
                now,
                loop_events,
            )
            outcome = decision.conclude(observation, chosen, results, now, tuning, loop)
            state.memory = outcome.memory
            state.last_look = decision.last_look(observation, now)
            return replace(
                outcome,
                events=_audited(pool, outcome.events),
                next_delay=min(outcome.next_delay, self._dirac_delay(pool, observation, now)),
                tick=_first_account_tick(observation.queues, listings),
            )

    async def _observe(
        self,
        pool: PoolRef,
        body: Mapping[str, Any],
        state: PoolState,
        now: datetime,
        secret: SecretGetter,
    ) -> tuple[Observation, dict[CloudAccount, _Listing]]:
        """Everything the cycle needs to know, in one place: the one way a pool's data
        enters a decision."""
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        previous = body.get("status") or {}
        try:
            spec = parse_spec(dict(body.get("spec") or {}))
            queues = effective_queues(spec, namespace=pool.namespace, pool_name=pool.name)
            # Unknown driver/createOptions keys, class paths not allowed: before any driver.
            check_queues(queues, self._driver_class)
            proxies = await load_queue_proxies(
                queues, namespace=pool.namespace, owner=pool.key, secret=secret
            )
        except (ValueError, ConfigError) as exc:
            message = describe_validation_error(exc)
            problem = mem.CloudError(mem.ErrorKind.CONFIG, errors.scrub(message))
            return Observation(generation, previous, problem=problem), {}
        queues = await self._dirac_demand(pool, spec, queues, secret, previous, now)
        report = assess(
            proxies,
            now=now,
            warn_margin=timedelta(seconds=self.settings.proxy_warn_margin),
            previous_status=previous,
        )
        memory = mem.for_generation(state.memory, generation)
        warm = decision.queues_to_prepare(queues, memory)
        # -- early scale-up: what the last look and memory decide goes out beside the listing.
        early = decision.early_scale_up(
            state.last_look,
            queues,
            spec,
            report,
            memory,
            now,
            self.settings.tuning,
            self.closed_loop.early_gates(pool.uid, queues, state.last_look, memory, now),
        )
        sent: list[CreateResult] = []

        async def create_early(gateways: Mapping[CloudAccount, CloudGateway | None]) -> None:
            if not leader.may_act() or any(g is None for g in gateways.values()):
                return
            try:
                await self._record_spec(pool, state, body.get("spec") or {}, previous)
            except Exception:
                return  # no record, no early VM: the cycle after the listing reports why
            self.early_scale_ups += 1
            _audited(pool, cycle_events.planned(early, ()))
            sent.extend(await self._create(pool, queues, early, gateways, secret))

        listings, fingerprints = await self._list_accounts(
            pool, queues, secret, proxies, warm, alongside=create_early if early else None
        )
        # -- end of the early scale-up
        accounts = tuple(
            AccountListing(
                account,
                listing.error,
                fingerprints.get(account),
                frozenset(n.id for n in listing.nodes),
            )
            for account, listing in listings.items()
        )
        observation = Observation(
            generation=generation,
            previous=previous,
            spec=spec,
            queues=tuple(queues),
            proxy=report,
            accounts=accounts,
            observed=tuple(self._observed(pool, queues, listings)),
            leading=leader.may_act(),
            jitter=random.random(),
            early=tuple(sent),
        )
        return observation, listings

    def _steer(
        self,
        pool: PoolRef,
        observation: Observation,
        ground: decision.Groundwork,
        listings: Mapping[CloudAccount, _Listing],
        now: datetime,
    ) -> tuple[dict[str, planner.QueueGate] | None, list[Event]]:
        """The closed loop's look at this cycle before anything is decided (None: no gates):
        the memory after observing and the VMs the plan deletes, which no gate changes."""
        if observation.problem is not None:
            return None, []
        listed = bool(observation.accounts) and all(a.error is None for a in observation.accounts)
        return self.closed_loop.steer(
            pool.uid,
            pool.key,
            observation.queues,
            observation.observed,
            ground.memory,
            _account_keys(observation.queues, listings),
            observation.previous,
            ground.deletions,
            now,
            listed=listed,
            nova=_nova_readings(observation.queues, listings),
        )

    async def _carry_out(
        self,
        pool: PoolRef,
        body: Mapping[str, Any],
        state: PoolState,
        observation: Observation,
        chosen: decision.Decision,
        listings: Mapping[CloudAccount, _Listing],
        secret: SecretGetter,
    ) -> Results:
        """Do what was decided: record the spec, delete, create; report what happened."""
        if not chosen.act:
            return Results()
        record_error: str | None = None
        if chosen.record_spec:
            try:
                await self._record_spec(pool, state, body.get("spec") or {}, observation.previous)
            except Exception as exc:
                record_error = errors.scrub(f"{type(exc).__name__}: {exc}")
        # The decision's audit lines once it is known what is sent (before the actions).
        _audited(pool, cycle_events.as_sent(chosen.audit, record_error))
        gateways = {a: listing.gateway for a, listing in listings.items()}
        deleted = await self._destroy(pool, chosen.by_account, gateways)
        creations = chosen.plan.creations if record_error is None else ()
        created = await self._create(pool, observation.queues, creations, gateways, secret)
        return Results(record_error, deleted, created)

    # -- DiracX (cloudpilot.dirac): the pool's hooks, nothing decided here ------------------

    async def _dirac_token(self, pool: PoolRef, spec: PoolSpec, secret: SecretGetter) -> str | None:
        """The pool's DiracX token, masked in logs from now on; None if it cannot be read
        (said in ``status.dirac.lastError``; VM management goes on without DiracX)."""
        assert spec.dirac is not None
        ref = spec.dirac.credentials_secret
        try:
            token = (await secret(ref.name))[ref.key].decode().strip()
        except Exception as exc:
            problem = f"no key {ref.key}" if isinstance(exc, KeyError) else type(exc).__name__
            self.dirac.note_error(
                pool.uid, f"cannot read the DiracX token (Secret {ref.name}): {problem}"
            )
            return None
        if not token:  # said, or pilots would wait unregistered with no reason shown
            self.dirac.note_error(
                pool.uid,
                f"cannot read the DiracX token (Secret {ref.name}): key {ref.key} is empty",
            )
            return None
        # Forgotten with the pool (redaction.forget_pool), as its user data and proxies are.
        redaction.register(redaction.pool_owner(pool.key, "dirac"), [token])
        return token

    async def _dirac_demand(
        self,
        pool: PoolRef,
        spec: PoolSpec,
        queues: list[QueueConfig],
        secret: SecretGetter,
        previous: Mapping[str, Any],
        now: datetime,
    ) -> list[QueueConfig]:
        """The pool's one queue with its replicas set by DiracX demand (``spec.replicas``
        is the ceiling); the queues unchanged without ``spec.dirac.demand``."""
        if spec.dirac is None or spec.dirac.demand is None or len(queues) != 1:
            return queues
        token = await self._dirac_token(pool, spec, secret)
        ceiling = queues[0].replicas
        target = await self.dirac.target(
            pool.uid, spec.dirac, token, ceiling=ceiling, previous_status=previous, now=now
        )
        return [replace(queues[0], replicas=target)]

    async def _dirac_sync(
        self,
        pool: PoolRef,
        state: PoolState,
        observation: Observation,
        now: datetime,
        secret: SecretGetter,
    ) -> Observation:
        """Tell DiracX about the pool's pilots as listed (and created, not listed yet), and
        put ``status.selector`` and ``status.dirac`` in the observation for the status."""
        extra: dict[str, Any] = {"selector": pool_selector(pool.name, pool.uid)}
        spec = observation.spec
        if spec is not None and spec.dirac is not None and observation.problem is None:
            await self.dirac.sync(
                pool.uid,
                spec.dirac,
                await self._dirac_token(pool, spec, secret),
                _with_pending(observation.observed, state.memory),
                ce=spec.ce,
                now=now,
                may_act=observation.leading,
                unlisted_queues=_unlisted_queues(observation),
                pool_key=pool.key,
                queues=frozenset(q.name for q in observation.queues),
            )
            extra["dirac"] = self.dirac.status(pool.uid, spec.dirac)
        return replace(observation, extra_status=extra)

    def _dirac_delay(self, pool: PoolRef, observation: Observation, now: datetime) -> float:
        spec = observation.spec
        due = self.dirac.next_attempt(pool.uid, spec.dirac, now) if spec and spec.dirac else None
        return self.settings.interval if due is None else due

    def _driver_class(self, cloud_type: str) -> type:
        """``cloudType`` resolved under this operator's allow-list of class paths."""
        return driver_class(cloud_type, self.settings.allowed_driver_classes)

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
        files = self.caches.proxy_files
        provider = None
        if proxy is not None:
            problem = unusable_proxy(proxy.pem)
            provider = (
                files.provider(pool.key, account.credentials_secret, proxy.source, proxy.pem)
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
            files.release(pool.key, account.credentials_secret)
        return credentials

    async def _list_accounts(
        self,
        pool: PoolRef,
        queues: Sequence[QueueConfig],
        secret: SecretGetter,
        proxies: Mapping[str, QueueProxy],
        warm: set[str] | frozenset[str] = frozenset(),
        alongside: Callable[[Mapping[CloudAccount, CloudGateway | None]], Awaitable[None]]
        | None = None,
    ) -> tuple[dict[CloudAccount, _Listing], dict[CloudAccount, str]]:
        """List every account the pool's queues use, once each (shared with other pools);
        with the fingerprint of the credentials each was listed with.

        ``warm``: queues that may create VMs this cycle. Their image, flavor and network
        lookups run beside the listing, so a new pool pays one round trip for both.
        ``alongside``: run beside the listings once every account has its gateway (None
        where its credentials failed): the early scale-up.
        """
        fingerprints: dict[CloudAccount, str] = {}

        async def connect(account: CloudAccount, queue: QueueConfig) -> _Listing:
            try:
                credentials = await self._credentials(
                    pool, account, queue, secret, proxies.get(queue.name)
                )
                gateway = self.caches.gateway(account, credentials)
                fingerprints[account] = credentials.fingerprint
            except Exception as exc:
                return _Listing(None, [], errors.classify(exc, "list"))
            return _Listing(gateway, [])

        async def one(account: CloudAccount, connected: _Listing) -> _Listing:
            gateway = connected.gateway
            if gateway is None:
                return connected
            try:
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
                return _Listing(None, [], errors.classify(exc, "list"))
            return _Listing(gateway, listing)

        accounts = decision.speakers(queues, proxies)
        gateways = await asyncio.gather(*(connect(a, q) for a, q in accounts.items()))
        listed = asyncio.gather(*(one(a, c) for a, c in zip(accounts, gateways, strict=True)))
        if alongside is None:
            results = await listed
        else:
            results, _ = await asyncio.gather(
                listed, alongside({a: c.gateway for a, c in zip(accounts, gateways, strict=True)})
            )
        return dict(zip(accounts, results, strict=True)), fingerprints

    # -- acting -----------------------------------------------------------------------------

    async def _destroy(
        self,
        pool: PoolRef,
        by_account: Mapping[CloudAccount, Sequence[planner.Deletion]],
        gateways: Mapping[CloudAccount, CloudGateway | None],
    ) -> dict[str, mem.CloudError | None]:
        """Destroy each account's share of the deletions; VM id -> None or why not."""
        grouped = [(gateways.get(a), ds) for a, ds in by_account.items()]
        outcomes = await asyncio.gather(
            *(gw.destroy([_listed(d.vm) for d in ds]) for gw, ds in grouped if gw is not None)
        )
        results: dict[str, mem.CloudError | None] = {}
        for outcome in outcomes:
            results.update(outcome)
        reasons = {d.vm.id: d for _, ds in grouped for d in ds}
        for vm_id, error in results.items():
            deletion = reasons[vm_id]
            if error is None:
                metrics.count_vms_deleted(pool.key, deletion.vm.queue, deletion.reason.value)
            else:
                metrics.count_vm_failures(pool.key, deletion.vm.queue, "destroy", error.kind.value)
        return results

    async def _create(
        self,
        pool: PoolRef,
        queues: Sequence[QueueConfig],
        creations: Sequence[planner.Creation],
        gateways: Mapping[CloudAccount, CloudGateway | None],
        secret: SecretGetter,
    ) -> tuple[CreateResult, ...]:
        by_name = {q.name: q for q in queues}

        async def one(creation: planner.Creation) -> CreateResult:
            queue = by_name[creation.queue]
            gateway = gateways[queue.account]
            assert gateway is not None
            try:
                user_data = await self._user_data(pool, queue, secret)
            except Exception as exc:
                return CreateResult(
                    queue.name, creation.count, error=errors.classify(exc, "render")
                )
            request = CreateRequest(
                queue=queue,
                count=creation.count,
                name=new_vm_name(queue_prefix(pool.namespace, pool.name, queue.name)),
                user_data=user_data,
                tags=vm_tags(pool.namespace, pool.name, queue.name, queue.ce),
                client_token=pysecrets.token_hex(12),
            )
            return await gateway.create(request)

        results = tuple(await asyncio.gather(*(one(c) for c in creations)))
        for result in results:
            if result.created:
                metrics.count_vms_created(pool.key, result.queue, len(result.created))
            if result.error is not None:
                metrics.count_vm_failures(pool.key, result.queue, "create", result.error.kind.value)
        return results

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
        redaction.register(
            redaction.pool_owner(pool.key, f"userdata:{queue.name}"), rendered.secret_values
        )
        return rendered.payload

    # -- teardown ---------------------------------------------------------------------------

    async def _record_spec(
        self, pool: PoolRef, state: PoolState, spec: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        """Record ``spec`` in ``status.teardownSpec`` before it is first acted on.

        The write must succeed before any VM is created with the spec (a failure raises and
        the cycle creates nothing): that is what lets a deletion tell a pool that never had
        a VM from one whose VMs it must find (see :mod:`cloudpilot.teardown`). One write per
        usable spec change; a JSON string, so that a merge patch replaces it whole.
        """
        compact = _spec_json(spec)
        if state.recorded_spec == compact:
            return
        if self._write_status is not None and previous.get("teardownSpec") != compact:
            await self._write_status(pool, {"teardownSpec": compact})
        state.recorded_spec = compact

    async def finalize(self, pool: PoolRef, body: Mapping[str, Any]) -> TeardownOutcome:
        """One attempt at deleting a pool: destroy its VMs (policy Delete), or say why not.

        The decisions (which spec, release or wait, what status and events, how long) are
        :mod:`cloudpilot.teardown`'s; this only lists, destroys and reports.
        """
        state = self._state(pool)
        async with state.lock:
            status = body.get("status") or {}
            raw_spec = dict(body.get("spec") or {})
            current, current_error = _parse(pool, raw_spec)
            recorded_json = state.recorded_spec or status.get("teardownSpec")
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
                attempt = await self._teardown_attempt(pool, state, recorded[1], events)
            elif source is teardown.Source.CURRENT and current is not None:
                attempt = await self._teardown_attempt(pool, state, current[1], events)
            verdict = teardown.decide(
                facts,
                source,
                attempt,
                state.teardown,
                previous_conditions=status.get("conditions") or (),
                initial_delay=self.settings.converging_interval,
                progress_delay=min(TEARDOWN_PROGRESS_RETRY, self.settings.converging_interval),
                jitter=random.random(),
            )
            events += [Event(n.type, n.reason, n.message) for n in verdict.events]
            events = _audited(pool, events)
            if verdict.release:
                self.forget(pool)
                if not any(e.reason in (Reason.RELEASED, Reason.ORPHANED) for e in events):
                    audit.record(
                        pool.namespace, pool.name, Reason.RELEASED, "finalizer removed: no VM left"
                    )
                return TeardownOutcome(release=True, events=events)
            state.teardown = verdict.state
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
        self, pool: PoolRef, state: PoolState, queues: Sequence[QueueConfig], events: list[Event]
    ) -> teardown.Attempt:
        """List, destroy what is listed, list again: how many VMs remain, or what failed."""
        listings, observed, error = await self._owned(pool, queues)
        if error is not None:
            return teardown.Attempt(error=error)
        now = self._clock()
        memory = mem.observe(state.memory, (vm.id for vm in observed), now)
        doomed = planner.plan_teardown(observed, memory)
        if doomed:
            _audited(pool, cycle_events.planned((), doomed))
            obs = Observation(
                0,
                {},
                queues=tuple(queues),
                accounts=tuple(
                    AccountListing(a, listed_ids=frozenset(n.id for n in lst.nodes))
                    for a, lst in listings.items()
                ),
            )
            gateways = {a: listing.gateway for a, listing in listings.items()}
            results = await self._destroy(pool, decision.by_account(doomed, obs), gateways)
            memory = mem.record_deleting(memory, [i for i, e in results.items() if e is None], now)
            events += _audited(pool, deletion_events(doomed, results))
        state.memory = memory
        if doomed:
            # Most clouds drop a destroyed VM from the listing at once: look again rather
            # than make the user wait a retry for nothing.
            _, observed, error = await self._owned(pool, queues)
            if error is not None:
                return teardown.Attempt(error=error)
        return teardown.Attempt(remaining=len(observed))

    async def _owned(
        self, pool: PoolRef, queues: Sequence[QueueConfig]
    ) -> tuple[dict[CloudAccount, _Listing], list[ObservedVM], mem.CloudError | None]:
        """List every account of the pool (teardown): the pool's VMs, or the first failure."""
        secret = _cycle_secrets(pool.namespace, self.caches.read_secret)
        try:
            proxies = await load_queue_proxies(
                queues, namespace=pool.namespace, owner=pool.key, secret=secret
            )
        except ConfigError as exc:
            return {}, [], mem.CloudError(mem.ErrorKind.CONFIG, errors.scrub(str(exc)), "list")
        except Exception as exc:
            return {}, [], errors.classify(exc, "list")
        listings, _ = await self._list_accounts(pool, queues, secret, proxies)
        failed = [v.error for v in listings.values() if v.error is not None]
        if failed:
            return listings, [], failed[0]
        return listings, self._observed(pool, queues, listings), None

    @staticmethod
    def _observed(
        pool: PoolRef, queues: Sequence[QueueConfig], listings: Mapping[CloudAccount, _Listing]
    ) -> list[ObservedVM]:
        observed: list[ObservedVM] = []
        for account, listing in listings.items():
            if listing.gateway is None:
                continue
            observed += owned_vms(
                listing.nodes,
                namespace=pool.namespace,
                pool=pool.name,
                queues=[q for q in queues if q.account == account],
                tags_supported=listing.gateway.tags_supported,
            )
        return observed


def _with_pending(observed: Sequence[ObservedVM], memory: mem.PoolMemory) -> list[ObservedVM]:
    """Listed VMs and those created but not listed yet: every pilot the pool started."""
    listed = {vm.id for vm in observed}
    return [*observed, *(vm for vm in mem.pending_as_observed(memory) if vm.id not in listed)]


def _unlisted_queues(observation: Observation) -> frozenset[str]:
    """Queues whose account could not be listed: their VMs' absence says nothing."""
    failed = {a.account for a in observation.accounts if a.error is not None}
    return frozenset(q.name for q in observation.queues if q.account in failed)


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


def _listed(vm: ObservedVM) -> ListedNode:
    return ListedNode(id=vm.id, name=vm.name, state=vm.cloud_state, created_at=vm.created_at)


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


def _first_account_tick(
    queues: Sequence[QueueConfig], listings: Mapping[CloudAccount, _Listing]
) -> Tick | None:
    """The ticks a quiet pool comes due on: those of its first queue's account (one account
    per pool decides; cloudpilot.account_tick). None when that account had no gateway."""
    listing = listings.get(queues[0].account) if queues else None
    if listing is None or listing.gateway is None:
        return None
    return listing.gateway.listing.tick


def _account_keys(
    queues: Sequence[QueueConfig], listings: Mapping[CloudAccount, _Listing]
) -> dict[str, str]:
    """Queue -> the cloud account it runs on, as the closed loop keys learned quotas: the
    endpoint and the credentials' fingerprint (pools on one account share its quota)."""
    keys: dict[str, str] = {}
    for q in queues:
        listing = listings.get(q.account)
        if listing is not None and listing.gateway is not None:
            keys[q.name] = f"{q.account.endpoint}|{listing.gateway.credentials.fingerprint}"
    return keys


def _nova_readings(
    queues: Sequence[QueueConfig], listings: Mapping[CloudAccount, _Listing]
) -> dict[str, NovaReading]:
    """Account key -> Nova's limits read beside its listing, with its queues' flavors
    (OpenStack accounts listed this cycle; see cloudpilot.nova_quota)."""
    keys = _account_keys(queues, listings)
    readings: dict[str, NovaReading] = {}
    for q in queues:
        listing = listings.get(q.account)
        gateway = listing.gateway if listing is not None else None
        if gateway is None or gateway.nova_headroom is None or q.name not in keys:
            continue
        flavor = Flavor(*gateway.flavor_size(q))
        known = readings.get(keys[q.name])
        flavors = (*known.flavors, flavor) if known else (flavor,)
        readings[keys[q.name]] = NovaReading(gateway.nova_headroom, flavors)
    return readings
