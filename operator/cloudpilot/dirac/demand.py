"""Turn DiracX's waiting jobs into a desired pilot count: pure functions over plain data.

Why smoothing: jobs arrive in bursts (a production submits ten thousand at once) and drain
in a trickle. Following the raw count would start a hundred VMs for one burst and destroy
them again while their pilots still boot. So, as the Horizontal Pod Autoscaler does:

* **up** by at most ``max_step`` pilots per demand read (VMs take minutes to boot and the
  next read sees whether the jobs are still waiting);
* **down** only to the highest target of the last ``scale_down_delay`` seconds (a lull of
  one read does not undo the pool);
* always within ``[minimum, ceiling]``: ``ceiling`` is the pool's ``spec.replicas``, which a
  person or an autoscaler owns; demand never starts more.

A read that failed keeps the last target (an outage of DiracX must not drain the pool nor
grow it); before any successful read the target is the minimum, or the last target the
pool's status recorded (so an operator restart does not drop a scaled-up pool to it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class DemandPolicy:
    minimum: int
    ceiling: int
    pilots_per_job: float = 1.0
    max_step: int = 10
    scale_down_delay: timedelta = timedelta(seconds=300)

    def clamp(self, value: int) -> int:
        # A minimum above the ceiling: the ceiling (spec.replicas) wins; it is the budget.
        return max(min(value, self.ceiling), min(self.minimum, self.ceiling))


@dataclass(frozen=True)
class DemandState:
    """What one pool remembers between demand reads."""

    target: int | None = None
    jobs: int | None = None
    read_at: datetime | None = None
    recent: tuple[tuple[datetime, int], ...] = ()
    """Raw (unsmoothed) targets of the scale-down window, oldest first."""


def raw_target(jobs: int, policy: DemandPolicy) -> int:
    """Pilots the jobs would need, in bounds: ``ceil(jobs * pilotsPerJob)``."""
    return policy.clamp(math.ceil(jobs * policy.pilots_per_job - 1e-9))


def after_read(state: DemandState, jobs: int, now: datetime, policy: DemandPolicy) -> DemandState:
    """The state after a successful read of ``jobs`` waiting jobs at ``now``."""
    horizon = now - policy.scale_down_delay
    kept = tuple(r for r in state.recent if r[0] > horizon)
    recent = (*kept, (now, raw_target(jobs, policy)))
    stabilised = max(value for _, value in recent)
    previous = policy.clamp(state.target if state.target is not None else policy.minimum)
    target = min(stabilised, previous + policy.max_step) if stabilised > previous else stabilised
    return DemandState(target=policy.clamp(target), jobs=jobs, read_at=now, recent=recent)


def current_target(state: DemandState, policy: DemandPolicy) -> int:
    """The replicas to plan with now: the last target, re-bounded (the ceiling may have
    moved since it was computed), else the minimum."""
    return policy.clamp(state.target if state.target is not None else policy.minimum)


def due(state: DemandState, now: datetime, interval: timedelta) -> bool:
    """Whether demand should be read again (one read per interval per pool)."""
    return state.read_at is None or now - state.read_at >= interval


def seeded(previous_status: Mapping[str, Any]) -> DemandState:
    """The state a restarted operator starts from: the target its status last showed."""
    demand = ((previous_status.get("dirac") or {}).get("demand")) or {}
    target = demand.get("target")
    return DemandState(target=target) if isinstance(target, int) and target >= 0 else DemandState()


def job_filters(
    *,
    vo: str,
    statuses: Sequence[str],
    sites: Sequence[str] | None = None,
    job_types: Sequence[str] | None = None,
    job_groups: Sequence[str] | None = None,
    owners: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """DiracX search conditions (``/api/jobs/summary``'s ``search``) for the jobs this pool
    could run: each set filter is one ``in`` condition on a DiracX job parameter."""
    filters: list[dict[str, Any]] = [
        {"parameter": "VO", "operator": "eq", "value": vo},
        {"parameter": "Status", "operator": "in", "values": list(statuses)},
    ]
    for parameter, values in (
        ("Site", sites),
        ("JobType", job_types),
        ("JobGroup", job_groups),
        ("Owner", owners),
    ):
        if values:
            filters.append({"parameter": parameter, "operator": "in", "values": list(values)})
    return filters


def summary_count(rows: Sequence[Mapping[str, Any]]) -> int:
    """The job count of a ``/api/jobs/summary`` answer (one row per group)."""
    return sum(int(row.get("count", 0)) for row in rows)
