"""cloudpilot.dirac.vanished: which of DiracX's live pilots lost their VM unwatched.

Every rule that keeps a pilot is shown keeping it: a wrong ``Deleted`` is final in DiracX,
so each test pairs the rule with a pilot that is ended under the same conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudpilot.dirac import vanished as vn
from cloudpilot.naming import pilot_stamp

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=10)
POOL = vn.PoolPilots(
    vo="lhcb",
    site="CLOUD.site.example",
    ce="ce.example",
    queues=frozenset({"default", "big"}),
    owner=vn.owner_mark("grid/pool-a"),
)


def row(vm_id: str, **changes: Any) -> dict[str, Any]:
    """A DiracX record of one of POOL's pilots, registered an hour ago, alive."""
    record: dict[str, Any] = {
        "PilotID": 1,
        "PilotStamp": pilot_stamp(vm_id),
        "PilotJobReference": f"cloud://{vm_id}",
        "Status": "Running",
        "StatusReason": POOL.owner,
        "SubmissionTime": (NOW - timedelta(hours=1)).replace(tzinfo=None).isoformat(),
        "VO": "lhcb",
        "GridSite": "CLOUD.site.example",
        "DestinationSite": "ce.example",
        "Queue": "default",
    }
    record.update(changes)
    return record


def sweep(rows: list[dict[str, Any]], **kwargs: Any) -> vn.Sweep:
    args: dict[str, Any] = {
        "present": set(),
        "tracked": set(),
        "complete": True,
        "now": NOW,
        "grace": GRACE,
    }
    args.update(kwargs)
    return vn.vanished(rows, POOL, **args)


def test_a_live_pilot_whose_vm_is_gone_is_stale_and_listed_ones_are_kept() -> None:
    found = sweep([row("i-gone"), row("i-here"), row("i-pending")], present={"i-here", "i-pending"})
    assert found == vn.Sweep(stale=(pilot_stamp("i-gone"),))


def test_nothing_is_stale_when_an_account_could_not_be_listed() -> None:
    assert sweep([row("i-gone")], complete=False) == vn.Sweep()


def test_a_pilot_the_link_tracks_is_left_to_it() -> None:
    assert sweep([row("i-gone")], tracked={pilot_stamp("i-gone")}).stale == ()


@pytest.mark.parametrize("status", ["Submitted", "Waiting", "Running", "Unknown"])
def test_every_live_status_counts(status: str) -> None:
    assert sweep([row("i-gone", Status=status)]).stale == (pilot_stamp("i-gone"),)


@pytest.mark.parametrize("status", ["Done", "Failed", "Deleted", "Aborted"])
def test_a_pilot_in_a_final_status_is_ignored(status: str) -> None:
    assert sweep([row("i-gone", Status=status)]).stale == ()


def test_another_pools_pilot_on_the_same_ce_and_queue_is_kept() -> None:
    other = vn.owner_mark("grid/pool-b")
    assert sweep([row("i-b", StatusReason=other), row("i-a")]).stale == (pilot_stamp("i-a"),)


def test_a_pilot_without_the_pools_mark_is_kept() -> None:
    # Registered, but its first status (and mark) never sent; or StatusReason changed by
    # someone else since: not proven to be the pool's.
    assert sweep([row("i-1", StatusReason="Unknown"), row("i-2", StatusReason=None)]).stale == ()


@pytest.mark.parametrize(
    "changes",
    [
        {"VO": "atlas"},
        {"GridSite": "CLOUD.other.example"},
        {"DestinationSite": "other-ce.example"},
        {"Queue": "removed-queue"},
    ],
)
def test_a_pilot_of_another_vo_site_ce_or_queue_is_kept(changes: dict[str, str]) -> None:
    assert sweep([row("i-gone", **changes)]).stale == ()


def test_pilots_cloudpilot_did_not_start_are_kept() -> None:
    site_director = row("i-sd", PilotStamp="0a1b2c3d")  # DIRAC's Cloud CE: cloud://, 8 hex
    batch = row("i-x", PilotJobReference="htcondor://ce/123")
    no_reference = row("i-y", PilotJobReference=None)
    empty_id = row("", PilotStamp=pilot_stamp(""))
    assert sweep([site_director, batch, no_reference, empty_id]).stale == ()


def test_a_pilot_registered_within_the_grace_period_waits_for_a_recheck() -> None:
    young = (NOW - timedelta(minutes=3)).isoformat()
    found = sweep([row("i-young", SubmissionTime=young), row("i-old")])
    assert found.stale == (pilot_stamp("i-old"),)
    assert found.recheck_at == NOW + timedelta(minutes=7)


def test_exactly_the_grace_period_old_is_stale() -> None:
    at_grace = (NOW - GRACE).replace(tzinfo=None).isoformat()
    assert sweep([row("i-1", SubmissionTime=at_grace)]).stale == (pilot_stamp("i-1"),)


@pytest.mark.parametrize("moment", [None, "", "yesterday", 1234])
def test_a_pilot_of_unknown_age_is_kept(moment: object) -> None:
    assert sweep([row("i-1", SubmissionTime=moment)]) == vn.Sweep()


def test_submission_time_is_utc_with_or_without_an_offset() -> None:
    expected = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert vn.submission_time("2026-03-01T10:00:00") == expected
    assert vn.submission_time("2026-03-01T10:00:00Z") == expected
    assert vn.submission_time("2026-03-01T11:00:00+01:00") == expected


def test_pilots_from_every_page_are_judged_together_and_once() -> None:
    page_one = [row(f"i-{k}", PilotID=k) for k in range(3)]
    page_two = [row("i-2", PilotID=2), row("i-3", PilotID=3)]  # a row repeated by a shift
    found = sweep([*page_one, *page_two], present={"i-0"})
    assert found.stale == tuple(sorted(pilot_stamp(f"i-{k}") for k in (1, 2, 3)))


def test_the_search_asks_the_server_for_the_same_pilots_the_rules_keep() -> None:
    filters = {f["parameter"]: f for f in vn.search_filters(POOL)}
    assert filters["VO"]["value"] == "lhcb"
    assert filters["GridSite"]["value"] == "CLOUD.site.example"
    assert filters["DestinationSite"]["value"] == "ce.example"
    assert filters["Queue"]["values"] == ["big", "default"]
    assert filters["Status"]["values"] == list(vn.LIVE_STATUSES)
    assert filters["StatusReason"]["value"] == POOL.owner
    assert filters["PilotJobReference"] == {
        "parameter": "PilotJobReference",
        "operator": "like",
        "value": "cloud://%",
    }
    assert set(vn.SEARCH_PARAMETERS) >= set(row("i-1"))


def test_the_owner_mark_fits_diracx_and_tells_long_pool_names_apart() -> None:
    assert vn.owner_mark("grid/pool-a") == "CloudPilotPool grid/pool-a"
    long_a, long_b = "n" * 63 + "/" + "a" * 253, "n" * 63 + "/" + "a" * 252 + "b"
    assert len(vn.owner_mark(long_a)) <= 255
    assert vn.owner_mark(long_a) != vn.owner_mark(long_b)


def test_the_next_sweep_is_due_after_the_interval_a_recheck_or_a_retry() -> None:
    interval, retry = timedelta(minutes=10), timedelta(minutes=1)
    assert vn.next_sweep(NOW, interval, vn.Sweep(), retry) == NOW + interval
    soon = vn.Sweep(recheck_at=NOW + timedelta(minutes=2))
    assert vn.next_sweep(NOW, interval, soon, retry) == NOW + timedelta(minutes=2)
    late = vn.Sweep(recheck_at=NOW + timedelta(hours=2))
    assert vn.next_sweep(NOW, interval, late, retry) == NOW + interval
    assert vn.next_sweep(NOW, interval, None, retry) == NOW + retry
