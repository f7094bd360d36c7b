"""Gateways (libcloud drivers) are kept per account and credentials, and dropped only when
unused: pools sharing a Secret can resolve it differently (PROXY with each pool's proxy)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudpilot import reconciler as reconciler_module
from cloudpilot.cloud.gateway import Credentials
from cloudpilot.reconciler import PoolRef, Reconciler, ReconcilerSettings
from tests.support.builders import account, queue


def test_two_credential_sets_on_one_account_keep_their_gateways_until_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(reconciler_module.time, "monotonic", lambda: clock[0])
    reconciler = Reconciler(ReconcilerSettings(interval=60.0))
    account = queue().account
    first, second = Credentials("k", "proxy-a"), Credentials("k", "proxy-b")
    a = reconciler._gateway(account, first)
    b = reconciler._gateway(account, second)
    assert reconciler._gateway(account, first) is a, "rebuilt while still in use"
    assert reconciler._gateway(account, second) is b
    clock[0] += 121  # two intervals without the first credentials
    reconciler._gateway(account, second)
    assert reconciler._gateway(account, first) is not a, "a stale gateway was kept"


def test_forgetting_a_pool_drops_its_per_pool_state() -> None:
    reconciler = Reconciler()
    pool = PoolRef("ns", "p", "uid-1")
    account = queue().account
    reconciler._note_rotation(pool, account, Credentials("k", "s"))
    _ = reconciler._locks[pool.uid]
    reconciler.forget(pool)
    leftovers: list[Any] = [k for k in reconciler._fingerprints if k[0] == pool.uid]
    assert leftovers == [] and pool.uid not in reconciler._locks


def test_gateways_of_an_account_no_pool_uses_any_more_are_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deleted pool or edited driver options leave an account behind: its drivers (and
    their HTTP sessions) go once unused for two intervals, whichever account is in use."""
    clock = [1000.0]
    monkeypatch.setattr(reconciler_module.time, "monotonic", lambda: clock[0])
    reconciler = Reconciler(ReconcilerSettings(interval=60.0))
    old, new = account(credentials_secret="old"), account(credentials_secret="new")
    reconciler._gateway(old, Credentials("k", "s"))
    clock[0] += 121
    reconciler._gateway(new, Credentials("k", "s"))
    assert [account for account, _ in reconciler._gateways] == [new]
