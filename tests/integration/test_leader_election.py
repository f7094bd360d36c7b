"""Leader election (cloudpilot.leader) against a real Kubernetes API server.

Several electors, each with its own HTTP client, compete for one ``coordination.k8s.io/v1``
Lease served by the suite's kube-apiserver (optimistic concurrency on resourceVersion, as in
production). Each elector's "work" marks itself active while it runs, in
the test's event loop, so an overlap of two leaders is seen exactly, not sampled. Faults are
injected per elector (a partitioned or hung API client), which is what makes a real leader
lose its lease. Timings are scaled down (2 s leases) and every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from cloudpilot.kube.client import KubeClient
from cloudpilot.leader import (
    KubernetesLeaseAPI,
    LeaderElector,
    LeadershipLost,
    LeaseConfig,
    run_with_leader_election,
)
from tests.support.cluster import KubePeer, kube_peer
from tests.support.official_client import operator_client_for

NS, LEASE = "default", "cloudpilot-operator"
LEASE_SECONDS, RENEW_DEADLINE, RETRY = 2, 1.2, 0.2


class _Cluster:
    """What these tests need of the API server: a kubeconfig that may write Leases."""

    def __init__(self, peer: KubePeer) -> None:
        self.kubeconfig_path = peer.kubeconfig


@pytest.fixture(scope="module")
def cluster() -> Iterator[_Cluster]:
    with kube_peer() as peer:
        yield _Cluster(peer)


@pytest.fixture
def lease_name(request: pytest.FixtureRequest) -> str:
    """A lease per test, so tests sharing the module's emulator do not interfere."""
    return f"{LEASE}-{request.node.name.replace('_', '-')[:40]}".lower().strip("-")


class FaultyLeaseAPI:
    """A real :class:`KubernetesLeaseAPI` whose link can be cut (errors) or hung (blocks),
    as a network partition does to one replica; records when successful writes were sent."""

    def __init__(self, inner: KubernetesLeaseAPI) -> None:
        self.inner = inner
        self.broken = False
        self.hang = threading.Event()  # set: calls block until `release` is set
        # Waited on in the elector's loop (set from there, or with no waiter from elsewhere).
        self.release = asyncio.Event()
        self.writes: list[float] = []  # monotonic times at which successful writes were sent
        self.reads = 0  # successful reads: each attempt starts with one

    async def _guard(self) -> None:
        if self.hang.is_set():
            # A hung connection: this call (only) waits until released, at most 30 s.
            with suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self.release.wait()
        if self.broken:
            raise ConnectionError("injected: the API server is unreachable")

    async def read(self, namespace: str, name: str, limit: float) -> dict[str, Any] | None:
        await self._guard()
        lease = await self.inner.read(namespace, name, limit)
        self.reads += 1
        return lease

    async def create(self, namespace: str, body: dict[str, Any], limit: float) -> dict[str, Any]:
        await self._guard()
        sent = time.monotonic()
        created = await self.inner.create(namespace, body, limit)
        self.writes.append(sent)
        return created

    async def replace(
        self, namespace: str, name: str, body: dict[str, Any], limit: float
    ) -> dict[str, Any]:
        await self._guard()
        sent = time.monotonic()
        replaced = await self.inner.replace(namespace, name, body, limit)
        self.writes.append(sent)
        return replaced


@dataclass
class Ledger:
    """Who is doing the leader's work, checked at every start: the property under test."""

    active: set[str] = field(default_factory=set)
    starts: list[tuple[float, str]] = field(default_factory=list)
    stops: list[tuple[float, str]] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)

    def work(self, name: str) -> Callable[[asyncio.Event], Any]:
        async def run(stop: asyncio.Event) -> None:
            if self.active:
                self.overlaps.append(f"{name} started while {sorted(self.active)} active")
            self.active.add(name)
            self.starts.append((time.monotonic(), name))
            try:
                await stop.wait()
            finally:
                self.active.discard(name)
                self.stops.append((time.monotonic(), name))

        return run

    def leader(self) -> str | None:
        return next(iter(self.active), None) if len(self.active) == 1 else None


@dataclass
class Candidate:
    name: str
    api: FaultyLeaseAPI
    elector: LeaderElector
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None


@pytest.fixture
async def candidates(cluster: _Cluster, lease_name: str) -> AsyncIterator[Callable[..., Candidate]]:
    made: list[Candidate] = []
    clients: list[KubeClient] = []

    def make(name: str, *, lease_seconds: int = LEASE_SECONDS, **timing: float) -> Candidate:
        client = operator_client_for(cluster.kubeconfig_path)
        clients.append(client)
        api = FaultyLeaseAPI(KubernetesLeaseAPI(client))
        elector = LeaderElector(
            LeaseConfig(
                namespace=NS,
                name=lease_name,
                identity=name,
                lease_seconds=lease_seconds,
                renew_deadline=timing.get("renew_deadline", RENEW_DEADLINE),
                retry_period=timing.get("retry_period", RETRY),
            ),
            api,
        )
        candidate = Candidate(name, api, elector, asyncio.Event())
        made.append(candidate)
        return candidate

    yield make
    for c in made:  # unblock hung calls, then stop every elector still running
        c.api.release.set()
        c.stop.set()
    for c in made:
        if c.task is not None:
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(c.task, 10)
    for client in clients:
        await client.close()


def start(candidate: Candidate, ledger: Ledger, **kwargs: Any) -> Candidate:
    candidate.task = asyncio.create_task(
        candidate.elector.run(ledger.work(candidate.name), candidate.stop, **kwargs)
    )
    return candidate


async def until(predicate: Callable[[], Any], limit: float, what: str) -> Any:
    """Poll ``predicate`` in the event loop until truthy, failing after ``limit`` s."""
    deadline = time.monotonic() + limit
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {limit}s: {what}")
        await asyncio.sleep(0.02)  # the polling period, not a synchronisation


def read_lease(cluster: _Cluster, name: str) -> dict[str, Any]:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(cluster.kubeconfig_path), client_configuration=config
    )
    with kubernetes.client.ApiClient(config) as client:
        answer = kubernetes.client.CoordinationV1Api(client).read_namespaced_lease(
            name, NS, _preload_content=False
        )
    lease: dict[str, Any] = json.loads(answer.data)
    return lease


async def test_two_electors_never_both_lead_through_repeated_failovers(
    candidates: Callable[..., Candidate],
) -> None:
    ledger = Ledger()
    group = {c.name: c for c in (start(candidates(n), ledger) for n in ("op-a", "op-b", "op-c"))}
    leaders: list[str] = []
    for _ in range(4):
        leader = await until(ledger.leader, 10, "a single leader")
        leaders.append(leader)
        group[leader].api.broken = True  # partition the leader from the API server
        await until(lambda cur=leader: cur not in ledger.active, 5, f"{leader} stops")
        await until(lambda cur=leader: ledger.leader() not in (None, cur), 10, "a new leader")
        group[leader].api.broken = False  # heal: it rejoins as a standby
    assert not ledger.overlaps, ledger.overlaps
    assert len(leaders) == 4 and all(a != b for a, b in itertools.pairwise(leaders))
    # While healthy, the leader renews and nobody else takes over
    steady = await until(ledger.leader, 10, "a leader")
    starts = len(ledger.starts)
    t0 = time.monotonic()
    writes = group[steady].api.writes
    # The property is "nothing happens" for a while: two lease terms of renewals by the
    # leader, in which a standby that ignored them would have taken over.
    await until(
        lambda: writes and writes[-1] - t0 >= 2 * LEASE_SECONDS,
        2 * LEASE_SECONDS + 10,
        f"{steady} renews for two lease terms",
    )
    assert ledger.leader() == steady and len(ledger.starts) == starts
    assert not ledger.overlaps


async def test_losing_the_lease_stops_the_work_before_anyone_else_starts(
    candidates: Callable[..., Candidate],
) -> None:
    ledger = Ledger()
    a = start(candidates("op-a"), ledger)
    await until(lambda: ledger.leader() == "op-a", 10, "op-a leads")
    b = start(candidates("op-b"), ledger)
    # A second read begins only after op-b's first attempt (a read, then any write) ended.
    await until(lambda: b.api.reads >= 2, 10, "op-b tries for the lease")
    assert b.elector.holder == "op-a" and b.api.writes == []  # a standby: it left it to op-a
    a.api.broken = True
    await until(lambda: ledger.leader() == "op-b", 10, "op-b takes over")

    last_renewal = a.api.writes[-1]
    a_stopped = next(t for t, n in ledger.stops if n == "op-a")
    b_started = next(t for t, n in ledger.starts if n == "op-b")
    # fencing: op-b started only after op-a stopped and the lease had expired
    assert b_started > a_stopped
    assert b_started - last_renewal >= LEASE_SECONDS
    assert not a.elector.is_leading() and b.elector.is_leading()
    assert not ledger.overlaps


async def test_a_hung_api_call_cannot_hold_the_leader_past_its_deadline(
    candidates: Callable[..., Candidate],
) -> None:
    ledger = Ledger()
    a = start(candidates("op-a"), ledger)
    await until(lambda: ledger.leader() == "op-a", 10, "op-a leads")
    a.api.hang.set()  # every call now blocks (a half-open TCP connection)
    # Hung calls are held for 30 s: op-a must stop on its own deadline, before its lease
    # could expire and a standby take over.
    await until(lambda: "op-a" not in ledger.active, LEASE_SECONDS, "op-a stops in time")
    a.api.release.set()


async def test_failover_after_a_crashed_leaders_lease_expires(
    candidates: Callable[..., Candidate],
    cluster: _Cluster,
    lease_name: str,
) -> None:
    """A leader that dies without releasing (kill -9, node loss): the standby waits for
    the lease to expire, then takes over; the Lease records the transition."""
    ledger = Ledger()
    a = start(candidates("op-a"), ledger)
    await until(lambda: ledger.leader() == "op-a", 10, "op-a leads")
    start(candidates("op-b"), ledger)
    await until(lambda: len(a.api.writes) >= 3, 5, "op-a renews a few times")
    assert ledger.leader() == "op-a"
    acquired = read_lease(cluster, lease_name)["spec"]
    # the crash: no more calls reach the API, not even a release
    a.api.broken = True
    assert a.task is not None
    a.task.cancel()
    with suppress(asyncio.CancelledError):
        async with asyncio.timeout(10):  # a lost cancellation fails here, not at 300 s
            await a.task
    last_renewal = a.api.writes[-1]

    await until(lambda: ledger.leader() == "op-b", 10, "op-b takes over")
    b_started = next(t for t, n in ledger.starts if n == "op-b")
    assert b_started - last_renewal >= LEASE_SECONDS  # not before the lease expired
    spec = read_lease(cluster, lease_name)["spec"]
    assert spec["holderIdentity"] == "op-b"
    assert spec["leaseDurationSeconds"] == LEASE_SECONDS
    assert spec["leaseTransitions"] == acquired["leaseTransitions"] + 1
    assert spec["acquireTime"] != acquired["acquireTime"]


async def test_a_clean_stop_releases_the_lease_for_a_fast_handover(
    candidates: Callable[..., Candidate],
    cluster: _Cluster,
    lease_name: str,
) -> None:
    ledger = Ledger()
    a = start(candidates("op-a", lease_seconds=30, renew_deadline=20, retry_period=0.2), ledger)
    await until(lambda: ledger.leader() == "op-a", 10, "op-a leads")
    first = read_lease(cluster, lease_name)["spec"]
    await until(lambda: len(a.api.writes) >= 3, 5, "op-a renews")
    renewed = read_lease(cluster, lease_name)["spec"]
    assert renewed["acquireTime"] == first["acquireTime"]  # renewals keep the acquisition
    assert renewed["renewTime"] != first["renewTime"]
    b = start(candidates("op-b", lease_seconds=30, renew_deadline=20, retry_period=0.2), ledger)
    a.stop.set()
    assert a.task is not None
    await asyncio.wait_for(a.task, 5)
    # 5 s, far less than the 30 s lease: only a released lease is taken over this soon
    await until(lambda: ledger.leader() == "op-b", 5, "op-b takes over")
    assert read_lease(cluster, lease_name)["spec"]["holderIdentity"] == "op-b"
    b.stop.set()
    assert b.task is not None
    await asyncio.wait_for(b.task, 5)
    assert not read_lease(cluster, lease_name)["spec"].get("holderIdentity")
    assert not ledger.overlaps


async def test_a_lease_taken_over_by_force_stops_the_leader_at_its_next_renewal(
    candidates: Callable[..., Candidate],
    cluster: _Cluster,
    lease_name: str,
) -> None:
    """An admin (or a misconfigured twin) writes another holder: stop at once, do not
    wait for the deadline."""
    ledger = Ledger()
    start(candidates("op-a", lease_seconds=30, renew_deadline=20, retry_period=0.2), ledger)
    await until(lambda: ledger.leader() == "op-a", 10, "op-a leads")
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(cluster.kubeconfig_path), client_configuration=config
    )
    with kubernetes.client.ApiClient(config) as client:
        kubernetes.client.CoordinationV1Api(client).patch_namespaced_lease(
            lease_name, NS, {"spec": {"holderIdentity": "intruder"}}
        )
    # 5 s, far less than the 20 s renew deadline: op-a stops on seeing the intruder
    await until(lambda: "op-a" not in ledger.active, 5, "op-a stops")


async def test_work_that_fails_releases_the_lease_and_raises(
    candidates: Callable[..., Candidate],
    cluster: _Cluster,
    lease_name: str,
) -> None:
    a = candidates("op-a")

    async def broken(stop: asyncio.Event) -> None:
        raise ValueError("the operator crashed")

    with pytest.raises(ValueError, match="crashed"):
        await asyncio.wait_for(a.elector.run(broken, a.stop), 10)
    assert not read_lease(cluster, lease_name)["spec"].get("holderIdentity")


async def test_without_rejoin_a_lost_lease_raises(candidates: Callable[..., Candidate]) -> None:
    ledger = Ledger()
    a = start(candidates("op-a"), ledger, rejoin=False)
    await until(lambda: ledger.leader() == "op-a", 10, "op-a leads")
    a.api.broken = True
    assert a.task is not None
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(a.task, 5)
    assert "op-a" not in ledger.active


def _get(url: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback http)
        return response.status, json.loads(response.read() or b"{}")


async def test_run_with_leader_election_serves_health_while_standing_by(
    cluster: _Cluster,
    lease_name: str,
    unused_tcp_port: int,
) -> None:
    """The standby answers probes on the health port; the leader's work gets the port."""
    client = operator_client_for(cluster.kubeconfig_path)
    holder = LeaderElector(
        LeaseConfig(
            namespace=NS,
            name=lease_name,
            identity="holder",
            lease_seconds=2,
            renew_deadline=1.2,
            retry_period=0.2,
        ),
        KubernetesLeaseAPI(client),
    )
    holder_stop, ours_stop = asyncio.Event(), asyncio.Event()
    ledger = Ledger()
    holder_task = asyncio.create_task(holder.run(ledger.work("holder"), holder_stop))
    await until(lambda: ledger.leader() == "holder", 10, "holder leads")
    url = f"http://127.0.0.1:{unused_tcp_port}/healthz"
    bound: list[int] = []

    async def work(stop: asyncio.Event) -> None:
        # kopf would bind its liveness endpoint here: the standby server must be gone
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", unused_tcp_port)
        bound.append(unused_tcp_port)
        async with server:
            await stop.wait()

    ours = asyncio.create_task(
        run_with_leader_election(
            work,
            namespace=NS,
            name=lease_name,
            identity="ours",
            lease_seconds=2,
            renew_deadline=1.2,
            retry_period=0.2,
            stop_flag=ours_stop,
            api=KubernetesLeaseAPI(client),
            standby_health_port=unused_tcp_port,
            standby_health_host="127.0.0.1",
        )
    )
    try:
        deadline = time.monotonic() + 5
        while (answer := await asyncio.to_thread(_probe, url)) is None:
            assert time.monotonic() < deadline, "the standby health endpoint never answered"
            await asyncio.sleep(0.05)  # the polling period
        status, body = answer
        assert status == 200 and body == {"leader": False, "state": "standby"}
        holder_stop.set()
        await asyncio.wait_for(holder_task, 5)
        await until(lambda: bound, 5, "our work binds the health port")
        ours_stop.set()
        await asyncio.wait_for(ours, 5)
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(_get, url)  # nothing listens after the stop
    finally:
        holder_stop.set()
        ours_stop.set()
        for task in (holder_task, ours):
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        await client.close()


def _probe(url: str) -> tuple[int, dict[str, Any]] | None:
    try:
        return _get(url)
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"lease_seconds": 0}, "positive whole number"),
        ({"lease_seconds": 10, "renew_deadline": 12}, "renew_deadline < lease_seconds"),
        ({"lease_seconds": 10, "renew_deadline": 5, "retry_period": 6}, "retry_period <"),
        ({"lease_seconds": 10, "renew_deadline": 8, "stop_timeout": 5}, "stop_timeout"),
    ],
)
def test_lease_timing_is_checked(timing: dict[str, float], message: str) -> None:
    base: dict[str, Any] = {"lease_seconds": 30, "renew_deadline": 20, "retry_period": 4}
    with pytest.raises(ValueError, match=message):
        LeaseConfig(namespace=NS, name=LEASE, identity="x", **{**base, **timing})


# -- the whole operator, twice, against one API and one cloud ------------------------------------


@pytest.fixture
def ha_stack(ec2: Any) -> Iterator[Any]:
    """The end-to-end stack without an operator (the tests start their own replicas): the
    real API server in a fresh namespace, and the process's one EC2 emulator wiped for
    this test (moto's state is global, so it is shared with the other modules' EC2 tests)."""
    from tests.support.stack import running_stack

    with running_stack(with_operator=False, ec2=ec2) as stack:
        yield stack


class ElectedOperator:
    """One operator "process": its own thread, event loop, API client and elector, running
    CloudPilot's real runtime (kopf + reconciler) only while it holds the Lease."""

    def __init__(
        self, identity: str, kubeconfig: Path, settings: Any, lease: str, namespace: str
    ) -> None:
        self.identity = identity
        self.namespace = namespace
        self.settings = settings
        self.lease = lease
        # One client per replica, opened in its thread's event loop at its first request.
        self.client = operator_client_for(kubeconfig)
        self.api = FaultyLeaseAPI(KubernetesLeaseAPI(self.client))
        self.terms = 0  # how many times this replica started the operator
        self.leading = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"op-{identity}", daemon=True)

    def _main(self) -> None:
        from cloudpilot.runtime import build_reconciler, run_operator

        async def work(stop: asyncio.Event) -> None:
            self.terms += 1
            self.leading.set()
            try:
                await run_operator(
                    self.settings,
                    stop_flag=stop,
                    reconciler=build_reconciler(self.settings),
                    kube=self.client,
                )
            finally:
                self.leading.clear()

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._started.set()
            await run_with_leader_election(
                work,
                namespace=self.namespace,
                name=self.lease,
                identity=self.identity,
                lease_seconds=4,
                renew_deadline=2.0,
                retry_period=0.3,
                stop_flag=self._stop,
                api=self.api,
            )
            await self.client.close()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()

    def start(self) -> ElectedOperator:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def stop(self) -> None:
        self.api.release.set()
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:  # not if Thread.start() itself failed
            self._thread.join(30)
        assert not self._thread.is_alive(), f"{self.identity} did not stop"


@pytest.mark.slow
def test_two_operators_against_one_api_and_cloud_never_create_a_vm_twice(
    ha_stack: Any,
) -> None:
    """The issue's proof: two operator replicas with leader election, a failover in the
    middle of the pool's life, and every VM the cloud ever saw accounted for exactly."""
    from dataclasses import replace

    from tests.support.kube import wait_for

    stack = ha_stack
    settings = replace(stack.settings, namespaces=(stack.namespace,), all_namespaces=False)
    ops: list[ElectedOperator] = []
    with ExitStack() as replicas:  # stops every replica started, even if one fails
        for name in ("replica-a", "replica-b"):
            op = ElectedOperator(name, stack.kubeconfig, settings, "cloudpilot-ha", stack.namespace)
            replicas.callback(op.stop)
            ops.append(op.start())
        first = wait_for(
            lambda: next((o for o in ops if o.leading.is_set()), None), 20, message="a leader"
        )
        other = next(o for o in ops if o is not first)
        stack.apply_pool("ha", replicas=4)
        stack.wait_vms("ha", 4)
        stack.wait_status("ha", lambda s: s.get("replicas") == 4, what="status says 4")
        assert not other.leading.is_set() and other.terms == 0  # a warm standby only

        # The leader is cut off from the API server: it must stop, the standby take over.
        first.api.broken = True
        wait_for(lambda: not first.leading.is_set(), 10, message="the old leader stops")
        wait_for(lambda: other.leading.is_set(), 20, message="the standby takes over")
        assert not first.leading.is_set()

        # The new leader adopts the 4 VMs (no duplicates) and carries on: scale and replace.
        stack.scale_pool("ha", 6)
        stack.wait_vms("ha", 6)
        victim = stack.live_vms("ha")[0]
        # Launched an hour ago: a pilot that worked (past fizzleSeconds), replaced at once.
        stack.ec2.age_instance(victim.id, timedelta(hours=1))
        stack.ec2.halt_instance(victim.id)
        wait_for(
            lambda: (
                victim.id not in {vm.id for vm in stack.live_vms("ha")}
                and len(stack.live_vms("ha")) == 6
            ),
            60,
            message="the halted pilot's VM replaced",
        )
        first.api.broken = False  # healed: it rejoins as a standby and stays one
        ever = stack.vms("ha", include_gone=True)
        assert len(ever) == 4 + 2 + 1, [(vm.id, vm.state) for vm in ever]
        assert other.leading.is_set() and not first.leading.is_set()
        assert first.terms == 1 and other.terms == 1
    for op in ops:
        assert op.error is None, op.error


@pytest.mark.slow
def test_a_leader_paused_between_its_decision_and_the_write_sends_nothing(
    ha_stack: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The fence: a leader decides to create VMs, then its whole process stalls (a GC
    pause, SIGSTOP, a frozen VM) before the request leaves. Its Lease lapses, the standby
    takes over and creates the VMs. When the old leader wakes up, its tasks resume where
    they were, before its elector has had a chance to notice: the check right before the
    write must refuse, or the cloud gets the VMs twice.

    The pause is the leader's event-loop thread blocked inside the fence lookup that
    starts every cloud write (``leader.fence``): from decision to request, everything in
    between (driver, rate limiter, the request itself) runs after the pause."""
    from dataclasses import replace
    from logging import INFO

    from cloudpilot import leader as leader_module
    from tests.support.kube import wait_for

    stack = ha_stack
    caplog.set_level(INFO, logger="cloudpilot")
    settings = replace(stack.settings, namespaces=(stack.namespace,), all_namespaces=False)
    real_fence = leader_module.fence
    frozen, thaw = threading.Event(), threading.Event()
    armed: list[str] = []  # the thread name of the replica to pause
    verdicts: list[bool] = []  # what the paused replica's fence said

    def pausing_fence() -> Callable[[], bool]:
        checker = real_fence()
        if armed and threading.current_thread().name == armed[0]:
            armed.clear()
            frozen.set()
            thaw.wait(60)  # the whole event loop of that replica stands still

            def recorded() -> bool:
                verdict = checker()
                verdicts.append(verdict)
                return verdict

            return recorded
        return checker

    monkeypatch.setattr(leader_module, "fence", pausing_fence)
    ops: list[ElectedOperator] = []
    with ExitStack() as replicas:
        replicas.callback(thaw.set)
        for name in ("replica-a", "replica-b"):
            op = ElectedOperator(
                name, stack.kubeconfig, settings, "cloudpilot-fence", stack.namespace
            )
            replicas.callback(op.stop)
            ops.append(op.start())
        first = wait_for(
            lambda: next((o for o in ops if o.leading.is_set()), None), 20, message="a leader"
        )
        other = next(o for o in ops if o is not first)
        stack.apply_pool("fenced", replicas=2)
        stack.wait_vms("fenced", 2)

        armed.append(f"op-{first.identity}")
        stack.scale_pool("fenced", 4)
        assert frozen.wait(30), "the leader never decided to create the 2 VMs"
        # Paused, the leader renews nothing: the standby takes over and does the work.
        wait_for(lambda: other.leading.is_set(), 30, message="the standby takes over")
        stack.wait_vms("fenced", 4)
        thaw.set()
        wait_for(lambda: verdicts, 30, message="the old leader reaches its fence")
        wait_for(lambda: not first.leading.is_set(), 30, message="the old leader stands down")

        assert verdicts == [False], "the old leader was let through its fence"
        ever = stack.vms("fenced", include_gone=True)
        assert len(ever) == 4, [(vm.id, vm.state) for vm in ever]
    # Fenced is not failed: no failed action in the audit trail, no NotLeading anywhere
    # (it was reported as a Transient create failure), only the note that nothing was sent.
    lines = [r.getMessage() for r in caplog.records]
    assert "create not sent: this replica no longer holds the Lease" in lines
    assert not [line for line in lines if "NotLeading" in line]
    assert not [r for r in caplog.records if r.name == "cloudpilot.audit" and r.levelno > INFO]
    for op in ops:
        assert op.error is None, op.error


@pytest.mark.slow
def test_without_leader_election_two_operators_do_create_duplicates(
    ha_stack: Any,
) -> None:
    """The control experiment: the same two replicas *without* a Lease both act, so the
    test above would notice if leader election stopped protecting the pool. The cloud holds
    every RunInstances until both operators have sent one: neither can see the other's VMs,
    as in a real race, without depending on timing."""
    from dataclasses import replace

    from cloudpilot.runtime import OperatorThread, build_reconciler
    from cloudpilot_devtools.latency_proxy import LatencyProxy
    from tests.support.kube import wait_for

    stack = ha_stack
    settings = replace(stack.settings, namespaces=(stack.namespace,), all_namespaces=False)
    with (
        LatencyProxy(stack.ec2.endpoint) as proxy,
        OperatorThread(settings, reconciler_factory=lambda: build_reconciler(settings)),
        OperatorThread(settings, reconciler_factory=lambda: build_reconciler(settings)),
    ):
        proxy.hold("RunInstances")
        stack.apply_pool("twice", replicas=4, driver=stack.ec2.driver_options(proxy.endpoint))
        assert proxy.wait_for_held(2, timeout=30), "both operators ask the cloud for VMs"
        proxy.release()
        wait_for(
            lambda: len(stack.vms("twice", include_gone=True)) >= 8,
            30,
            message="both batches of 4 created: 8 VMs for 4 desired",
        )


# -- real processes and signals ---------------------------------------------------------------

SIGNAL_HANDLERS_SET = """
import signal

async def signal_handlers_set(elected):
    # The elector sets its SIGTERM handler as it starts: a SIGTERM before that would kill
    # the child instead of stopping it cleanly, so "STARTED" is said only once it is set.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and not elected.done():
        if loop.time() > deadline:
            raise SystemExit("the elector set no SIGTERM handler within 20 s")
        await asyncio.sleep(0.01)  # a poll with a deadline, as tests.support.kube.wait_for
"""

CHILD = (
    SIGNAL_HANDLERS_SET
    + """
import asyncio, sys
from cloudpilot.leader import ElectionSettings, run_with_leader_election

async def work(stop):
    print("LEADING", flush=True)
    await stop.wait()
    print("STOPPING", flush=True)

async def main():
    settings = ElectionSettings.from_env()
    assert settings.enabled
    elected = asyncio.create_task(run_with_leader_election(
        work, namespace=settings.namespace, name=settings.name, identity=sys.argv[1],
        lease_seconds=settings.lease_seconds, renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period, handle_signals=True,
    ))
    await signal_handlers_set(elected)
    print("STARTED", flush=True)
    await elected

asyncio.run(main())
print("EXITED", flush=True)
"""
)


def test_sigterm_stops_a_leader_and_a_standby_process_cleanly(
    cluster: _Cluster, lease_name: str, tmp_path: Any
) -> None:
    """Two `operator` processes configured the way the chart configures them (environment):
    SIGTERM makes the standby exit at once and the leader release the lease on its way out,
    so a rolling update hands over without waiting for the lease to expire."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support.kube import wait_for

    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig_path),
        "CLOUDPILOT_LEADER_ELECTION": "true",
        "CLOUDPILOT_LEADER_ELECTION_NAMESPACE": NS,
        "CLOUDPILOT_LEADER_ELECTION_NAME": lease_name,
        "CLOUDPILOT_LEADER_ELECTION_LEASE_SECONDS": "30",  # long: only a release is fast
        "CLOUDPILOT_LEADER_ELECTION_RENEW_DEADLINE": "20",
        "CLOUDPILOT_LEADER_ELECTION_RETRY_PERIOD": "0.3",
    }
    logs = {name: (tmp_path / f"{name}.log").open("w+") for name in ("first", "second")}
    procs = {}
    try:
        for name in ("first", "second"):
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", CHILD, name],
                env=env,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
                text=True,
            )
            log = tmp_path / f"{name}.log"
            wait_for(lambda log=log: "STARTED" in log.read_text(), 20, message=f"{name} starts")
            if name == "first":
                wait_for(
                    lambda: "LEADING" in (tmp_path / "first.log").read_text(),
                    20,
                    message="the first process leads",
                )

        def holder() -> str:
            return read_lease(cluster, lease_name)["spec"].get("holderIdentity") or ""

        assert holder() == "first"
        procs["second"].send_signal(signal.SIGTERM)  # the standby goes first: nothing to hand
        assert procs["second"].wait(10) == 0, (tmp_path / "second.log").read_text()
        assert "LEADING" not in (tmp_path / "second.log").read_text()
        assert holder() == "first" and procs["first"].poll() is None

        procs["first"].send_signal(signal.SIGTERM)
        assert procs["first"].wait(10) == 0
        out = (tmp_path / "first.log").read_text()
        assert "STOPPING" in out and "EXITED" in out, out
        assert holder() == ""  # released, not left to expire
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for log in logs.values():
            log.close()


async def test_work_that_returns_by_itself_releases_the_lease_and_returns(
    candidates: Callable[..., Candidate], cluster: _Cluster, lease_name: str
) -> None:
    """kopf returns on its own when it handles SIGTERM in the main thread: a shutdown."""
    a = candidates("op-a")

    async def finishes(stop: asyncio.Event) -> None:
        return None

    await asyncio.wait_for(a.elector.run(finishes, a.stop), 10)
    assert not read_lease(cluster, lease_name)["spec"].get("holderIdentity")
    assert not a.elector.is_leading()


CHILD_PAUSED = (
    SIGNAL_HANDLERS_SET
    + """
import asyncio, sys, time
from cloudpilot import leader

async def work(stop):
    print(f"LEADING {time.time():.6f}", flush=True)
    while not stop.is_set():
        if leader.may_act():  # what the reconciler checks right before a cloud write
            print(f"ACTING {time.time():.6f}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except TimeoutError:
            pass
    print(f"STOPPING {time.time():.6f}", flush=True)

async def main():
    settings = leader.ElectionSettings.from_env()
    elected = asyncio.create_task(leader.run_with_leader_election(
        work, namespace=settings.namespace, name=settings.name, identity=sys.argv[1],
        lease_seconds=settings.lease_seconds, renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period, handle_signals=True,
    ))
    await signal_handlers_set(elected)
    print("STARTED", flush=True)
    await elected

asyncio.run(main())
"""
)


def _stamps(text: str, word: str) -> list[float]:
    return [float(line.split()[1]) for line in text.splitlines() if line.startswith(word + " ")]


def test_a_paused_leader_does_not_act_after_resuming_once_another_leads(
    cluster: _Cluster, lease_name: str, tmp_path: Any
) -> None:
    """The classic hazard of leases: the leader process is frozen (SIGSTOP: a VM pause, a
    stuck node) past its lease, a standby takes over, and the old leader wakes up with all
    its timers due at once. It must not act again. The elector's overdue deadline stops the
    work before the work's own timers run, and `leader.may_act()` (checked before each
    action, as the reconciler should before each cloud write) reads the monotonic clock,
    which kept counting during the pause, so it is false from the first instant anyway."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support.kube import wait_for

    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig_path),
        "CLOUDPILOT_LEADER_ELECTION": "true",
        "CLOUDPILOT_LEADER_ELECTION_NAMESPACE": NS,
        "CLOUDPILOT_LEADER_ELECTION_NAME": lease_name,
        "CLOUDPILOT_LEADER_ELECTION_LEASE_SECONDS": str(LEASE_SECONDS),
        "CLOUDPILOT_LEADER_ELECTION_RENEW_DEADLINE": str(RENEW_DEADLINE),
        "CLOUDPILOT_LEADER_ELECTION_RETRY_PERIOD": str(RETRY),
    }
    paths = {name: tmp_path / f"{name}.log" for name in ("old", "new")}
    logs = {name: path.open("w+") for name, path in paths.items()}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in ("old", "new"):
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", CHILD_PAUSED, name],
                env=env,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
                text=True,
            )
            path = paths[name]
            wait_for(lambda path=path: "STARTED" in path.read_text(), 20, message=name)
            if name == "old":
                wait_for(lambda: "ACTING" in paths["old"].read_text(), 20, message="old leads")
        procs["old"].send_signal(signal.SIGSTOP)
        wait_for(lambda: "LEADING" in paths["new"].read_text(), 20, message="takeover")
        procs["old"].send_signal(signal.SIGCONT)
        wait_for(lambda: "STOPPING" in paths["old"].read_text(), 10, message="old stops")
        wait_for(
            lambda: len(_stamps(paths["new"].read_text(), "ACTING")) > 10,
            10,
            message="the new leader acts",
        )

        new_leads = _stamps(paths["new"].read_text(), "LEADING")[0]
        old_acts = _stamps(paths["old"].read_text(), "ACTING")
        assert old_acts and max(old_acts) < new_leads, "the old leader acted after the takeover"
        assert len(_stamps(paths["old"].read_text(), "LEADING")) == 1  # back to standing by

        for name in ("old", "new"):
            procs[name].send_signal(signal.SIGTERM)
            assert procs[name].wait(10) == 0, paths[name].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(10)
        for log in logs.values():
            log.close()


def test_may_act_without_leader_election_and_with_an_expired_term() -> None:
    from cloudpilot import leader

    assert leader.may_act()  # no election configured: a single operator may act
    now = [100.0]
    elector = LeaderElector(
        LeaseConfig(
            namespace=NS,
            name="x",
            identity="me",
            lease_seconds=2,
            renew_deadline=1.2,
            retry_period=0.2,
        ),
        api=None,
        clock=lambda: now[0],
    )
    elector._renewed_at = 100.0  # a renewal sent at t=100
    token = leader._current.set(elector)
    try:
        assert leader.may_act()
        now[0] = 101.3  # past the renew deadline, whether or not any task has run since
        assert not leader.may_act()
    finally:
        leader._current.reset(token)
