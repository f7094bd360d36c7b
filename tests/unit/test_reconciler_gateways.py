"""Gateways (libcloud drivers) are kept per account and credentials, and dropped only when
unused: pools sharing a Secret can resolve it differently (PROXY with each pool's proxy).
Per-pool state is one record, so forgetting a pool leaves nothing of it."""

from __future__ import annotations

import pytest

from cloudpilot import reconciler as reconciler_module
from cloudpilot import redaction, shared_caches
from cloudpilot.cloud.gateway import Credentials, ListedNode
from cloudpilot.models.spec import SecretKeyRef
from cloudpilot.pilot_proxy import load_queue_proxies
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
    reconciler._state(pool)
    reconciler.forget(pool)
    assert pool.uid not in reconciler.pools


async def test_forgetting_a_pool_forgets_every_secret_it_registered_for_masking() -> None:
    """Its proxies (registered while loading them, each cycle and in teardown) as well as
    its rendered user data; another pool's secrets, even under a name that starts alike,
    stay masked."""
    proxy_queue = queue(
        "q", pool_name="p", proxy_secret=SecretKeyRef(name="pilot", key="proxy.pem")
    )

    async def secret(name: str) -> dict[str, bytes]:
        return {"proxy.pem": b"proxy-of-pool-p-0123456789"}

    await load_queue_proxies([proxy_queue], namespace="ns", owner="ns/p", secret=secret)
    redaction.register(redaction.pool_owner("ns/p", "userdata:q"), ["userdata-of-p-0123"])
    redaction.register(redaction.pool_owner("ns/p2", "userdata:q"), ["userdata-of-p2-4567"])
    text = "proxy-of-pool-p-0123456789 userdata-of-p-0123 userdata-of-p2-4567"
    try:
        assert redaction.redact(text) == "*** *** ***"
        Reconciler().forget(PoolRef("ns", "p", "uid-1"))
        assert not [o for o in redaction._secrets if o.startswith("ns/p:")]
        assert redaction.redact(text) == "proxy-of-pool-p-0123456789 userdata-of-p-0123 ***"
    finally:
        redaction.forget_pool("ns/p")
        redaction.forget_pool("ns/p2")


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


async def test_a_pool_on_two_accounts_comes_due_on_its_first_queues_accounts_tick() -> None:
    """cloudpilot.account_tick: one account decides; the pool's first queue's."""
    caches = Reconciler(ReconcilerSettings(interval=60.0)).caches
    east = queue("a", account=account(driver_options=(("region", '"us-east-1"'),)))
    west = queue("b")
    gateways = {q.account: caches.gateway(q.account, Credentials("k", "s")) for q in (east, west)}

    async def nothing() -> list[ListedNode]:
        return []

    for q in (west, east):  # west listed first: its phase is the earlier one
        await gateways[q.account].listing.get(None, nothing)
    listings = {a: reconciler_module._Listing(g, []) for a, g in gateways.items()}
    tick = reconciler_module._first_account_tick([east, west], listings)
    assert tick is not None and tick == gateways[east.account].listing.tick
    assert tick != gateways[west.account].listing.tick
    failed = {**listings, east.account: reconciler_module._Listing(None, [])}
    assert reconciler_module._first_account_tick([east, west], failed) is None  # no guess
