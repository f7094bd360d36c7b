"""Learned headroom and the fair share of an account's quota between pools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudpilot import capacity, constants
from cloudpilot.capacity import Usage
from cloudpilot.cloud import nova_limits

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_partial_create_or_a_refusal_learns_the_limit() -> None:
    partial = capacity.learn(None, live_before=0, requested=8, created=5, refused=False, now=NOW)
    assert partial is not None and partial.limit == 5
    refused = capacity.learn(None, live_before=4, requested=3, created=0, refused=True, now=NOW)
    assert refused is not None and refused.limit == 4


def test_getting_more_than_the_known_limit_forgets_it() -> None:
    known = capacity.Headroom(5, NOW)
    assert (
        capacity.learn(known, live_before=5, requested=2, created=2, refused=False, now=NOW) is None
    )
    assert (
        capacity.learn(known, live_before=1, requested=2, created=2, refused=False, now=NOW)
        is known
    )


def test_a_learned_limit_goes_stale_so_a_raised_quota_is_found() -> None:
    known = capacity.Headroom(5, NOW)
    assert capacity.effective_limit(known, NOW) == 5
    later = NOW + timedelta(seconds=constants.CAPACITY_PROBE_SECONDS)
    assert capacity.effective_limit(known, later) is None


def test_water_fill_is_max_min_fair() -> None:
    assert capacity.water_fill(6, [8, 8]) == [3, 3]
    assert capacity.water_fill(7, [8, 2]) == [5, 2]
    assert capacity.water_fill(5, [8, 8]) == [3, 2]
    assert capacity.water_fill(100, [1, 2]) == [1, 2]


def test_a_pool_above_its_share_gets_no_room_and_the_other_gets_what_is_free() -> None:
    usage = {"a": Usage(live=6, desired=8), "b": Usage(live=0, desired=8)}
    assert capacity.room_for("a", 6, usage) == 0
    assert capacity.room_for("b", 6, usage) == 0  # nothing free until a's pilots end
    usage["a"] = Usage(live=3, desired=8)
    assert capacity.room_for("a", 6, usage) == 0
    assert capacity.room_for("b", 6, usage) == 3
    assert capacity.room_for("b", None, usage) is None


def test_a_known_limit_from_a_quota_reader() -> None:
    assert capacity.known(-3, NOW, "nova-limits").limit == 0


def test_nova_limits_become_the_accounts_limit_for_cloudpilot() -> None:
    """Issue 16's reader wired in: what still fits of the flavor, on top of our live VMs."""
    nova = nova_limits.headroom(
        {
            "limits": {
                "absolute": {
                    "maxTotalInstances": 20,
                    "totalInstancesUsed": 12,
                    "maxTotalCores": 40,
                    "totalCoresUsed": 32,
                    "maxTotalRAMSize": -1,
                }
            }
        }
    )
    # 8 instances left but only 8 cores: 4 VMs of 2 vCPUs; CloudPilot runs 5 of the 12.
    limit = capacity.from_nova(nova, ours_live=5, vcpus=2, ram_mb=4096, now=NOW)
    assert limit is not None
    assert (limit.limit, limit.source) == (9, "nova-limits")
    assert capacity.effective_limit(limit, NOW) == 9


def test_unlimited_nova_limits_say_nothing() -> None:
    nova = nova_limits.headroom({"absolute": {"maxTotalInstances": -1}})
    assert capacity.from_nova(nova, ours_live=3, vcpus=1, ram_mb=1, now=NOW) is None
