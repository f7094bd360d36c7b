"""The pools' link to DiracX between cycles: pilots to register, demand, errors.

The reconciler calls :meth:`DiracLink.target` before planning (how many pilots demand asks
for) and :meth:`DiracLink.sync` after acting (register the pilots it started, send the
statuses of the others). The decisions are :mod:`.registration`'s and :mod:`.demand`'s;
this holds their state, talks through :mod:`.client`, and bounds the work:

* at most ``max_concurrency`` requests in flight per DiracX endpoint, across all pools
  (200 new VMs are 200 registrations: they queue, they do not stampede);
* at most ``budget`` seconds of DiracX per pool per cycle: whatever is left is done next
  cycle, so a slow or unreachable DiracX never holds up VM management;
* each pilot that failed waits its own back-off; the others carry on;
* pilots whose VM vanished while no operator watched (:mod:`.vanished`) are looked for
  in DiracX at the first complete listing of a leadership term, then every
  ``sweep_interval``: one paged search per pool, through the same request slots, within
  its own ``budget``.

Nothing raises: every failure becomes ``status.dirac.lastError`` (masked) and a retry.
State lives in memory only. After a restart the pilots of listed VMs are registered again
(409: already there) and their statuses re-sent, the sweep ends those of vanished VMs;
the demand target restarts from the one the pool's status recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cloudpilot import constants
from cloudpilot.dirac import demand as dm
from cloudpilot.dirac import registration as reg
from cloudpilot.dirac import vanished as vn
from cloudpilot.dirac.client import DiracClient, DiracError
from cloudpilot.models.spec import DiracSpec
from cloudpilot.models.vms import ObservedVM

UPDATE_BATCH = 100
"""Pilots per ``PATCH /api/pilots/metadata``: one request, not one per pilot, but bounded."""

logger = logging.getLogger(__name__)


@dataclass
class _PoolState:
    pilots: dict[str, reg.Pilot] = field(default_factory=dict)
    demand: dm.DemandState | None = None
    demand_tried_at: datetime | None = None
    demand_error: str | None = None
    sync_error: str | None = None
    endpoint_key: tuple[str, str] | None = None
    """The endpoint and token digest of the last sync: a change clears the back-off."""
    client_key: tuple[str, str] | None = None
    """The endpoint and token digest of the client the pool uses (kept while one does)."""
    sweep_due: datetime | None = None
    """When the next sweep for vanished VMs' pilots is due; None: at the next complete
    listing (a new process, or a new leadership term)."""
    sweep_error: str | None = None


def _status_timestamp(moment: datetime) -> str:
    from cloudpilot.status import timestamp

    return timestamp(moment)


class DiracLink:
    def __init__(
        self,
        *,
        max_concurrency: int = 8,
        max_registrations: int = 200,
        budget: float = 15.0,
        vanished_grace: float = constants.DEFAULT_DIRAC_VANISHED_GRACE,
        sweep_interval: float = constants.DIRAC_SWEEP_INTERVAL,
        client_factory: Callable[[str, str], DiracClient] = DiracClient,
    ) -> None:
        self._max_concurrency = max_concurrency
        self._max_registrations = max_registrations
        self._budget = budget
        self._grace = timedelta(seconds=vanished_grace)
        self._sweep_interval = timedelta(seconds=sweep_interval)
        self._client_factory = client_factory
        self._pools: dict[str, _PoolState] = {}
        self._clients: dict[tuple[str, str], DiracClient] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._retired: list[DiracClient] = []
        self._closing: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def forget(self, pool_uid: str) -> None:
        """Drop a deleted pool; the HTTP client and semaphore of an endpoint (and token) no
        other pool uses go with it (closed in the background: teardown is not async)."""
        self._pools.pop(pool_uid, None)
        self._evict()

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._retired]:
            await client.close()
        self._clients.clear()
        self._retired.clear()
        self._limits.clear()
        await asyncio.gather(*self._closing)

    @property
    def endpoints(self) -> frozenset[str]:
        """The endpoints this link holds a client or a semaphore for."""
        return frozenset({key[0] for key in self._clients} | set(self._limits))

    async def _client(self, state: _PoolState, spec: DiracSpec, token: str) -> DiracClient:
        # Keyed by a digest of the token, never the token: one client per endpoint and
        # token, shared by the pools using both. Pools of several VOs on one DiracX have
        # a token each: one pool's client is never closed under another's requests.
        key = (spec.endpoint, _digest(token))
        if state.client_key != key:
            state.client_key = key
            self._evict()  # a rotated token or a moved endpoint: the old client may go
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._client_factory(spec.endpoint, token)
        return client

    def _evict(self) -> None:
        """Close the clients and drop the semaphores no pool uses any more."""
        used = {s.client_key for s in self._pools.values() if s.client_key is not None}
        for key in [k for k in self._clients if k not in used]:
            self._retire(self._clients.pop(key))
        endpoints = {key[0] for key in used}
        for endpoint in [e for e in self._limits if e not in endpoints]:
            del self._limits[endpoint]

    def _retire(self, client: DiracClient) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): close() closes it
            self._retired.append(client)
            return
        task = loop.create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _limit(self, endpoint: str) -> asyncio.Semaphore:
        return self._limits.setdefault(endpoint, asyncio.Semaphore(self._max_concurrency))

    def note_error(self, pool_uid: str, message: str) -> None:
        """A problem before any DiracX call (the token Secret): shown as lastError."""
        state = self._pools.setdefault(pool_uid, _PoolState())
        state.sync_error = message
        state.demand_error = message

    # -- demand ------------------------------------------------------------------------

    async def target(
        self,
        pool_uid: str,
        spec: DiracSpec,
        token: str | None,
        *,
        ceiling: int,
        previous_status: Mapping[str, Any],
        now: datetime,
    ) -> int:
        """The replicas demand asks for (``spec.dirac.demand`` must be set)."""
        assert spec.demand is not None
        state = self._pools.setdefault(pool_uid, _PoolState())
        if state.demand is None:
            state.demand = dm.seeded(previous_status)
        policy = _policy(spec, ceiling)
        interval = timedelta(seconds=spec.demand.interval_seconds)
        tried = state.demand_tried_at
        if tried is None or now - tried >= interval:
            state.demand_tried_at = now
            if token is None:
                pass  # note_error said why
            else:
                try:  # the wait for a slot counts: other pools may hold them all
                    async with asyncio.timeout(self._budget), self._limit(spec.endpoint):
                        rows = await (await self._client(state, spec, token)).job_summary(
                            _filters(spec)
                        )
                except (DiracError, TimeoutError) as exc:
                    state.demand_error = str(exc) or "DiracX job summary timed out"
                else:
                    state.demand = dm.after_read(state.demand, dm.summary_count(rows), now, policy)
                    state.demand_error = None
        return dm.current_target(state.demand, policy)

    # -- registration ------------------------------------------------------------------

    async def sync(
        self,
        pool_uid: str,
        spec: DiracSpec,
        token: str | None,
        vms: Iterable[ObservedVM],
        *,
        ce: str,
        now: datetime,
        may_act: bool = True,
        unlisted_queues: Collection[str] = frozenset(),
        pool_key: str | None = None,
        queues: Collection[str] = frozenset(),
    ) -> None:
        """Bring DiracX's view of the pool's pilots up to date, as far as one budget goes.

        ``unlisted_queues``: queues whose cloud account could not be listed this cycle
        (their pilots are not taken for ended; see :func:`.registration.observe`).
        ``pool_key`` (``namespace/name``) and ``queues`` (the spec's queue names): the
        pool's mark on its pilots, and what a sweep for vanished VMs looks for; no sweep
        without them."""
        state = self._pools.setdefault(pool_uid, _PoolState())
        vms = list(vms)
        state.pilots = reg.observe(state.pilots, vms, unlisted_queues, now=now)
        if not may_act:
            state.sweep_due = None  # whoever leads next sweeps at its first complete listing
        if not spec.register_pilots or not may_act:
            state.sync_error = None if token is not None else state.sync_error
            return
        if token is None:
            return  # note_error said why
        client = await self._client(state, spec, token)
        key = (spec.endpoint, _digest(token))
        if state.endpoint_key not in (None, key):
            # A fixed endpoint or a rotated token: retry now, not after the old back-off.
            state.pilots = {k: replace(p, retry_at=None) for k, p in state.pilots.items()}
        state.endpoint_key = key
        limit = self._limit(spec.endpoint)
        errors: list[str] = []

        async def register(pilot: reg.Pilot) -> None:
            try:
                async with limit:
                    await client.register_pilot(
                        stamp=pilot.stamp,
                        vo=spec.vo,
                        grid_type=spec.grid_type,
                        grid_site=spec.site,
                        destination=ce,
                        reference=pilot.reference,
                    )
            except DiracError as exc:
                errors.append(str(exc))
                state.pilots[pilot.vm_id] = reg.failed(pilot, now)
            else:
                # Registered as Submitted; the queue and the real status follow in a PATCH.
                state.pilots[pilot.vm_id] = replace(reg.registered(pilot), reported=None)

        owner = vn.owner_mark(pool_key) if pool_key is not None else None

        async def update(batch: list[reg.Pilot]) -> None:
            body: dict[str, dict[str, str]] = {
                p.stamp: {"Status": p.wanted.value, "Queue": p.queue} for p in batch
            }
            if owner is not None:  # the mark a sweep tells the pool's pilots by
                body = {stamp: {**fields, "StatusReason": owner} for stamp, fields in body.items()}
            try:
                async with limit:
                    await client.update_pilots(body)
            except DiracError as exc:
                errors.append(str(exc))
                for p in batch:
                    # 404: DiracX lost (some of) them: register again (409 if it has them).
                    p = replace(p, registered=False) if exc.status == 404 else p
                    state.pilots[p.vm_id] = reg.failed(p, now)
            else:
                for p in batch:
                    state.pilots[p.vm_id] = reg.reported(p)

        spent = False
        try:
            async with asyncio.timeout(self._budget):
                first = reg.plan(state.pilots, now, self._max_registrations)
                await asyncio.gather(*(register(p) for p in first.register))
                second = reg.plan(state.pilots, now, 0)
                batches = [
                    list(second.update[i : i + UPDATE_BATCH])
                    for i in range(0, len(second.update), UPDATE_BATCH)
                ]
                await asyncio.gather(*(update(b) for b in batches))
        except TimeoutError:
            spent = True
            errors.append(f"DiracX did not answer within {self._budget:.0f} s; continuing later")
            # What the budget did not reach waits its back-off like a failure: without it
            # the pool came back after 1 s and spent its budget (and a cloud listing)
            # again, every cycle, for as long as DiracX hung.
            late = reg.plan(state.pilots, now, self._max_registrations)
            for p in (*late.register, *late.update):
                state.pilots[p.vm_id] = reg.failed(p, now)
        state.sync_error = errors[0] if errors else None
        sweep_due = state.sweep_due is None or state.sweep_due <= now
        # Not after a spent budget: a DiracX that hangs gets one budget per cycle, not two.
        if owner is not None and not unlisted_queues and sweep_due and not spent:
            pool = vn.PoolPilots(spec.vo, spec.site, ce, frozenset(queues), owner)
            await self._sweep(state, client, limit, pool, {vm.id for vm in vms}, now)

    async def _sweep(
        self,
        state: _PoolState,
        client: DiracClient,
        limit: asyncio.Semaphore,
        pool: vn.PoolPilots,
        present: set[str],
        now: datetime,
    ) -> None:
        """End the pilots DiracX takes for alive whose VM vanished unwatched
        (:func:`.vanished.vanished` decides which): one paged search, then ``Deleted`` in
        batches, all within one budget. A failure is retried after ``DIRAC_SWEEP_RETRY``."""
        tracked = {p.stamp for p in state.pilots.values()}
        retry = timedelta(seconds=constants.DIRAC_SWEEP_RETRY)
        try:
            async with asyncio.timeout(self._budget):
                rows = await client.search_pilots(
                    vn.search_filters(pool), parameters=vn.SEARCH_PARAMETERS, slot=limit
                )
                found = vn.vanished(
                    rows,
                    pool,
                    present=present,
                    tracked=tracked,
                    complete=True,
                    now=now,
                    grace=self._grace,
                )
                ended = {"Status": reg.PilotStatus.DELETED.value, "StatusReason": pool.owner}
                for i in range(0, len(found.stale), UPDATE_BATCH):
                    async with limit:
                        await client.update_pilots(
                            {s: ended for s in found.stale[i : i + UPDATE_BATCH]}
                        )
        except (DiracError, TimeoutError) as exc:
            state.sweep_error = str(exc) or f"DiracX pilot sweep took over {self._budget:.0f} s"
            state.sweep_due = vn.next_sweep(now, self._sweep_interval, None, retry)
            return
        if found.stale:
            logger.info(
                "marked %d pilots Deleted in DiracX whose VMs vanished unwatched (%s)",
                len(found.stale),
                pool.owner,
            )
        state.sweep_error = None
        state.sweep_due = vn.next_sweep(now, self._sweep_interval, found, retry)

    # -- reporting ---------------------------------------------------------------------

    def status(self, pool_uid: str, spec: DiracSpec) -> dict[str, Any]:
        """``status.dirac``: what DiracX holds of the pool's pilots, and the demand."""
        state = self._pools.get(pool_uid, _PoolState())
        live = [p for p in state.pilots.values() if p.wanted not in reg.FINAL]
        block: dict[str, Any] = {
            "registeredPilots": sum(1 for p in live if p.registered),
            "unregisteredPilots": sum(1 for p in live if not p.registered)
            if spec.register_pilots
            else 0,
        }
        if state.sync_error or state.sweep_error:
            block["lastError"] = state.sync_error or state.sweep_error
        if spec.demand is not None and state.demand is not None:
            demand: dict[str, Any] = {}
            if state.demand.jobs is not None:
                demand["waitingJobs"] = state.demand.jobs
            if state.demand.read_at is not None:
                demand["readAt"] = _status_timestamp(state.demand.read_at)
            if state.demand.target is not None:
                demand["target"] = state.demand.target
            if state.demand_error:
                demand["lastError"] = state.demand_error
            block["demand"] = demand
        return block

    def next_attempt(self, pool_uid: str, spec: DiracSpec, now: datetime) -> float | None:
        """Seconds until this pool has DiracX work due (a retry, a demand read), if any."""
        state = self._pools.get(pool_uid)
        if state is None:
            return None
        moments = [p.retry_at or now for p in state.pilots.values() if _pending(p)]
        if spec.demand is not None and state.demand_tried_at is not None:
            moments.append(state.demand_tried_at + timedelta(seconds=spec.demand.interval_seconds))
        if not moments:
            return None
        return max((min(moments) - now).total_seconds(), 1.0)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _pending(pilot: reg.Pilot) -> bool:
    return not pilot.registered or pilot.reported != pilot.wanted


def _policy(spec: DiracSpec, ceiling: int) -> dm.DemandPolicy:
    assert spec.demand is not None
    return dm.DemandPolicy(
        minimum=spec.demand.min_replicas,
        ceiling=ceiling,
        pilots_per_job=spec.demand.pilots_per_job,
        max_step=spec.demand.max_scale_up_step,
        scale_down_delay=timedelta(seconds=spec.demand.scale_down_delay_seconds),
    )


def _filters(spec: DiracSpec) -> list[dict[str, Any]]:
    assert spec.demand is not None
    d = spec.demand
    return dm.job_filters(
        vo=spec.vo,
        statuses=d.job_statuses,
        sites=d.sites,
        job_types=d.job_types,
        job_groups=d.job_groups,
        owners=d.owners,
    )
