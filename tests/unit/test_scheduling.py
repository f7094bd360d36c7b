"""The due-time queue behind the operator's one scheduler: which pool is reconciled next."""

from __future__ import annotations

from cloudpilot.scheduling import DueQueue


def test_pools_come_out_earliest_first_and_only_when_due() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("late", 30.0)
    queue.schedule("early", 10.0)
    queue.schedule("middle", 20.0)

    assert queue.pop_due(5.0) == []
    assert queue.next_at() == 10.0
    assert queue.pop_due(20.0) == ["early", "middle"]
    assert queue.pop_due(100.0) == ["late"]
    assert len(queue) == 0 and queue.next_at() is None


def test_rescheduling_moves_a_pool_instead_of_adding_a_second_turn() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("pool", 10.0)
    queue.schedule("pool", 50.0)  # its reconcile asked for a later time

    assert queue.pop_due(20.0) == []
    assert queue.pop_due(50.0) == ["pool"]
    assert queue.pop_due(1e9) == []


def test_a_wake_up_brings_a_pool_forward_but_never_postpones_it() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("pool", 60.0)
    queue.advance("pool", 5.0)  # spec changed: now
    assert queue.due_at("pool") == 5.0
    queue.advance("pool", 90.0)
    assert queue.due_at("pool") == 5.0
    queue.advance("new", 7.0)  # a pool never seen is scheduled
    assert queue.pop_due(10.0) == ["pool", "new"]


def test_limit_leaves_the_rest_due_for_the_next_free_slot() -> None:
    queue: DueQueue[int] = DueQueue()
    for key in range(10):
        queue.schedule(key, float(key))

    assert queue.pop_due(100.0, limit=3) == [0, 1, 2]
    assert queue.pop_due(100.0, limit=0) == []
    assert queue.pop_due(100.0) == [3, 4, 5, 6, 7, 8, 9]


def test_a_removed_pool_is_never_popped() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("deleted", 1.0)
    queue.schedule("kept", 2.0)
    queue.remove("deleted")
    queue.remove("unknown")  # harmless

    assert "deleted" not in queue
    assert queue.next_at() == 2.0
    assert queue.pop_due(10.0) == ["kept"]


def test_weeks_of_rescheduling_do_not_grow_the_heap() -> None:
    queue: DueQueue[int] = DueQueue()
    for turn in range(10_000):
        for pool in range(5):
            queue.schedule(pool, float(turn * 10 + pool))

    assert len(queue) == 5
    assert len(queue._heap) <= 2 * 5 + 64 + 1
    assert queue.pop_due(1e9) == [0, 1, 2, 3, 4]


def test_pools_come_out_with_the_time_they_were_due() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("tick", 60.0)
    queue.schedule("woken", float("-inf"))  # kube.scheduler.WAKE_UP: ahead of all
    queue.schedule("later", 90.0)
    assert queue.pop_due_with_times(75.0) == [("woken", float("-inf")), ("tick", 60.0)]
