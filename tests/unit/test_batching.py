"""The gateway's choices after a failure, without a cloud (cloud/batching.py)."""

from __future__ import annotations

from cloudpilot.cloud import batching
from cloudpilot.memory import CloudError, ErrorKind


def test_a_scale_up_is_split_into_batches_of_at_most_the_batch_size() -> None:
    assert batching.batch_sizes(7, 3) == [3, 3, 1]
    assert batching.batch_sizes(0, 3) == []


def test_after_a_failed_batch_no_further_batch_is_sent() -> None:
    assert batching.send_next_batch([])
    assert not batching.send_next_batch([CloudError(ErrorKind.QUOTA, "limit")])


def test_only_a_refusal_one_bad_id_can_cause_is_retried_vm_by_vm() -> None:
    not_found = CloudError(ErrorKind.NOT_FOUND, "InvalidInstanceID.NotFound")
    malformed = CloudError(ErrorKind.INVALID_REQUEST, "InvalidInstanceID.Malformed")
    throttled = CloudError(ErrorKind.TRANSIENT, "RequestLimitExceeded")
    assert batching.retry_one_by_one(not_found, 5)
    assert batching.retry_one_by_one(malformed, 2)
    assert not batching.retry_one_by_one(throttled, 5), "a storm must not become N calls"
    assert not batching.retry_one_by_one(not_found, 1), "one VM is already one by one"


def test_lookups_are_forgotten_only_after_a_not_found() -> None:
    assert batching.forget_lookups_after(CloudError(ErrorKind.NOT_FOUND, "no such image"))
    assert not batching.forget_lookups_after(CloudError(ErrorKind.QUOTA, "limit"))
    assert not batching.forget_lookups_after(None)


def test_chunks_cover_every_item_once_in_order() -> None:
    assert batching.chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
