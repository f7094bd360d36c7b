"""When a listing made for one pool serves another (cloudpilot.cloud.listing_reuse).

The rule decides whether a new pool on an account the reconciler already lists creates at
once (no listing round trip), so each refusal and the acceptance are pinned here; and the
write log is one per reconciler, so that a create under a prefix holds back every listing
of it, whichever credentials or endpoint they were made with. Fake clocks: no sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cloudpilot.cloud.listing import SharedListing
from cloudpilot.cloud.listing_reuse import Unserved, WriteLog, unserved

NEVER = float("-inf")


@dataclass(frozen=True)
class Made:
    started: float
    seq: int


@dataclass(frozen=True)
class Node:
    name: str


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_young_listing_serves_a_pool_that_never_had_one() -> None:
    """A new pool (never served: ``seen`` None) on an account listed 29 s ago."""
    assert unserved(Made(71.0, 4), now=100.0, max_age=30.0, last_write=NEVER, seen=None) is None


def test_a_young_listing_made_after_the_last_write_under_the_prefix_serves() -> None:
    """A pool applied again after its predecessor's creates: the listing shows them."""
    made = Made(90.0, 4)
    assert unserved(made, now=100.0, max_age=30.0, last_write=89.0, seen=None) is None
    assert unserved(made, now=100.0, max_age=30.0, last_write=90.0, seen=3) is None


@pytest.mark.parametrize(
    ("latest", "last_write", "seen", "why"),
    [
        # A restart or a new leadership term: nothing listed by this reconciler yet.
        (None, NEVER, None, Unserved.NONE_YET),
        # Exactly max_age old is too old (the reuse window is half an interval).
        (Made(70.0, 4), NEVER, None, Unserved.TOO_OLD),
        # Started before a create under the prefix returned: it may lack its VMs.
        (Made(90.0, 4), 90.5, None, Unserved.BEFORE_LAST_WRITE),
        # The pool had this one: it must see something newer.
        (Made(90.0, 4), NEVER, 4, Unserved.ALREADY_SEEN),
    ],
)
def test_a_listing_is_not_served(
    latest: Made | None, last_write: float, seen: int | None, why: Unserved
) -> None:
    assert unserved(latest, now=100.0, max_age=30.0, last_write=last_write, seen=seen) is why


def test_too_old_wins_over_a_write_it_predates() -> None:
    """Both hold: the reason is the age (a write older than max_age may be forgotten)."""
    got = unserved(Made(60.0, 1), now=100.0, max_age=30.0, last_write=65.0, seen=None)
    assert got is Unserved.TOO_OLD


async def test_a_write_through_one_listing_holds_back_the_others_of_the_reconciler() -> None:
    """Two Secrets for one cloud account: two shared listings. A pool applied again with the
    other Secret must not get that one's listing made before its predecessor's VMs."""
    clock = Clock()
    log = WriteLog(horizon=60.0, clock=clock)
    first: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock, writes=log)
    second: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock, writes=log)
    fetches: list[str] = []

    async def fetch() -> tuple[Node, ...]:
        fetches.append("listed")
        return ()

    old = await second.get("keeper", fetch, "cp-k-")  # made before the orphans existed
    clock.now += 1.0
    first.note_write("cp-p-")  # the predecessor's create, through the other credentials
    clock.now += 1.0
    again = await second.get("new-uid", fetch, "cp-p-")
    assert again.seq == old.seq + 1 and len(fetches) == 2
    # Other prefixes are not held back.
    assert await second.get("other", fetch, "cp-q-") is again


def test_a_listing_alone_keeps_its_own_log() -> None:
    clock = Clock()
    alone: SharedListing[Node] = SharedListing(max_age=30.0, clock=clock)
    alone.note_write("cp-p-")
    assert alone.writes.last("cp-p-") == clock.now
    assert alone.writes.last("cp-q-") == NEVER and alone.writes.last(None) == NEVER


def test_a_log_that_forgets_sooner_than_listings_live_is_refused() -> None:
    """A mark dropped while a listing it should hold back is still served would let that
    listing through. A tick's listing is served for up to one interval (max_age 30 s is
    half of a 60 s interval), so a 30 s log is too short too."""
    with pytest.raises(ValueError):
        SharedListing(max_age=30.0, writes=WriteLog(horizon=10.0))
    with pytest.raises(ValueError):
        SharedListing(max_age=30.0, writes=WriteLog(horizon=30.0))
    SharedListing(max_age=30.0, writes=WriteLog(horizon=60.0))


def test_a_listing_started_since_the_latest_tick_serves_the_whole_tick() -> None:
    """Older than max_age, but made at or after the account's latest tick: it still serves
    (the tick's burst of quiet pools); made before the tick, it is too old."""
    made = Made(started=100.0, seq=3)

    def why(tick_start: float | None) -> Unserved | None:
        return unserved(
            made, now=140.0, max_age=30.0, last_write=NEVER, seen=None, tick_start=tick_start
        )

    assert why(100.0) is None
    assert why(101.0) is Unserved.TOO_OLD
    assert why(None) is Unserved.TOO_OLD
