"""Leader election on a ``coordination.k8s.io/v1`` Lease: one active operator per lease.

Why: kopf's peering pauses only operators of *equal* priority and is advisory; two CloudPilot
replicas (a rolling update, a second Helm release, a developer's laptop pointed at the
cluster) that both reconcile a pool would both see "2 VMs missing" and both create them.
So every replica runs as a candidate, and only the holder of the Lease runs the operator
(kopf, the pool scheduler, every cloud call); the others are warm standbys that take over
when the lease expires.

The algorithm is client-go's (``k8s.io/client-go/tools/leaderelection``), which every
Kubernetes controller manager uses:

* **Acquire**: read the Lease; if nobody holds it, or the holder has not renewed it for
  ``leaseDurationSeconds`` *as measured on this replica's monotonic clock since it last saw
  the record change*, write it with our identity. The write carries the read
  ``resourceVersion``, so of two candidates racing for it the API server lets exactly one
  win (the other gets 409 Conflict). No wall clocks are compared across machines:
  ``renewTime`` is written for humans and ``kubectl``, never trusted for expiry.
* **Renew** every ``retry_period``. A renewal counts from the moment its request was *sent*.
* **Fencing**: if no renewal succeeded for ``renew_deadline`` seconds (less than the lease
  duration), the leader stops acting: it tells the work to stop, cancels it if it does not
  stop within ``stop_timeout``, and only then goes back to being a candidate. A standby
  cannot take the lease before ``lease_seconds`` after it last saw a renewal, which is after
  that renewal was sent; so the old leader has stopped before the new one may start, as long
  as ``renew_deadline + stop_timeout <= lease_seconds`` (checked by :class:`LeaseConfig`).
* **Release** on a clean stop: the lease is handed back (empty holder) so a standby takes
  over at its next retry rather than after a full lease duration.

The limit of any lease-based scheme: a cloud API call already on the wire when the deadline
passes still completes (libcloud calls cannot be recalled). The new leader lists the cloud
before acting, so it sees such a VM unless the cloud is eventually consistent for longer than
the gap; CloudPilot's ownership tags make any surplus VM visible and deletable.

Standbys have no kopf and hence no kopf liveness endpoint; :func:`run_with_leader_election`
can serve a minimal ``/healthz`` on the same port while standing by, and frees the port
before the work (kopf) starts and binds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cloudpilot.kube import client
from cloudpilot.settings import ElectionSettings

__all__ = [
    "ElectionSettings",
    "KubernetesLeaseAPI",
    "LeaderElector",
    "LeadershipLost",
    "LeaseAPI",
    "LeaseConfig",
    "LeaseConflict",
    "default_identity",
    "may_act",
    "run_with_leader_election",
]

logger = logging.getLogger(__name__)

Work = Callable[[asyncio.Event], Awaitable[None]]


class LeaseConflict(Exception):
    """The lease was created or changed by someone else since we read it (409)."""


class LeadershipLost(RuntimeError):
    """Raised by :meth:`LeaderElector.run` with ``rejoin=False`` after the work was stopped
    because the lease could not be renewed in time."""


@dataclass(frozen=True)
class LeaseConfig:
    """Where the lease lives and its timing (client-go's defaults scaled for VM creation).

    ``lease_seconds`` is what the Lease object says (an integer on the API);
    ``renew_deadline`` is how long a leader keeps acting without a successful renewal;
    ``retry_period`` is how often leaders renew and standbys retry; ``stop_timeout`` is how
    long the work is given to stop after the deadline before it is cancelled.
    """

    namespace: str
    name: str
    identity: str
    lease_seconds: int = 30
    renew_deadline: float = 20.0
    retry_period: float = 4.0
    stop_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.lease_seconds < 1 or int(self.lease_seconds) != self.lease_seconds:
            raise ValueError("lease_seconds must be a positive whole number (the API's unit)")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_seconds:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_seconds")
        if self.effective_stop_timeout < 0 or (
            self.renew_deadline + self.effective_stop_timeout > self.lease_seconds
        ):
            raise ValueError("renew_deadline + stop_timeout must not exceed lease_seconds")
        if not self.identity:
            raise ValueError("an identity is required")

    @property
    def effective_stop_timeout(self) -> float:
        """By default, the whole margin between the deadline and the lease's expiry."""
        if self.stop_timeout is not None:
            return self.stop_timeout
        return self.lease_seconds - self.renew_deadline


class LeaseAPI(Protocol):
    """The three calls leader election makes (and so the RBAC verbs it needs: get, create,
    update on ``coordination.k8s.io`` leases). Objects are plain JSON dicts."""

    async def read(self, namespace: str, name: str, limit: float) -> dict[str, Any] | None:
        """The Lease, or ``None`` if it does not exist."""

    async def create(self, namespace: str, body: dict[str, Any], limit: float) -> dict[str, Any]:
        """Raise :class:`LeaseConflict` if it exists already."""

    async def replace(
        self, namespace: str, name: str, body: dict[str, Any], limit: float
    ) -> dict[str, Any]:
        """Raise :class:`LeaseConflict` if ``body``'s resourceVersion is not the latest."""


class KubernetesLeaseAPI:
    """:class:`LeaseAPI` through the operator's client (:mod:`cloudpilot.kube.client`).

    Each call has the client's strict timeout, set to what is left of the renewal's
    deadline, so a hung connection cannot hold a renewal past it (the elector also stops
    waiting for the attempt at the deadline, which cancels the request).
    """

    def __init__(self, kube: client.KubeApi) -> None:
        self._kube = kube

    async def read(self, namespace: str, name: str, limit: float) -> dict[str, Any] | None:
        try:
            return await self._kube.read_lease(namespace, name, limit=max(limit, 0.1))
        except client.ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, namespace: str, body: dict[str, Any], limit: float) -> dict[str, Any]:
        try:
            return await self._kube.create_lease(namespace, body, limit=max(limit, 0.1))
        except client.ApiError as exc:
            if exc.status == 409:
                raise LeaseConflict(exc.reason) from None
            if exc.status == 404:
                raise LookupError(
                    f"namespace {namespace!r} not found for the leader Lease"
                ) from None
            raise

    async def replace(
        self, namespace: str, name: str, body: dict[str, Any], limit: float
    ) -> dict[str, Any]:
        try:
            return await self._kube.replace_lease(namespace, name, body, limit=max(limit, 0.1))
        except client.ApiError as exc:
            if exc.status == 409:
                raise LeaseConflict(exc.reason) from None
            if exc.status == 404:  # deleted under us: the next attempt creates it again
                raise LeaseConflict("the lease was deleted") from None
            raise


def default_identity() -> str:
    """``<pod name>_<random>``: unique per process even if a pod name is reused, and
    readable in ``kubectl get lease -o yaml`` (the pod name comes from ``POD_NAME`` via the
    downward API, else the host name)."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{random.getrandbits(32):08x}"


def _micro_time(moment: datetime) -> str:
    """The API's MicroTime format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies one renewal: any change means the holder is alive."""
    spec = lease.get("spec") or {}
    return (
        spec.get("holderIdentity"),
        spec.get("renewTime"),
        spec.get("acquireTime"),
        spec.get("leaseTransitions"),
        spec.get("leaseDurationSeconds"),
    )


class LeaderElector:
    """One candidate for one Lease. Use :meth:`run` (or :func:`run_with_leader_election`)."""

    def __init__(
        self,
        config: LeaseConfig,
        api: LeaseAPI | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_leadership: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self._api = api
        self._clock = clock
        self._on_leadership = on_leadership
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # when the last successful write was *sent*
        self._lease: dict[str, Any] | None = None

    @property
    def api(self) -> LeaseAPI:
        if self._api is None:
            self._api = KubernetesLeaseAPI(client.current())
        return self._api

    # -- state ---------------------------------------------------------------------------------

    def is_leading(self) -> bool:
        """True while the last successful renewal is younger than the renew deadline.

        Cheap and synchronous: code about to do something only the leader may do (create a
        VM) can check it right before acting, on top of the work being stopped on loss.
        """
        return (
            self._renewed_at is not None
            and self._clock() < self._renewed_at + self.config.renew_deadline
        )

    def _remaining(self) -> float:
        assert self._renewed_at is not None
        return self._renewed_at + self.config.renew_deadline - self._clock()

    def _notify(self, leading: bool) -> None:
        if self._on_leadership is not None:
            try:
                self._on_leadership(leading)
            except Exception:
                logger.exception("the leadership callback failed")

    # -- one attempt ---------------------------------------------------------------------------

    async def _write_attempt(self, limit: float) -> dict[str, Any] | None:
        """Read the lease and write it with us as holder if we may; the written lease or
        None. Touches no leadership state, so an attempt cancelled at its deadline (its
        write may still have reached the server) cannot make this replica believe it
        leads."""
        cfg = self.config
        now = datetime.now(UTC)
        lease = await self.api.read(cfg.namespace, cfg.name, limit)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": cfg.name,
                    "namespace": cfg.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "cloudpilot"},
                },
                "spec": {
                    "holderIdentity": cfg.identity,
                    "leaseDurationSeconds": int(cfg.lease_seconds),
                    "acquireTime": _micro_time(now),
                    "renewTime": _micro_time(now),
                    "leaseTransitions": 0,
                },
            }
            try:
                return await self.api.create(cfg.namespace, body, limit)
            except LeaseConflict:
                return None

        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_seconds)
        if holder and holder != cfg.identity and self._clock() < self._observed_at + duration:
            return None  # held by a live leader

        ours = holder == cfg.identity
        new_spec = dict(spec)
        new_spec.update(
            holderIdentity=cfg.identity,
            leaseDurationSeconds=int(cfg.lease_seconds),
            renewTime=_micro_time(now),
        )
        if not ours:
            new_spec["acquireTime"] = _micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            return await self.api.replace(
                cfg.namespace, cfg.name, {**lease, "spec": new_spec}, limit
            )
        except LeaseConflict:
            return None

    def _observe(self, lease: dict[str, Any]) -> None:
        """Note when the record last changed, on our own clock (the expiry reference)."""
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()

    @property
    def holder(self) -> str:
        """The holder in the last lease we read or wrote ("" if none)."""
        return str(self._observed[0] or "") if self._observed else ""

    def _took(self, lease: dict[str, Any], sent: float) -> None:
        self._lease = lease
        self._observe(lease)
        self._renewed_at = sent

    async def release(self, limit: float) -> bool:
        """Hand the lease back if we still hold it (a clean stop): empty holder, 1 s."""
        lease = self._lease
        self._renewed_at = None
        if lease is None:
            return False
        self._lease = None
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.config.identity:
            return False
        spec.update(
            holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time(datetime.now(UTC))
        )
        try:
            await self.api.replace(
                self.config.namespace, self.config.name, {**lease, "spec": spec}, limit
            )
        except LeaseConflict:
            return False  # someone took it meanwhile: nothing to give back
        return True

    # -- the loop ------------------------------------------------------------------------------

    async def _attempt(self, limit: float) -> bool:
        """One attempt, cancelled after ``limit`` s.

        Leadership state is updated here, in the event loop, and only for an attempt that
        answered in time; a renewal counts from before its request was sent."""
        sent = self._clock()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
            # that arrives as the inner call completes, and the elector then never stops.
            async with asyncio.timeout(limit):
                written = await self._write_attempt(limit)
        except TimeoutError:
            logger.warning(
                "leader lease %s/%s: no answer within %.1fs",
                self.config.namespace,
                self.config.name,
                limit,
            )
            return False
        except Exception as exc:
            logger.warning(
                "leader lease %s/%s: %s: %s",
                self.config.namespace,
                self.config.name,
                type(exc).__name__,
                exc,
            )
            return False
        if written is None:
            return False
        self._took(written, sent)
        return True

    async def _wait(self, seconds: float, *events: asyncio.Event) -> None:
        """Sleep up to ``seconds``, ending early when any event is set."""
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0.0))
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def acquire(self, stop_flag: asyncio.Event) -> bool:
        """Stand by until we hold the lease (True) or ``stop_flag`` is set (False)."""
        cfg = self.config
        while not stop_flag.is_set():
            if await self._attempt(limit=cfg.retry_period):
                logger.info(
                    "leader lease %s/%s acquired by %s", cfg.namespace, cfg.name, cfg.identity
                )
                return True
            # Jitter keeps standbys from hammering the API in lockstep.
            await self._wait(cfg.retry_period * (1 + 0.2 * random.random()), stop_flag)
        return False

    async def run(self, work: Work, stop_flag: asyncio.Event, *, rejoin: bool = True) -> None:
        """Stand by, lead (running ``work``) while the lease is held, repeat; until stopped.

        ``work(stop)`` must return soon after ``stop`` is set. It is started afresh on each
        acquisition (no state from an earlier term survives). If ``work`` raises, the lease
        is released and the exception propagates. If it returns by itself (kopf returns
        when it handles SIGTERM in the main thread), the lease is released and this returns:
        the process is shutting down. With ``rejoin=False`` a lost lease raises
        :class:`LeadershipLost` (for a process that prefers to restart).
        """
        while await self.acquire(stop_flag):
            outcome = await self._lead(work, stop_flag)
            if outcome == "stopped":
                return
            if not rejoin:
                raise LeadershipLost(f"lost the leader lease {self.config.name}")

    async def _lead(self, work: Work, stop_flag: asyncio.Event) -> str:
        """Run the work while renewing; returns "stopped" or "lost" (raises if it ended)."""
        cfg = self.config
        work_stop = asyncio.Event()
        self._notify(True)
        task = asyncio.ensure_future(work(work_stop))
        stopping = asyncio.ensure_future(stop_flag.wait())
        outcome = "lost"
        try:
            while True:
                await asyncio.wait(
                    [task, stopping],
                    timeout=max(min(cfg.retry_period, self._remaining()), 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop_flag.is_set():
                    outcome = "stopped"
                    break
                if task.done():
                    outcome = "ended"
                    break
                if self._remaining() <= 0:
                    break
                # Renew; stop waiting for the answer at the deadline.
                renewed = await self._attempt(limit=max(self._remaining(), 0.01))
                if not renewed and self.holder not in ("", cfg.identity):
                    logger.error(
                        "leader lease %s/%s was taken by %s", cfg.namespace, cfg.name, self.holder
                    )
                    break
            if outcome == "lost":
                logger.error(
                    "leader lease %s/%s lost (not renewed for up to %.1fs): stopping the "
                    "operator's work",
                    cfg.namespace,
                    cfg.name,
                    cfg.renew_deadline,
                )
                self._renewed_at = None
        finally:
            stopping.cancel()
            await self._stop_work(task, work_stop)
            self._notify(False)
            if outcome != "lost":
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(cfg.retry_period):
                        released = await self.release(cfg.retry_period)
                    if released:
                        logger.info("leader lease %s/%s released", cfg.namespace, cfg.name)
            self._renewed_at = None
        if outcome == "ended":
            task.result()  # re-raise the work's exception, if any
            logger.info("the operator's work ended by itself (e.g. kopf stopped on SIGTERM)")
            return "stopped"
        return outcome

    async def _stop_work(self, task: asyncio.Future[None], work_stop: asyncio.Event) -> None:
        """Ask the work to stop; cancel it if it has not within the stop timeout."""
        work_stop.set()
        if not task.done():
            await asyncio.wait([task], timeout=self.config.effective_stop_timeout)
        if not task.done():
            logger.error(
                "the operator's work did not stop in %.1fs: cancelling it",
                self.config.effective_stop_timeout,
            )
            task.cancel()
            await asyncio.wait([task])
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            logger.error("the operator's work ended with %s: %s", type(exc).__name__, exc)


async def run_with_leader_election(
    run: Work,
    *,
    namespace: str,
    name: str = "cloudpilot-operator",
    identity: str | None = None,
    lease_seconds: int = 30,
    renew_deadline: float = 20.0,
    retry_period: float = 4.0,
    stop_flag: asyncio.Event | None = None,
    api: LeaseAPI | None = None,
    on_leadership: Callable[[bool], None] | None = None,
    standby_health_port: int | None = None,
    standby_health_host: str = "0.0.0.0",
    rejoin: bool = True,
    handle_signals: bool = False,
) -> None:
    """Run ``run(stop)`` only while this process holds the Lease ``namespace/name``.

    Returns when ``stop_flag`` is set (after stopping the work and releasing the lease).
    ``on_leadership(bool)`` is told of every change (e.g. :func:`cloudpilot.metrics.set_leader`).
    With ``standby_health_port``, a minimal health endpoint answers on that port whenever
    this process is not leading (kopf serves the real one while it leads).
    With ``handle_signals`` (main thread only), SIGTERM and SIGINT set ``stop_flag``, so a
    standby exits cleanly too; while kopf runs, its own handlers take over and stop it, and
    the lease is released either way.
    Without ``api``, the Lease is kept through a client of its own (see :func:`_lease_api`).
    """
    async with _lease_api(api) as lease_api:
        await _run_elected(
            run,
            LeaseConfig(
                namespace=namespace,
                name=name,
                identity=identity or default_identity(),
                lease_seconds=lease_seconds,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            ),
            lease_api,
            stop_flag=stop_flag if stop_flag is not None else asyncio.Event(),
            on_leadership=on_leadership,
            health=_StandbyHealth(standby_health_port, standby_health_host),
            rejoin=rejoin,
            handle_signals=handle_signals,
        )


@contextlib.asynccontextmanager
async def _lease_api(api: LeaseAPI | None) -> AsyncIterator[LeaseAPI]:
    """``api``, else the Lease through a :class:`~cloudpilot.kube.client.KubeClient` that
    lives as long as the election (across leadership terms, which the operator's own
    client does not), closed at the end."""
    if api is not None:
        yield api
        return
    async with client.KubeClient() as kube:
        yield KubernetesLeaseAPI(kube)


async def _run_elected(
    run: Work,
    config: LeaseConfig,
    api: LeaseAPI,
    *,
    stop_flag: asyncio.Event,
    on_leadership: Callable[[bool], None] | None,
    health: _StandbyHealth,
    rejoin: bool,
    handle_signals: bool,
) -> None:
    elector = LeaderElector(
        config,
        api,
        on_leadership=on_leadership,
    )
    signals = _Signals(stop_flag, enabled=handle_signals)

    async def work(stop: asyncio.Event) -> None:
        await health.stop()  # free the port for kopf's liveness endpoint
        try:
            await run(stop)
        finally:
            signals.install()  # kopf replaced our handlers with its own while it ran
            if not stop_flag.is_set():
                await health.start()  # back to standing by

    # The work's tasks (kopf, the scheduler, every reconcile) are created from here on and
    # inherit this context: each sees its own elector, even with two operators in one process.
    _current.set(elector)
    signals.install()
    await health.start()
    try:
        await elector.run(work, stop_flag, rejoin=rejoin)
    finally:
        _current.set(None)
        await health.stop()
        signals.remove()


_current: contextvars.ContextVar[LeaderElector | None] = contextvars.ContextVar(
    "cloudpilot_leader_elector", default=None
)


class NotLeading(Exception):
    """This replica's Lease lapsed before a write: nothing was sent."""


def fence() -> Callable[[], bool]:
    """The check :func:`may_act` makes, bound to this context's elector so that it can be
    called from a worker thread, immediately before the write leaves (the context variable
    is not visible there)."""
    elector = _current.get()
    return _always if elector is None else elector.is_leading


def _always() -> bool:
    return True


def may_act() -> bool:
    """Whether this process may act on pools now: True without leader election, else only
    while the lease is held and renewed within the deadline.

    The work is stopped when the lease is lost, but a process that was paused (SIGSTOP, a
    frozen VM, a long GC) resumes with its tasks all due at once, and one of them may reach
    a cloud call before the elector's task runs and notices. This check reads the monotonic
    clock, which kept counting through the pause, so calling it right before creating or
    destroying a VM closes that gap.
    """
    elector = _current.get()
    return elector is None or elector.is_leading()


class _Signals:
    """SIGTERM/SIGINT set the stop flag (main thread only: elsewhere this does nothing)."""

    def __init__(self, flag: asyncio.Event, *, enabled: bool) -> None:
        self._flag = flag
        self._enabled = enabled and threading.current_thread() is threading.main_thread()
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        if not self._enabled:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._flag.set)
                if sig not in self._installed:
                    self._installed.append(sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()


class _StandbyHealth:
    """A bare ``/healthz`` (any path, 200) for standbys, which run no kopf to serve one.
    With no port, it does nothing."""

    def __init__(self, port: int | None, host: str) -> None:
        self.port, self.host = port, host
        self._runner: Any = None

    async def start(self) -> None:
        if self.port is None or self._runner is not None:
            return
        from aiohttp import web

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"leader": False, "state": "standby"})

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
