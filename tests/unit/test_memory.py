"""What a pool remembers between listings: pending creations, deletions, back-off.

Memory makes up for a lagging cloud (a VM not yet listed, a destroyed VM still listed) and
spaces out retries after failures. It must only ever forget on its own (TTLs) and never
outgrow the listing, or a restart would behave differently from a long-running operator.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudpilot import constants
from cloudpilot.memory import (
    PERSISTENT_KINDS,
    ErrorKind,
    PoolMemory,
    backoff_delay,
    in_backoff,
    observe,
    outage_lasted,
    pending_as_observed,
    record_created,
    record_deleting,
    record_failure,
    record_outage,
    record_success,
)
from cloudpilot.models.vms import Phase
from tests.support.builders import NOW, ago, backoff, cloud_error, memory, pending

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ModuleNotFoundError:  # pragma: no cover - optional: property tests need hypothesis
    st = None


def test_observe_forgets_pending_creations_the_listing_now_shows() -> None:
    """Once listed, a VM is counted from the listing; memory must not count it again."""
    seen, unseen = pending(), pending()
    after = observe(memory(pending=[seen, unseen]), [seen.id, "i-other"], NOW)
    assert set(after.pending) == {unseen.id}


def test_observe_forgets_pending_creations_past_their_ttl() -> None:
    """A VM the cloud never lists after ten minutes never came; stop counting it."""
    old = pending(age=constants.PENDING_CREATE_TTL)
    young = pending(age=constants.PENDING_CREATE_TTL - 1)
    after = observe(memory(pending=[old, young]), [], NOW)
    assert set(after.pending) == {young.id}


def test_observe_keeps_deletions_while_the_cloud_still_lists_the_vm() -> None:
    """EC2 lists a destroyed VM as shutting-down for a while: it stays "being deleted"."""
    after = observe(memory(deleting=["i-1"]), ["i-1"], NOW)
    assert set(after.deleting) == {"i-1"}


def test_observe_forgets_deletions_of_vms_no_longer_listed() -> None:
    after = observe(memory(deleting=["i-1", "i-2"]), ["i-2"], NOW)
    assert set(after.deleting) == {"i-2"}


def test_observe_forgets_deletions_past_their_ttl_so_they_are_retried() -> None:
    """A destroy the cloud accepted but never carried out must be tried again."""
    stale = {"i-old": ago(constants.DELETING_TTL), "i-new": ago(constants.DELETING_TTL - 1)}
    after = observe(memory(deleting=stale), ["i-old", "i-new"], NOW)
    assert set(after.deleting) == {"i-new"}


def test_observe_keeps_backoff() -> None:
    """A listing says nothing about why creations failed; back-off outlives it."""
    before = memory(backoff={"q": backoff()})
    assert observe(before, [], NOW).backoff == before.backoff


def test_observe_does_not_change_its_input() -> None:
    entry = pending()
    before = memory(pending=[entry], deleting=["i-1"])
    observe(before, [entry.id], NOW)
    assert set(before.pending) == {entry.id}
    assert set(before.deleting) == {"i-1"}


def test_record_created_adds_to_pending() -> None:
    a, b = pending(), pending()
    after = record_created(record_created(PoolMemory(), [a]), [b])
    assert set(after.pending) == {a.id, b.id}


def test_record_deleting_stamps_the_time() -> None:
    after = record_deleting(memory(deleting={"i-1": ago(100)}), ["i-2", "i-3"], NOW)
    assert after.deleting == {"i-1": ago(100), "i-2": NOW, "i-3": NOW}


def test_pending_creations_are_shown_as_starting_vms() -> None:
    entry = pending("gpu", age=3)
    (shown,) = pending_as_observed(memory(pending=[entry]))
    assert (shown.id, shown.name, shown.queue) == (entry.id, entry.name, "gpu")
    assert shown.phase is Phase.STARTING
    assert shown.created_at == ago(3)


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 5])
def test_backoff_doubles_with_each_failure(failures: int) -> None:
    delay = backoff_delay(failures, ErrorKind.QUOTA, initial=10, maximum=10_000, jitter=0.999999)
    assert delay == pytest.approx(10 * 2 ** (failures - 1), rel=1e-5)


def test_backoff_is_capped() -> None:
    delays = [
        backoff_delay(n, ErrorKind.TRANSIENT, initial=10, maximum=600, jitter=0.999999)
        for n in range(1, 30)
    ]
    assert max(delays) <= 600
    assert delays[-1] == pytest.approx(600, rel=1e-5)


def test_backoff_survives_a_pool_that_fails_for_weeks() -> None:
    """Failure counts only grow while a quota stays exhausted: after ~1,000 failures the
    nominal delay overflows a float, which must not crash the reconciler."""
    for failures in (1_024, 1_100, 100_000):
        delay = backoff_delay(
            failures,
            ErrorKind.QUOTA,
            initial=constants.BACKOFF_INITIAL,
            maximum=constants.BACKOFF_MAX,
            jitter=0.0,
        )
        assert delay == constants.BACKOFF_MAX / 2


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_keeps_the_delay_between_half_and_all_of_nominal(jitter: float) -> None:
    """Pools that failed together retry spread out, but never sooner than half the delay."""
    delay = backoff_delay(3, ErrorKind.TRANSIENT, initial=10, maximum=600, jitter=jitter)
    assert 20 <= delay < 40
    assert delay == pytest.approx(40 * (0.5 + jitter / 2))


def test_bad_credentials_back_off_longer_than_other_failures() -> None:
    """Rejected credentials need a human; fast retries only fill the cloud's audit log."""
    many = 30
    creds = backoff_delay(
        many,
        ErrorKind.BAD_CREDENTIALS,
        initial=constants.BACKOFF_INITIAL,
        maximum=constants.BACKOFF_MAX,
        jitter=0.999999,
    )
    other = backoff_delay(
        many,
        ErrorKind.QUOTA,
        initial=constants.BACKOFF_INITIAL,
        maximum=constants.BACKOFF_MAX,
        jitter=0.999999,
    )
    assert other == pytest.approx(constants.BACKOFF_MAX, rel=1e-5)
    assert creds == pytest.approx(constants.BACKOFF_MAX_BAD_CREDENTIALS, rel=1e-5)
    assert creds > other


def test_bad_credentials_never_back_off_less_than_other_failures() -> None:
    for failures in range(1, 20):
        args = {"initial": 10.0, "maximum": 600.0, "jitter": 0.5}
        assert backoff_delay(failures, ErrorKind.BAD_CREDENTIALS, **args) >= backoff_delay(
            failures, ErrorKind.TRANSIENT, **args
        )


def test_record_failure_counts_failures_per_queue_and_sets_retry_time() -> None:
    error = cloud_error(ErrorKind.QUOTA)
    once = record_failure(PoolMemory(), "a", error, NOW, initial=10, maximum=600, jitter=0.0)
    twice = record_failure(once, "a", error, NOW, initial=10, maximum=600, jitter=0.0)
    other = record_failure(twice, "b", error, NOW, initial=10, maximum=600, jitter=0.0)
    assert once.backoff["a"].failures == 1
    assert once.backoff["a"].retry_at == NOW + timedelta(seconds=5)
    assert twice.backoff["a"].failures == 2
    assert twice.backoff["a"].retry_at == NOW + timedelta(seconds=10)
    assert other.backoff["b"].failures == 1
    assert other.backoff["a"] == twice.backoff["a"]
    assert other.backoff["a"].error == error


def test_record_failure_without_jitter_argument_stays_in_range() -> None:
    after = record_failure(PoolMemory(), "q", cloud_error(), NOW, initial=10, maximum=600)
    delay = (after.backoff["q"].retry_at - NOW).total_seconds()
    assert 5 <= delay < 10


def test_record_failure_uses_the_documented_defaults() -> None:
    """Transient faults (throttling, 5xx, timeouts) are retried after 2 s, others after 10 s
    (both halved at the bottom of the jitter range)."""
    after = record_failure(PoolMemory(), "q", cloud_error(ErrorKind.QUOTA), NOW, jitter=0.0)
    assert after.backoff["q"].retry_at == NOW + timedelta(seconds=constants.BACKOFF_INITIAL / 2)
    transient = cloud_error(ErrorKind.TRANSIENT)
    after = record_failure(PoolMemory(), "q", transient, NOW, jitter=0.0)
    initial = constants.BACKOFF_INITIAL_TRANSIENT
    assert after.backoff["q"].retry_at == NOW + timedelta(seconds=initial / 2)


def test_record_success_clears_that_queues_backoff_only() -> None:
    before = memory(backoff={"a": backoff(), "b": backoff()})
    after = record_success(before, "a")
    assert set(after.backoff) == {"b"}
    assert record_success(after, "a") is after


def test_success_after_failures_restarts_backoff_from_the_beginning() -> None:
    error = cloud_error()
    failed = PoolMemory()
    for _ in range(5):
        failed = record_failure(failed, "q", error, NOW, initial=10, maximum=600, jitter=0.0)
    again = record_failure(record_success(failed, "q"), "q", error, NOW, initial=10, jitter=0.0)
    assert again.backoff["q"].failures == 1


def test_in_backoff_until_retry_time() -> None:
    mem = memory(backoff={"a": backoff(retry_in=30), "b": backoff(retry_in=0)})
    assert in_backoff(mem, "a", NOW) is mem.backoff["a"]
    assert in_backoff(mem, "b", NOW) is None
    assert in_backoff(mem, "c", NOW) is None
    assert in_backoff(mem, "a", NOW + timedelta(seconds=31)) is None


def test_persistent_kinds_are_the_ones_needing_a_human() -> None:
    assert ErrorKind.TRANSIENT not in PERSISTENT_KINDS
    assert ErrorKind.QUOTA not in PERSISTENT_KINDS
    assert {ErrorKind.BAD_CREDENTIALS, ErrorKind.CONFIG} <= PERSISTENT_KINDS


if st is not None:

    @given(
        failures=st.integers(min_value=1, max_value=10**6),
        kind=st.sampled_from(list(ErrorKind)),
        initial=st.floats(min_value=1, max_value=100),
        maximum=st.floats(min_value=1, max_value=10_000),
        jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    )
    def test_property_backoff_delay_is_bounded(
        failures: int, kind: ErrorKind, initial: float, maximum: float, jitter: float
    ) -> None:
        """Never negative, never past the cap, never under half of the first delay."""
        delay = backoff_delay(failures, kind, initial=initial, maximum=maximum, jitter=jitter)
        cap = (
            max(maximum, constants.BACKOFF_MAX_BAD_CREDENTIALS)
            if kind is ErrorKind.BAD_CREDENTIALS
            else maximum
        )
        assert 0 < delay <= cap
        assert delay >= min(initial, cap) / 2

    @given(
        failures=st.integers(min_value=1, max_value=200),
        jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    )
    def test_property_backoff_never_shrinks_as_failures_grow(failures: int, jitter: float) -> None:
        args = {"initial": 10.0, "maximum": 600.0, "jitter": jitter}
        assert backoff_delay(failures + 1, ErrorKind.QUOTA, **args) >= backoff_delay(
            failures, ErrorKind.QUOTA, **args
        )

else:  # pragma: no cover - shows up as a skip instead of silently running fewer tests

    def test_property_tests_need_hypothesis() -> None:
        pytest.skip("hypothesis is not installed: property tests not run")


def test_rejected_credentials_start_backing_off_at_a_minute() -> None:
    from cloudpilot.memory import ErrorKind, backoff_delay

    first = backoff_delay(1, ErrorKind.BAD_CREDENTIALS, initial=10, maximum=600, jitter=0.999)
    other = backoff_delay(1, ErrorKind.TRANSIENT, initial=10, maximum=600, jitter=0.999)
    assert first > 59 and other < 11


# --- Outages: consecutive failed listings -------------------------------------------------


def test_an_outage_starts_counts_and_ends() -> None:
    refused = cloud_error(ErrorKind.UNREACHABLE)
    first = record_outage(memory(), refused, NOW)
    assert first.outage is not None and (first.outage.since, first.outage.failures) == (NOW, 1)
    later = record_outage(first, refused, NOW + timedelta(seconds=30))
    assert later.outage is not None
    assert (later.outage.since, later.outage.failures) == (NOW, 2)
    assert record_outage(later, None, NOW + timedelta(seconds=60)).outage is None


def test_an_outage_of_another_kind_starts_afresh() -> None:
    """The endpoint answered and now refuses the credentials: a new problem, a new clock."""
    refused = record_outage(memory(), cloud_error(ErrorKind.UNREACHABLE), NOW)
    later = NOW + timedelta(minutes=5)
    other = record_outage(refused, cloud_error(ErrorKind.BAD_CREDENTIALS), later)
    assert other.outage is not None and (other.outage.since, other.outage.failures) == (later, 1)


def test_outage_lasted_compares_with_the_bound() -> None:
    outage = record_outage(memory(), cloud_error(ErrorKind.UNREACHABLE), NOW).outage
    assert not outage_lasted(outage, NOW + timedelta(seconds=9), 10)
    assert outage_lasted(outage, NOW + timedelta(seconds=10), 10)
    assert not outage_lasted(None, NOW + timedelta(days=1), 10)


def test_an_edited_spec_clears_the_back_off_the_previous_one_earned() -> None:
    """A pool stalled at creation (a missing executable Secret, a broken template) that the
    admin fixes by editing the spec is tried at once, not after up to ten minutes."""
    from cloudpilot.memory import for_generation

    failed = record_failure(PoolMemory(), "q", cloud_error(ErrorKind.CONFIG), NOW, jitter=0.0)
    first = for_generation(failed, 3)  # the first cycle of this process: nothing to clear
    assert first.backoff == failed.backoff and first.generation == 3
    assert for_generation(first, 3) is first  # same spec: the back-off holds
    edited = for_generation(first, 4)
    assert edited.backoff == {} and edited.generation == 4


def test_an_uncertain_create_holds_the_queue_until_two_listings_had_a_chance() -> None:
    """A create that timed out may have made VMs whose ids never came back: new creations
    in that queue wait long enough for two re-listings (the second started after the
    failure), and neither a spec edit nor rotated credentials lift that hold."""
    from cloudpilot.memory import UNCERTAIN_HOLD, CloudError, for_generation

    uncertain = CloudError(ErrorKind.TRANSIENT, "ReadTimeout", "create", uncertain=True)
    held = record_failure(PoolMemory(generation=1), "q", uncertain, NOW, jitter=0.0)
    assert held.backoff["q"].retry_at == NOW + timedelta(seconds=UNCERTAIN_HOLD)
    assert UNCERTAIN_HOLD > 2 * constants.TRANSIENT_LISTING_RETRY
    assert for_generation(held, 2).backoff == held.backoff
    certain = record_failure(PoolMemory(generation=1), "q", cloud_error(), NOW, jitter=0.0)
    assert for_generation(certain, 2).backoff == {}
