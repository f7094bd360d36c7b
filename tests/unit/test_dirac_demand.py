"""cloudpilot.dirac.demand: waiting jobs to a bounded, smoothed pilot target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudpilot.dirac import demand as dm

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = dm.DemandPolicy(minimum=1, ceiling=20, max_step=5, scale_down_delay=timedelta(seconds=300))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_target_is_jobs_times_ratio_rounded_up_within_minimum_and_ceiling() -> None:
    half = dm.DemandPolicy(minimum=2, ceiling=10, pilots_per_job=0.5, max_step=100)
    assert dm.raw_target(0, half) == 2
    assert dm.raw_target(5, half) == 3  # ceil(2.5)
    assert dm.raw_target(1000, half) == 10


def test_minimum_above_the_ceiling_yields_the_ceiling() -> None:
    assert dm.raw_target(0, dm.DemandPolicy(minimum=8, ceiling=3)) == 3


def test_a_burst_raises_the_target_by_at_most_the_step_per_read() -> None:
    state = dm.after_read(dm.DemandState(), 1000, at(0), POLICY)
    assert state.target == 6  # minimum 1 + step 5
    state = dm.after_read(state, 1000, at(60), POLICY)
    assert state.target == 11
    for n in range(2, 6):
        state = dm.after_read(state, 1000, at(60 * n), POLICY)
    assert state.target == 20  # the ceiling, never more


def test_the_target_falls_only_after_the_scale_down_window() -> None:
    state = dm.DemandState(target=10, recent=((at(0), 10),))
    state = dm.after_read(state, 0, at(60), POLICY)
    assert state.target == 10  # 10 was wanted within the last 300 s
    state = dm.after_read(state, 0, at(301), POLICY)
    assert state.target == 1
    assert state.jobs == 0 and state.read_at == at(301)


def test_a_lowered_ceiling_bounds_the_current_target_at_once() -> None:
    state = dm.DemandState(target=15)
    assert dm.current_target(state, dm.DemandPolicy(minimum=1, ceiling=4)) == 4
    assert dm.current_target(dm.DemandState(), POLICY) == 1


def test_a_restarted_operator_starts_from_the_target_its_status_showed() -> None:
    assert dm.seeded({"dirac": {"demand": {"target": 7}}}).target == 7
    assert dm.seeded({}).target is None
    assert dm.seeded({"dirac": {"demand": {"target": "x"}}}).target is None


def test_filters_name_the_vo_and_statuses_and_each_set_filter() -> None:
    filters = dm.job_filters(vo="lhcb", statuses=["Waiting"], sites=["S", "ANY"], job_types=None)
    assert filters == [
        {"parameter": "VO", "operator": "eq", "value": "lhcb"},
        {"parameter": "Status", "operator": "in", "values": ["Waiting"]},
        {"parameter": "Site", "operator": "in", "values": ["S", "ANY"]},
    ]


def test_summary_rows_are_summed() -> None:
    assert dm.summary_count([{"Status": "Waiting", "count": 3}, {"Status": "X", "count": 2}]) == 5
    assert dm.summary_count([]) == 0


def test_due_once_per_interval() -> None:
    state = dm.DemandState(read_at=at(0))
    assert not dm.due(state, at(59), timedelta(seconds=60))
    assert dm.due(state, at(60), timedelta(seconds=60))
    assert dm.due(dm.DemandState(), at(0), timedelta(seconds=60))
