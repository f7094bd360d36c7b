"""How the gateway splits, stops and retries its calls: pure choices, unit tested.

The gateway (:mod:`cloudpilot.cloud.gateway`) only carries these out, so that what it
does after a failure is decided in one readable place rather than inside the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from cloudpilot.memory import CloudError, ErrorKind

T = TypeVar("T")

PER_ID_ERRORS = frozenset({ErrorKind.NOT_FOUND, ErrorKind.INVALID_REQUEST})
"""Kinds of a failed batch call that one bad id in the batch can cause
(``InvalidInstanceID.NotFound``, ``InvalidInstanceID.Malformed``)."""


def batch_sizes(count: int, batch_size: int) -> list[int]:
    """``count`` VMs as batches of at most ``batch_size`` (the last one smaller)."""
    return [min(batch_size, count - start) for start in range(0, count, max(batch_size, 1))]


def send_next_batch(failures: Sequence[CloudError]) -> bool:
    """Once a batch of a scale-up has failed, batches not yet sent are not sent: a quota
    refusal would refuse them too, and the queue's back-off takes over."""
    return not failures


def retry_one_by_one(error: CloudError, batch: int) -> bool:
    """A refused batch destroy is retried one VM at a time only when one bad id can have
    caused the refusal, so the others still go. Any other refusal (throttling, a server
    error, a timeout, rejected credentials) would refuse each of those calls too: a
    throttling storm must not turn one call into a thousand."""
    return batch > 1 and error.kind in PER_ID_ERRORS


def forget_lookups_after(error: CloudError | None) -> bool:
    """A create refused as NotFound may be a cached image, flavor or network id the cloud
    no longer knows: look them up again next time rather than fail until the cache ends."""
    return error is not None and error.kind is ErrorKind.NOT_FOUND


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in slices of ``size`` (one batch call each)."""
    return [items[start : start + size] for start in range(0, len(items), max(size, 1))]
