"""Gateways the shared caches drop (unused for two intervals: a rotated Secret, edited driver
options, a deleted pool) have their libcloud drivers' HTTP sessions closed, not left with
open sockets to the cloud until the garbage collector finds them."""

from __future__ import annotations

import pytest
import requests

from cloudpilot import shared_caches
from cloudpilot.cloud.gateway import Credentials
from cloudpilot.shared_caches import CacheSettings, SharedCaches
from tests.support.builders import account

INTERVAL = 60.0


async def no_secret(namespace: str, name: str) -> dict[str, bytes]:
    raise AssertionError("no Secret is read here")


async def test_a_swept_gateway_closes_its_drivers_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(shared_caches.time, "monotonic", lambda: now[0])
    closed: list[requests.Session] = []
    real_close = requests.Session.close

    def recording_close(session: requests.Session) -> None:
        closed.append(session)
        real_close(session)

    monkeypatch.setattr(requests.Session, "close", recording_close)
    caches = SharedCaches(CacheSettings(interval=INTERVAL), no_secret)
    old = caches.gateway(account(), Credentials("old-key", "old-secret"))
    probe = old.probe()  # a real libcloud EC2 driver: no request is sent by building it
    async with old._driver() as worker:
        pass  # one more driver, back in the idle queue
    sessions = {id(d.connection.connection.session) for d in (probe, worker)}  # type: ignore[attr-defined]
    assert len(sessions) == 2

    now[0] += 2 * INTERVAL + 1  # unused for over two intervals: the next lookup sweeps it
    rotated = caches.gateway(account(), Credentials("new-key", "new-secret"))

    assert list(caches.gateways.values()) == [rotated]
    assert {id(s) for s in closed} == sessions
