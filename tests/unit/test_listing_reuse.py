"""When a listing made for one pool serves another (cloudpilot.cloud.listing_reuse).

The rule decides whether a new pool on an account the reconciler already lists creates at
once (no listing round trip), so each refusal and the acceptance are pinned here; and the
write log is one per reconciler, so that a create under a prefix holds back every listing
of it, whichever credentials or endpoint they were made with. Fake clocks: no sleeps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from cloudpilot import naming
from cloudpilot.cloud.gateway import (
    CloudGateway,
    CreateRequest,
    CreateResult,
    Credentials,
    _reported,
)
from cloudpilot.cloud.listing import SharedListing
from cloudpilot.cloud.listing_reuse import Unserved, WriteLog, create_hold_left, unserved
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.memory import UNCERTAIN_HOLD, CloudError, ErrorKind
from tests.support import builders
from tests.support.listing_fakes import Clock, Node

NEVER = float("-inf")


@dataclass(frozen=True)
class Made:
    started: float
    seq: int


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


# -- uncertain creates: held per queue prefix, whichever pool object made them ---------------


def test_a_create_is_held_for_the_hold_after_an_uncertain_one_and_no_longer() -> None:
    assert create_hold_left(100.0, now=100.0, hold=7.0) == 7.0
    assert create_hold_left(100.0, now=106.5, hold=7.0) == pytest.approx(0.5)
    assert create_hold_left(100.0, now=107.0, hold=7.0) <= 0
    assert create_hold_left(100.0, now=200.0, hold=7.0) < 0


def test_the_write_log_holds_only_the_queue_whose_create_was_uncertain() -> None:
    clock = Clock()
    log = WriteLog(horizon=60.0, clock=clock, uncertain_hold=7.0)
    assert log.create_hold_left("cp-p-q-") <= 0  # nothing noted
    log.note_uncertain("cp-p-q-")
    clock.now += 2.0
    assert log.create_hold_left("cp-p-q-") == pytest.approx(5.0)
    assert log.create_hold_left("cp-p-other-") <= 0
    clock.now += 5.0
    assert log.create_hold_left("cp-p-q-") <= 0


def test_the_write_log_forgets_uncertain_marks_once_their_hold_is_over() -> None:
    clock = Clock()
    log = WriteLog(horizon=60.0, clock=clock, uncertain_hold=7.0)
    log.note_uncertain("cp-a-")
    clock.now += 8.0
    log.note_uncertain("cp-b-")
    assert list(log._uncertain) == ["cp-b-"]


def test_the_default_hold_is_the_pools_own() -> None:
    assert WriteLog(horizon=60.0).uncertain_hold == UNCERTAIN_HOLD


class _Gateway(CloudGateway):
    """A gateway whose creates answer from a script, counting what would be sent."""

    def __init__(self, log: WriteLog, *answers: CreateResult | BaseException) -> None:
        super().__init__(
            builders.account(),
            Credentials("key", "secret"),
            limiter=TokenBucket(1e3, 1000),
            write_log=log,
        )
        self.answers = list(answers)
        self.sent = 0

    async def _create(self, request: CreateRequest) -> CreateResult:
        self.sent += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _request(pool: str = builders.POOL, name: str = "default") -> CreateRequest:
    q = builders.queue(name, pool_name=pool)
    return CreateRequest(queue=q, count=3, name="vm", user_data=b"", tags={})


_TIMEOUT = CloudError(ErrorKind.TRANSIENT, "ReadTimeout", "create", uncertain=True)
_QUOTA = CloudError(ErrorKind.QUOTA, "InstanceLimitExceeded", "create")


async def test_after_an_uncertain_create_the_next_one_under_its_queue_is_refused_unsent() -> None:
    """Whichever gateway (credentials) or pool object (uid) sends it: the log is the
    reconciler's, the mark is the queue prefix (a pool applied again has the same)."""
    clock = Clock()
    log = WriteLog(horizon=60.0, clock=clock, uncertain_hold=7.0)
    first = _Gateway(log, CreateResult("default", 3, error=_TIMEOUT))
    again = _Gateway(log, CreateResult("default", 3), CreateResult("default", 3))
    assert (await first.create(_request())).error == _TIMEOUT
    # Listings started before the failure do not serve the pool's prefix (note, as ever).
    assert log.last(naming.pool_prefix(builders.NAMESPACE, builders.POOL)) == 100.0
    clock.now += 1.0
    held = await again.create(_request())
    assert again.sent == 0
    assert held.error is not None and held.error.uncertain and held.created == ()
    assert held.error.kind is ErrorKind.TRANSIENT  # the pool's usual back-off and hold
    # Another queue of the pool, and another pool, are not held.
    assert (await again.create(_request(name="other"))).error is None
    assert (await again.create(_request(pool="another"))).error is None
    assert again.sent == 2


async def test_the_hold_ends_and_a_refused_create_does_not_extend_it() -> None:
    clock = Clock()
    log = WriteLog(horizon=60.0, clock=clock, uncertain_hold=7.0)
    gateway = _Gateway(log, CreateResult("default", 3, error=_TIMEOUT), CreateResult("default", 3))
    await gateway.create(_request())
    clock.now += 6.0
    assert (await gateway.create(_request())).error is not None  # held, not sent
    clock.now += 1.0
    assert (await gateway.create(_request())).error is None
    assert gateway.sent == 2


async def test_a_certain_failure_does_not_hold_the_queue() -> None:
    log = WriteLog(horizon=60.0, clock=Clock(), uncertain_hold=7.0)
    gateway = _Gateway(log, CreateResult("default", 3, error=_QUOTA), CreateResult("default", 3))
    await gateway.create(_request())
    assert (await gateway.create(_request())).error is None
    assert gateway.sent == 2


async def test_a_create_cancelled_in_flight_holds_the_queue() -> None:
    """Cancelled while its call was out (a cycle cancelled, a pool deleted): the worker
    thread still sends it, so its outcome is as unknown as a timeout's."""
    log = WriteLog(horizon=60.0, clock=Clock(), uncertain_hold=7.0)
    gateway = _Gateway(log, asyncio.CancelledError(), CreateResult("default", 3))
    with pytest.raises(asyncio.CancelledError):
        await gateway.create(_request())
    assert (await gateway.create(_request())).error is not None
    assert gateway.sent == 1


def test_an_uncertain_batch_failure_is_the_one_reported() -> None:
    """A quota refusal of one batch and a timeout of another: the pool must hold."""
    assert _reported([_QUOTA, _TIMEOUT]) is _TIMEOUT
    assert _reported([_QUOTA]) is _QUOTA
    assert _reported([]) is None
