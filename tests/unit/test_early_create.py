"""The early scale-up rule (cloudpilot.early_create): what a cycle may create before its
listing, from the pool's last look and memory, and when it must list first."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from cloudpilot import early_create
from cloudpilot.early_create import LastLook, Refusal, early_creations, refusal, shape_of
from cloudpilot.memory import PoolMemory
from cloudpilot.models.queues import QueueConfig
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.planner import Creation
from tests.support.builders import (
    NOW,
    account,
    ago,
    backoff,
    cloud_error,
    memory,
    pending,
    queue,
    vm,
    vms,
)


def _look(queues: list[QueueConfig], observed: list[ObservedVM], *, age: float = 30.0) -> LastLook:
    return LastLook(shape_of(queues), tuple(observed), ago(age))


def test_a_scale_up_counts_the_last_listing_and_the_creations_since() -> None:
    """3 listed + 2 created since (pending) = 5: scaling to 8 creates exactly 3."""
    last = _look([queue(replicas=5)], vms(3))
    mem = memory(pending=[pending(), pending()])
    assert early_creations(last, [queue(replicas=8)], mem, NOW) == (Creation("default", 3),)


def test_nothing_when_the_last_look_and_memory_already_cover_the_replicas() -> None:
    last = _look([queue(replicas=2)], vms(2))
    assert (
        early_creations(last, [queue(replicas=4)], memory(pending=[pending(), pending()]), NOW)
        == ()
    )


def test_repeated_scale_ups_never_count_a_creation_twice_nor_miss_one() -> None:
    """Each early create is recorded as pending before the next decision (as the reconciler
    does): over rapid patches the pool holds exactly the most asked so far (scale-downs wait
    for the listing), never more."""
    last = _look([queue(replicas=1)], vms(1))
    mem = memory()
    live = 1
    for replicas in (3, 4, 4, 7, 2, 9):
        before = live
        for creation in early_creations(last, [queue(replicas=replicas)], mem, NOW):
            made = [pending() for _ in range(creation.count)]
            mem = replace(mem, pending={**mem.pending, **{p.id: p for p in made}})
            live += creation.count
        assert live == max(before, replicas)
    assert live == 9


def test_a_vm_destroyed_since_the_last_look_is_replaced() -> None:
    gone = vm()
    last = _look([queue(replicas=2)], [gone, vm()])
    mem = memory(deleting=[gone.id])
    assert early_creations(last, [queue(replicas=2)], mem, NOW) == (Creation("default", 1),)


def test_halted_pilots_seen_last_time_are_not_counted_as_live() -> None:
    last = _look([queue(replicas=2)], [vm(phase=Phase.DONE), vm()])
    assert early_creations(last, [queue(replicas=3)], memory(), NOW) == (Creation("default", 2),)


@pytest.mark.parametrize(
    ("why", "last", "queues", "mem"),
    [
        # A restart, a new leadership term, a new pool, a pool applied again over orphans.
        (Refusal.NO_LAST_LOOK, None, [queue(replicas=5)], memory()),
        # Anything but replicas changed: another account, a queue added.
        (
            Refusal.OTHER_SHAPE,
            _look([queue(replicas=1)], []),
            [queue(replicas=5, account=account(credentials_secret="other"))],
            memory(),
        ),
        (
            Refusal.OTHER_SHAPE,
            _look([queue(replicas=1)], []),
            [queue(replicas=1), queue("gpu", replicas=1)],
            memory(),
        ),
        (
            Refusal.TOO_OLD,
            _look([queue(replicas=1)], [], age=early_create.MAX_AGE.total_seconds() + 1),
            [queue(replicas=5)],
            memory(),
        ),
    ],
)
def test_the_cycle_lists_first_when_the_last_look_cannot_be_trusted(
    why: Refusal, last: LastLook | None, queues: list[QueueConfig], mem: PoolMemory
) -> None:
    assert refusal(last, queues, mem, NOW) is why
    assert early_creations(last, queues, mem, NOW) == ()


def test_an_uncertain_create_anywhere_in_the_pool_means_list_first() -> None:
    """Its VMs may exist with ids nobody knows; even an expired hold does not lift this."""
    uncertain = replace(backoff(retry_in=-100.0), error=replace(cloud_error(), uncertain=True))
    queues = [queue(replicas=3), queue("other", replicas=3)]
    last = _look(queues, [])
    mem = memory(backoff={"other": uncertain})
    assert refusal(last, queues, mem, NOW) is Refusal.UNCERTAIN_CREATE
    assert early_creations(last, queues, mem, NOW) == ()


def test_a_certain_failure_backs_its_queue_off_as_the_planner_does() -> None:
    queues = [queue(replicas=2), queue("other", replicas=2)]
    last = _look(queues, [])
    mem = memory(backoff={"other": backoff(retry_in=60.0)})
    assert early_creations(last, queues, mem, NOW) == (Creation("default", 2),)


def test_scale_downs_wait_for_the_listing() -> None:
    last = _look([queue(replicas=3)], vms(3, phase=Phase.STARTING))
    assert early_creations(last, [queue(replicas=1)], memory(), NOW) == ()


def test_the_shape_ignores_replicas_only() -> None:
    assert shape_of([queue(replicas=1)]) == shape_of([queue(replicas=500)])
    assert shape_of([queue(replicas=1)]) != shape_of([queue(replicas=1, ssh_key="k")])
    assert shape_of([queue("a"), queue("b")]) == shape_of([queue("b"), queue("a")])


def test_max_age_leaves_room_inside_the_pending_ttl() -> None:
    from cloudpilot import constants

    half_interval = timedelta(seconds=constants.DEFAULT_RECONCILE_INTERVAL / 2)
    assert early_create.MAX_AGE + half_interval < timedelta(seconds=constants.PENDING_CREATE_TTL)
