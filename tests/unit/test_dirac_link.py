"""cloudpilot.dirac.link: the calls the decisions turn into, against a fake DiracX client.

The real client and server are exercised end to end (tests/integration/test_diracx_e2e.py);
here the client is a stand-in that records calls and can fail, to pin down what the link
does with 409, 404, outages and many pilots at once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudpilot.dirac.client import DiracClient, DiracError
from cloudpilot.dirac.link import DiracLink
from cloudpilot.models.spec import DiracSpec
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.naming import pilot_stamp

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = DiracSpec.model_validate(
    {"endpoint": "https://d.test", "credentialsSecret": {"name": "t"}, "vo": "v", "site": "S"}
)


class FakeClient(DiracClient):
    def __init__(self, endpoint: str, token: str) -> None:
        super().__init__(endpoint, token)
        self.known: set[str] = set()
        self.statuses: dict[str, str] = {}
        self.fail: DiracError | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self.jobs = 0
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    async def register_pilot(self, *, stamp: str, **_: str) -> bool:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        if self.closed:  # aiohttp: "Session is closed"
            raise DiracError("DiracX POST /api/pilots/: RuntimeError: Session is closed")
        if self.fail is not None:
            raise self.fail
        new = stamp not in self.known
        self.known.add(stamp)
        return new

    async def update_pilots(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        if self.fail is not None:
            raise self.fail
        if set(updates) - self.known:
            raise DiracError("At least one pilot does not exist.", status=404, transient=False)
        self.statuses.update({s: str(u["Status"]) for s, u in updates.items()})

    async def job_summary(
        self, search: Sequence[Mapping[str, Any]], grouping: Sequence[str] = ("Status",)
    ) -> list[dict[str, Any]]:
        if self.fail is not None:
            raise self.fail
        return [{"Status": "Waiting", "count": self.jobs}]


def vms(n: int, phase: Phase = Phase.RUNNING) -> list[ObservedVM]:
    return [ObservedVM(f"i-{k}", f"n{k}", "default", phase, T0) for k in range(n)]


def link(**kwargs: Any) -> tuple[DiracLink, list[FakeClient]]:
    made: list[FakeClient] = []

    def factory(endpoint: str, token: str) -> DiracClient:
        made.append(FakeClient(endpoint, token))
        return made[-1]

    return DiracLink(client_factory=factory, **kwargs), made


def test_many_new_pilots_are_registered_with_bounded_concurrency() -> None:
    dirac, made = link(max_concurrency=4)
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(50), ce="ce", now=T0))
    (client,) = made
    assert client.known == {pilot_stamp(f"i-{k}") for k in range(50)}
    assert client.most_in_flight == 4
    assert set(client.statuses.values()) == {"Running"}
    assert dirac.status("uid", SPEC) == {"registeredPilots": 50, "unregisteredPilots": 0}


def test_a_known_stamp_counts_as_registered_after_a_restart() -> None:
    first, made = link()
    asyncio.run(first.sync("uid", SPEC, "tok", vms(2), ce="ce", now=T0))
    restarted = DiracLink(client_factory=lambda e, t: made[0])  # the same DiracX
    asyncio.run(restarted.sync("uid", SPEC, "tok", vms(2), ce="ce", now=T0))
    assert restarted.status("uid", SPEC)["registeredPilots"] == 2
    assert len(made[0].known) == 2


def test_an_outage_backs_off_per_pilot_and_a_new_token_retries_at_once() -> None:
    dirac, made = link()

    async def scenario() -> None:
        await dirac.sync("uid", SPEC, "tok", vms(2), ce="ce", now=T0)  # creates the client
        client = made[0]
        client.fail = DiracError("DiracX POST /api/pilots/: unreachable")
        await dirac.sync("uid", SPEC, "tok", vms(3), ce="ce", now=T0)
        assert dirac.status("uid", SPEC)["unregisteredPilots"] == 1
        assert "unreachable" in dirac.status("uid", SPEC)["lastError"]
        delay = dirac.next_attempt("uid", SPEC, T0)
        assert delay is not None and delay >= 1.0
        client.fail = None
        await dirac.sync("uid", SPEC, "tok", vms(3), ce="ce", now=T0 + timedelta(seconds=1))
        assert dirac.status("uid", SPEC)["unregisteredPilots"] == 1  # still backing off
        await dirac.sync("uid", SPEC, "tok2", vms(3), ce="ce", now=T0 + timedelta(seconds=1))
        assert dirac.status("uid", SPEC) == {"registeredPilots": 3, "unregisteredPilots": 0}

    asyncio.run(scenario())


def test_pilots_diracx_lost_are_registered_again() -> None:
    dirac, made = link()

    async def scenario() -> None:
        await dirac.sync("uid", SPEC, "tok", vms(1, Phase.STARTING), ce="ce", now=T0)
        made[0].known.clear()  # DiracX's database was reset
        await dirac.sync("uid", SPEC, "tok", vms(1), ce="ce", now=T0)
        later = T0 + timedelta(seconds=10)
        await dirac.sync("uid", SPEC, "tok", vms(1), ce="ce", now=later)
        assert made[0].statuses == {pilot_stamp("i-0"): "Running"}

    asyncio.run(scenario())


def test_a_vanished_vm_is_marked_deleted_then_forgotten() -> None:
    dirac, made = link()
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(2), ce="ce", now=T0))
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(1), ce="ce", now=T0))
    assert made[0].statuses[pilot_stamp("i-1")] == "Deleted"
    assert dirac.status("uid", SPEC)["registeredPilots"] == 1


def test_a_vm_a_lagging_listing_shows_again_does_not_revive_its_ended_pilot() -> None:
    dirac, made = link()
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(2), ce="ce", now=T0))
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(1), ce="ce", now=T0))
    later = T0 + timedelta(seconds=30)
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(2), ce="ce", now=later))  # i-1 again
    assert made[0].statuses[pilot_stamp("i-1")] == "Deleted"
    assert dirac.status("uid", SPEC)["registeredPilots"] == 1


def test_no_registration_when_another_replica_leads() -> None:
    dirac, made = link()
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(2), ce="ce", now=T0, may_act=False))
    assert made == [] or made[0].known == set()


def test_demand_keeps_its_target_through_a_failed_read() -> None:
    spec = DiracSpec.model_validate(
        {**SPEC.model_dump(by_alias=True), "demand": {"intervalSeconds": 5}}
    )
    dirac, made = link()

    async def scenario() -> None:
        await dirac.sync("uid", spec, "tok", [], ce="ce", now=T0)
        made[0].jobs = 3
        got = await dirac.target("uid", spec, "tok", ceiling=10, previous_status={}, now=T0)
        assert got == 3
        made[0].fail = DiracError("DiracX POST /api/jobs/summary: HTTP 503: warming up")
        later = T0 + timedelta(seconds=5)
        got = await dirac.target("uid", spec, "tok", ceiling=10, previous_status={}, now=later)
        assert got == 3
        assert "503" in dirac.status("uid", spec)["demand"]["lastError"]

    asyncio.run(scenario())


def test_pools_with_their_own_tokens_on_one_endpoint_keep_their_own_clients() -> None:
    # Two VOs on one DiracX: each pool's token. Neither closes the other's session,
    # not even while the other's registrations are in flight.
    dirac, made = link()

    async def scenario() -> None:
        await asyncio.gather(
            dirac.sync("a", SPEC, "token-a", vms(20), ce="ce", now=T0),
            dirac.sync("b", SPEC, "token-b", vms(20), ce="ce", now=T0),
        )
        await dirac.sync("a", SPEC, "token-a", vms(20), ce="ce", now=T0)

    asyncio.run(scenario())
    assert len(made) == 2 and not any(c.closed for c in made)
    assert "lastError" not in dirac.status("a", SPEC)
    assert "lastError" not in dirac.status("b", SPEC)


def test_the_last_pool_of_an_endpoint_takes_its_client_and_semaphore_with_it() -> None:
    dirac, made = link()
    other = DiracSpec.model_validate(
        {**SPEC.model_dump(by_alias=True), "endpoint": "https://e.test"}
    )

    async def scenario() -> None:
        await dirac.sync("a", SPEC, "tok", vms(1), ce="ce", now=T0)
        await dirac.sync("b", SPEC, "tok", vms(1), ce="ce", now=T0)
        dirac.forget("a")
        await asyncio.sleep(0)
        assert not made[0].closed and dirac.endpoints == {"https://d.test"}
        dirac.forget("b")
        await asyncio.sleep(0)
        assert made[0].closed and dirac.endpoints == frozenset()
        # A pool that moves to another endpoint, or rotates its token, lets the old go.
        await dirac.sync("c", SPEC, "tok", vms(1), ce="ce", now=T0)
        await dirac.sync("c", other, "tok", vms(1), ce="ce", now=T0)
        await asyncio.sleep(0)
        assert made[1].closed and dirac.endpoints == {"https://e.test"}
        await dirac.sync("c", other, "tok2", vms(1), ce="ce", now=T0)
        await dirac.close()
        assert all(c.closed for c in made) and dirac.endpoints == frozenset()

    asyncio.run(scenario())


class HangingClient(FakeClient):
    """A DiracX that accepts connections and never answers."""

    async def register_pilot(self, *, stamp: str, **_: str) -> bool:
        await asyncio.Event().wait()
        return True


def test_a_hanging_diracx_costs_one_budget_then_the_pilots_back_off() -> None:
    made: list[FakeClient] = []

    def factory(endpoint: str, token: str) -> DiracClient:
        made.append(HangingClient(endpoint, token))
        return made[-1]

    dirac = DiracLink(client_factory=factory, budget=0.05)
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(20), ce="ce", now=T0))
    assert "did not answer" in dirac.status("uid", SPEC)["lastError"]
    # Not "again in a second": every pilot the budget did not reach waits its back-off.
    delay = dirac.next_attempt("uid", SPEC, T0)
    assert delay is not None and delay >= 5.0


def test_the_wait_for_a_free_slot_counts_in_the_demand_budget() -> None:
    spec = DiracSpec.model_validate({**SPEC.model_dump(by_alias=True), "demand": {}})
    dirac, _ = link(max_concurrency=1, budget=0.05)

    async def scenario() -> None:
        async with dirac._limit(spec.endpoint):  # other pools hold every slot
            got = await asyncio.wait_for(
                dirac.target("uid", spec, "tok", ceiling=5, previous_status={}, now=T0), 10
            )
        assert got == 0  # the minimum: no read yet
        assert "timed out" in dirac.status("uid", spec)["demand"]["lastError"]

    asyncio.run(scenario())
