"""cloudpilot.dirac.link's sweep for pilots whose VM vanished unwatched: when it runs (the
first complete listing of a term, then every interval), what it sends, what stops it.

The decisions are cloudpilot.dirac.vanished's (tests/unit/test_dirac_vanished.py); the
real DiracX is exercised end to end (tests/integration/test_diracx_e2e.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from cloudpilot import constants
from cloudpilot.dirac import vanished as vn
from cloudpilot.dirac.client import DiracClient, DiracError
from cloudpilot.dirac.link import DiracLink
from cloudpilot.naming import pilot_stamp
from tests.unit.test_dirac_link import SPEC, T0, FakeClient, vms

OWNER = vn.owner_mark("ns/pool")
HOUR_AGO = (T0 - timedelta(hours=1)).replace(tzinfo=None).isoformat()


class DiracXTable(FakeClient):
    """A fake DiracX that holds pilot records and answers the sweep's search."""

    def __init__(self, endpoint: str, token: str) -> None:
        super().__init__(endpoint, token)
        self.table: dict[str, dict[str, Any]] = {}
        self.searches: list[Sequence[Mapping[str, Any]]] = []
        self.bodies: list[dict[str, dict[str, Any]]] = []
        self.search_fails: DiracError | None = None

    def add(self, vm_id: str, status: str = "Running") -> str:
        stamp = pilot_stamp(vm_id)
        self.known.add(stamp)
        self.table[stamp] = {
            "PilotStamp": stamp,
            "PilotJobReference": f"cloud://{vm_id}",
            "Status": status,
            "StatusReason": OWNER,
            "SubmissionTime": HOUR_AGO,
            "VO": SPEC.vo,
            "GridSite": SPEC.site,
            "DestinationSite": "ce",
            "Queue": "default",
        }
        return stamp

    async def update_pilots(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        await super().update_pilots(updates)
        self.bodies.append({s: dict(u) for s, u in updates.items()})
        for stamp, fields in updates.items():
            if stamp in self.table:
                self.table[stamp].update(fields)

    async def search_pilots(
        self,
        search: Sequence[Mapping[str, Any]],
        *,
        parameters: Sequence[str] | None = None,
        per_page: int = 1000,
        max_rows: int = 1000,
        slot: asyncio.Semaphore | None = None,
    ) -> list[dict[str, Any]]:
        assert slot is not None  # the endpoint's request slots, like every other call
        self.searches.append(search)
        if self.search_fails is not None:
            raise self.search_fails
        return [dict(r) for r in self.table.values() if r["Status"] in vn.LIVE_STATUSES]


def restarted(**kwargs: Any) -> tuple[DiracLink, DiracXTable]:
    """A fresh link (a new process) against a DiracX that already holds the pool's three
    pilots; the VM of ``i-2`` vanished while no operator ran."""
    table = DiracXTable("https://d.test", "tok")
    for vm_id in ("i-0", "i-1", "i-2"):
        table.add(vm_id)

    def factory(endpoint: str, token: str) -> DiracClient:
        return table

    return DiracLink(client_factory=factory, **kwargs), table


def sync(dirac: DiracLink, n: int, at: timedelta = timedelta(0), **kwargs: Any) -> None:
    asyncio.run(
        dirac.sync(
            "uid",
            SPEC,
            "tok",
            vms(n),
            ce="ce",
            now=T0 + at,
            pool_key="ns/pool",
            queues={"default"},
            **kwargs,
        )
    )


def test_the_first_complete_listing_ends_the_pilot_of_a_vanished_vm() -> None:
    dirac, table = restarted()
    sync(dirac, 2)
    assert {s: r["Status"] for s, r in table.table.items()} == {
        pilot_stamp("i-0"): "Running",
        pilot_stamp("i-1"): "Running",
        pilot_stamp("i-2"): "Deleted",
    }
    pool = vn.PoolPilots("v", "S", "ce", frozenset({"default"}), OWNER)
    assert table.searches == [vn.search_filters(pool)]
    # Every status the pool sends carries its mark: what tells its pilots from others'.
    assert all(fields["StatusReason"] == OWNER for b in table.bodies for fields in b.values())
    # Not counted as the pool's: it was never in the link's table.
    assert dirac.status("uid", SPEC) == {"registeredPilots": 2, "unregisteredPilots": 0}


def test_no_sweep_while_an_account_is_unlisted_and_one_at_the_first_complete_listing() -> None:
    dirac, table = restarted()
    sync(dirac, 2, unlisted_queues={"default"})
    assert table.searches == []
    sync(dirac, 2, at=timedelta(seconds=1))
    assert len(table.searches) == 1
    assert table.table[pilot_stamp("i-2")]["Status"] == "Deleted"


def test_one_sweep_per_interval_and_one_at_every_new_leadership_term() -> None:
    dirac, table = restarted(sweep_interval=600)
    sync(dirac, 2)
    sync(dirac, 2, at=timedelta(seconds=599))
    assert len(table.searches) == 1
    sync(dirac, 2, at=timedelta(seconds=600))
    assert len(table.searches) == 2
    sync(dirac, 2, at=timedelta(seconds=601), may_act=False)  # a standby: no DiracX call
    assert len(table.searches) == 2
    sync(dirac, 2, at=timedelta(seconds=602))  # leading again: swept at once
    assert len(table.searches) == 3


def test_a_standby_replica_never_sweeps() -> None:
    dirac, table = restarted()
    sync(dirac, 2, may_act=False)
    assert table.searches == [] and table.bodies == []


def test_a_pilot_in_its_grace_period_is_rechecked_when_it_ends() -> None:
    dirac, table = restarted(sweep_interval=600, vanished_grace=600)
    young = table.add("i-3")
    table.table[young]["SubmissionTime"] = (T0 - timedelta(seconds=500)).isoformat()
    sync(dirac, 2)
    assert table.table[young]["Status"] == "Running"
    sync(dirac, 2, at=timedelta(seconds=99))
    assert len(table.searches) == 1
    sync(dirac, 2, at=timedelta(seconds=100))
    assert table.table[young]["Status"] == "Deleted"


def test_a_failed_sweep_is_shown_and_retried_later() -> None:
    dirac, table = restarted()
    table.search_fails = DiracError("DiracX POST /api/pilots/search: HTTP 503: busy")
    sync(dirac, 2)
    assert "503" in dirac.status("uid", SPEC)["lastError"]
    retry = timedelta(seconds=constants.DIRAC_SWEEP_RETRY)
    sync(dirac, 2, at=retry - timedelta(seconds=1))
    assert len(table.searches) == 1
    table.search_fails = None
    sync(dirac, 2, at=retry)
    assert len(table.searches) == 2
    assert "lastError" not in dirac.status("uid", SPEC)
    assert table.table[pilot_stamp("i-2")]["Status"] == "Deleted"


def test_without_the_pool_key_there_is_no_mark_and_no_sweep() -> None:
    dirac, table = restarted()
    asyncio.run(dirac.sync("uid", SPEC, "tok", vms(2), ce="ce", now=T0))
    assert table.searches == []
    assert all("StatusReason" not in f for b in table.bodies for f in b.values())
