"""The Secret reads every pool shares (cloudpilot.shared_caches.SharedCaches.read_secret):
one pool's cancelled cycle must not fail the others waiting on the same read, and a read
that fails must drop only its own cache entry, never a newer one."""

from __future__ import annotations

import asyncio

import pytest

from cloudpilot import shared_caches
from cloudpilot.shared_caches import CacheSettings, SharedCaches

VALUE = {"key": b"value"}


class SlowReads:
    """A Secret reader whose first ``held`` reads finish only when the test says so; any
    later one answers at once."""

    def __init__(self, held: int = 2) -> None:
        self.held = held
        self.calls: list[str] = []
        self.started = asyncio.Event()
        self.answers: list[asyncio.Future[dict[str, bytes]]] = []

    async def __call__(self, namespace: str, name: str) -> dict[str, bytes]:
        self.calls.append(name)
        if len(self.calls) > self.held:
            return VALUE
        answer: asyncio.Future[dict[str, bytes]] = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        self.started.set()
        return await answer


async def test_a_cancelled_reader_does_not_cancel_the_read_others_wait_for() -> None:
    reads = SlowReads()
    caches = SharedCaches(CacheSettings(interval=60.0), reads)
    first = asyncio.ensure_future(caches.read_secret("ns", "creds"))
    await reads.started.wait()
    second = asyncio.ensure_future(caches.read_secret("ns", "creds"))
    first.cancel()  # e.g. the operator stopping that pool's cycle
    assert not reads.answers[0].cancelled(), "the shared read was cancelled with one reader"
    reads.answers[0].set_result(VALUE)

    assert await second == VALUE, "another pool's cycle got its cancellation"
    assert reads.calls == ["creds"]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_read_does_not_drop_a_newer_read_of_the_same_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(shared_caches.time, "monotonic", lambda: clock[0])
    reads = SlowReads()
    caches = SharedCaches(CacheSettings(interval=60.0), reads)
    old = asyncio.ensure_future(caches.read_secret("ns", "creds"))
    await reads.started.wait()
    clock[0] += 60  # the old read is past its age: the next one starts afresh
    reads.started.clear()
    new = asyncio.ensure_future(caches.read_secret("ns", "creds"))
    await reads.started.wait()
    reads.answers[1].set_result(VALUE)
    assert await new == VALUE
    reads.answers[0].set_exception(ConnectionError("API server gone"))
    with pytest.raises(ConnectionError):
        await old

    assert await caches.read_secret("ns", "creds") == VALUE
    assert reads.calls == ["creds", "creds"], "the failed read evicted the newer one"
