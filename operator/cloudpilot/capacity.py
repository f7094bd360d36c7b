"""What a cloud account has room for, learned from its answers, and shared fairly.

A pool asks EC2 for ``MinCount = 1 .. MaxCount = n`` and takes what fits. What it is given
(fewer than asked, or a quota/capacity refusal) tells the account's headroom: the VMs
CloudPilot runs there plus what was just created is all the account allows right now. That
limit is then used instead of asking for the same refused size again, and shared between
the pools on the account (max-min fair: every pool gets up to the same level, a pool that
wants less leaves the rest to the others). Running pilots are never killed to make room:
a pool above its share just does not replace its pilots as they end.

A learned limit can go stale (a raised quota, another tenant's VMs gone): after
:data:`~cloudpilot.constants.CAPACITY_PROBE_SECONDS` the whole demand is asked for once
more, and the answer is learned again. Where the API tells the quota (OpenStack's compute
limits, issue 16) a :class:`HeadroomSource` feeds it in with :func:`known` instead.

Every function is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cloudpilot import constants
from cloudpilot.cloud import nova_limits


@dataclass(frozen=True)
class Headroom:
    """The most CloudPilot VMs the account holds, as learned at ``learned_at``."""

    limit: int
    learned_at: datetime
    source: str = "refusal"
    """``refusal`` / ``partial`` (learned from a create) or the name of a quota reader."""


class HeadroomSource(Protocol):
    """Something that reads an account's quota from its API (OpenStack's ``/limits``:
    ``maxTotalInstances`` less the instances that are not CloudPilot's). Returns the most
    CloudPilot VMs the account allows, or None when it cannot tell."""

    def limit(self) -> int | None: ...


def known(limit: int, now: datetime, source: str) -> Headroom:
    """A limit a :class:`HeadroomSource` read from the API: trusted like a learned one."""
    return Headroom(limit=max(limit, 0), learned_at=now, source=source)


def from_nova(
    nova: nova_limits.Headroom, *, ours_live: int, vcpus: int, ram_mb: int, now: datetime
) -> Headroom | None:
    """The account's limit for CloudPilot from Nova's ``/limits`` (issue 16's reader):
    the VMs of the queue's flavor that still fit, on top of the ones CloudPilot runs there
    (Nova's usage already counts them). None: Nova enforces no limit that applies."""
    fit = nova.vms_that_fit(vcpus=vcpus, ram_mb=ram_mb)
    if fit is None:
        return None
    return known(ours_live + fit, now, "nova-limits")


def learn(
    current: Headroom | None,
    *,
    live_before: int,
    requested: int,
    created: int,
    refused: bool,
    now: datetime,
) -> Headroom | None:
    """The account's headroom after one create of ``requested`` VMs gave ``created``.

    ``live_before``: CloudPilot's live VMs on the account when the create went out (every
    pool's). Fewer than asked, or a quota/capacity refusal: the account is full at
    ``live_before + created``. Everything asked for, beyond the known limit: the quota grew,
    forget the limit.
    """
    if refused or created < requested:
        return Headroom(
            limit=live_before + created, learned_at=now, source="refusal" if refused else "partial"
        )
    if current is not None and live_before + created > current.limit:
        return None
    return current


def effective_limit(headroom: Headroom | None, now: datetime) -> int | None:
    """The limit to plan with now; None: not known, or stale (ask for all, learn again)."""
    if headroom is None:
        return None
    if now - headroom.learned_at >= timedelta(seconds=constants.CAPACITY_PROBE_SECONDS):
        return None
    return headroom.limit


def water_fill(total: int, wants: Sequence[int]) -> list[int]:
    """Max-min fair shares of ``total`` between claimants wanting ``wants``: every one
    gets ``min(want, level)`` for the highest level that fits, and what is left (fewer than
    the claimants still wanting) goes one each to the first of them in order."""
    if sum(wants) <= total:
        return list(wants)
    level, left = 0, max(total, 0)
    ordered = sorted(wants)
    for index, want in enumerate(ordered):
        unfilled = len(ordered) - index
        step = (want - level) * unfilled
        if step > left:
            level += left // unfilled
            left %= unfilled
            break
        left -= step
        level = want
    shares = [min(want, level) for want in wants]
    for index, want in enumerate(wants):
        if left == 0:
            break
        if want > level:
            shares[index] += 1
            left -= 1
    return shares


@dataclass(frozen=True)
class Usage:
    """One pool's use of an account, as it reported it in its last cycle."""

    live: int
    desired: int


def room_for(pool: str, limit: int | None, usage: Mapping[str, Usage]) -> int | None:
    """How many more VMs ``pool`` may create on the account (None: no known limit).

    Its fair share of ``limit`` less what it runs, and never more than the account has
    free (a pool above its share keeps its pilots; the others wait for them to end).
    """
    if limit is None:
        return None
    pools = sorted(usage)
    shares = dict(zip(pools, water_fill(limit, [usage[p].desired for p in pools]), strict=True))
    mine = usage.get(pool, Usage(0, 0))
    free = limit - sum(u.live for u in usage.values())
    return max(min(shares.get(pool, 0) - mine.live, free), 0)


def allows(pool: str, limit: int | None, usage: Mapping[str, Usage]) -> int | None:
    """How many VMs in all the pool may run on the account now (None: not limited)."""
    room = room_for(pool, limit, usage)
    if room is None:
        return None
    return usage.get(pool, Usage(0, 0)).live + room
