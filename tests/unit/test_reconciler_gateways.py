"""Gateways (libcloud drivers) are kept per account and credentials, and dropped only when
unused: pools sharing a Secret can resolve it differently (PROXY with each pool's proxy).
Per-pool state is one record, so forgetting a pool leaves nothing of it."""

from __future__ import annotations

import pytest

from cloudpilot import shared_caches
from cloudpilot.cloud.gateway import Credentials
from cloudpilot.reconciler import PoolRef, Reconciler, ReconcilerSettings
from tests.support.builders import account, queue


def test_two_credential_sets_on_one_account_keep_their_gateways_until_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(shared_caches.time, "monotonic", lambda: clock[0])
    caches = Reconciler(ReconcilerSettings(interval=60.0)).caches
    account = queue().account
    first, second = Credentials("k", "proxy-a"), Credentials("k", "proxy-b")
    a = caches.gateway(account, first)
    b = caches.gateway(account, second)
    assert caches.gateway(account, first) is a, "rebuilt while still in use"
    assert caches.gateway(account, second) is b
    clock[0] += 121  # two intervals without the first credentials
    caches.gateway(account, second)
    assert caches.gateway(account, first) is not a, "a stale gateway was kept"


def test_forgetting_a_pool_drops_its_record() -> None:
    reconciler = Reconciler()
    pool = PoolRef("ns", "p", "uid-1")
    reconciler._state(pool).redaction_owners.add("ns/p:userdata:q")
    reconciler.forget(pool)
    assert pool.uid not in reconciler.pools


def test_gateways_of_an_account_no_pool_uses_any_more_are_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deleted pool or edited driver options leave an account behind: its drivers (and
    their HTTP sessions) go once unused for two intervals, whichever account is in use;
    the rate limiter of an endpoint no gateway uses goes with them."""
    clock = [1000.0]
    monkeypatch.setattr(shared_caches.time, "monotonic", lambda: clock[0])
    caches = Reconciler(ReconcilerSettings(interval=60.0)).caches
    old = account(credentials_secret="old", driver_options=(("region", '"eu-north-1"'),))
    new = account(credentials_secret="new")
    caches.gateway(old, Credentials("k", "s"))
    assert old.endpoint in caches.limiters
    clock[0] += 121
    caches.gateway(new, Credentials("k", "s"))
    assert [account for account, _ in caches.gateways] == [new]
    assert list(caches.limiters) == [new.endpoint]
