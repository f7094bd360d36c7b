"""Proxy parsing, status and the expiry rules, with generated CAs, users and proxies."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudpilot.credentials.bundled import ProxyLocation, find_proxy_pem
from cloudpilot.credentials.proxy import (
    CONDITION_TYPE,
    ProxyKind,
    ProxyReason,
    parse_proxy,
    proxy_condition,
    proxy_event,
    proxy_status,
)
from cloudpilot.pilot_proxy import QueueProxy, assess, unusable_proxy
from tests.support.proxies import (
    ProxyFactory,
    bundle_in_wrapper,
    dump,
    make_proxy,
    make_user,
)

IDENTITY = "/DC=org/DC=cloudpilot/OU=Robots/CN=Pilot Robot"
MARGIN = timedelta(hours=6)


@pytest.fixture(scope="module")
def factory() -> ProxyFactory:
    return ProxyFactory()


def test_rfc3820_proxy_is_valid_with_identity_and_expiry(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.rfc(lifetime=timedelta(hours=24)))
    assert info.valid, info.problems
    assert info.kind is ProxyKind.RFC3820
    assert info.identity == IDENTITY
    assert info.has_private_key
    assert info.not_after == min(c.not_valid_after_utc for c in info.chain)
    assert len(info.chain) == 2


def test_legacy_proxy_is_recognised(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.legacy())
    assert info.valid, info.problems
    assert info.kind is ProxyKind.LEGACY


def test_proxy_of_a_proxy_is_valid_and_expires_with_its_shortest_link(
    factory: ProxyFactory,
) -> None:
    info = parse_proxy(factory.chained())
    assert info.valid, info.problems
    assert len(info.chain) == 3
    assert info.identity == IDENTITY
    assert info.not_after is not None
    assert info.not_after <= factory.now + timedelta(hours=12, seconds=1)


def test_rsa_proxy_accepted_as_str() -> None:
    factory = ProxyFactory()
    user = make_user(factory.ca, rsa_key=True, now=factory.now)
    pem = dump(make_proxy(user, now=factory.now, rsa_key=True), user)
    info = parse_proxy(pem.decode())
    assert info.valid, info.problems


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("broken_signature", "not signed by the key of certificate #2"),
        ("wrong_order", "is not issued by certificate #2"),
        ("key_mismatch", "private key does not match"),
        ("without_key", "no private key"),
        ("without_user", "end-entity (user) certificate is missing"),
    ],
)
def test_broken_chains_are_invalid_with_a_reason(
    factory: ProxyFactory, case: str, problem: str
) -> None:
    info = parse_proxy(getattr(factory, case)())
    assert not info.valid
    assert any(problem in p for p in info.problems), info.problems
    assert info.identity == IDENTITY


def test_a_user_certificate_is_not_a_proxy(factory: ProxyFactory) -> None:
    pem = dump(factory.user, factory.ca)
    info = parse_proxy(pem)
    assert info.kind is None
    assert any("is not a proxy" in p for p in info.problems)


def test_garbage_and_encrypted_keys_are_reported_not_raised(factory: ProxyFactory) -> None:
    assert parse_proxy(b"not a pem at all").problems == ("no certificate found",)
    encrypted = (
        factory.rfc().split(b"-----BEGIN EC PRIVATE KEY-----")[0]
        + b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    assert any("encrypted" in p for p in parse_proxy(encrypted).problems)
    corrupt = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert "certificate #1 cannot be parsed" in parse_proxy(corrupt).problems


def test_problems_never_quote_the_key(factory: ProxyFactory) -> None:
    pem = factory.key_mismatch()
    key_lines = [line for line in pem.decode().splitlines() if line and "-----" not in line]
    text = " ".join(parse_proxy(pem).problems)
    assert not any(line in text for line in key_lines)


# -- status and conditions --------------------------------------------------------------------


def test_status_of_a_healthy_proxy(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.rfc(lifetime=timedelta(hours=24)))
    status = proxy_status(info, factory.now, MARGIN)
    assert status["valid"] is True
    assert status["reason"] == "ProxyValid"
    assert status["identity"] == IDENTITY
    assert status["type"] == "RFC3820"
    assert status["notAfter"].endswith("Z")
    # Far from expiry: rounded to the hour, so a quiet pool's status stays the same.
    assert status["secondsLeft"] == 23 * 3600
    later = proxy_status(info, factory.now + timedelta(minutes=10), MARGIN)
    assert later == status
    verdict = proxy_condition(info, factory.now, MARGIN)
    assert verdict.condition.type == CONDITION_TYPE
    assert verdict.condition.status == "False"
    assert not verdict.stop


def test_expiring_proxy_warns_but_does_not_stop(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.expiring(timedelta(hours=1)))
    status = proxy_status(info, factory.now, MARGIN)
    assert status["reason"] == "ProxyExpiring"
    assert 3500 <= status["secondsLeft"] <= 3600
    assert status["secondsLeft"] % 60 == 0
    verdict = proxy_condition(info, factory.now, MARGIN)
    assert (verdict.condition.status, verdict.condition.reason) == ("True", "ProxyExpiring")
    assert "within the 6h warning margin" in verdict.message
    assert not verdict.stop


def test_margin_is_configurable_in_seconds(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.expiring(timedelta(hours=1)))
    assert proxy_condition(info, factory.now, 600).reason is ProxyReason.VALID
    assert proxy_condition(info, factory.now, 7200).reason is ProxyReason.EXPIRING


def test_expired_proxy_stops_new_pilots(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.expired())
    assert info.valid  # well formed, only out of date
    status = proxy_status(info, factory.now, MARGIN)
    assert status["reason"] == "ProxyExpired"
    assert status["secondsLeft"] == 0
    verdict = proxy_condition(info, factory.now, MARGIN)
    assert verdict.stop
    assert (verdict.condition.status, verdict.condition.reason) == ("True", "ProxyExpired")
    assert "no new pilots" in verdict.message
    assert IDENTITY in verdict.message


def test_a_valid_proxy_expires_with_time(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.rfc(lifetime=timedelta(hours=24)))
    assert not proxy_condition(info, factory.now + timedelta(hours=17), MARGIN).stop
    assert proxy_condition(info, factory.now + timedelta(hours=19), MARGIN).reason is (
        ProxyReason.EXPIRING
    )
    assert proxy_condition(info, factory.now + timedelta(hours=24), MARGIN).stop


def test_not_yet_valid_proxy_warns_only(factory: ProxyFactory) -> None:
    verdict = proxy_condition(parse_proxy(factory.not_yet_valid()), factory.now, MARGIN)
    assert verdict.reason is ProxyReason.NOT_YET_VALID
    assert not verdict.stop


def test_invalid_chain_stops_only_when_asked(factory: ProxyFactory) -> None:
    info = parse_proxy(factory.broken_signature())
    status = proxy_status(info, factory.now, MARGIN)
    assert status["valid"] is False
    assert status["reason"] == "InvalidProxy"
    assert status["problems"]
    assert not proxy_condition(info, factory.now, MARGIN).stop
    assert proxy_condition(info, factory.now, MARGIN, stop_on_invalid=True).stop


def test_events_fire_on_changes_only(factory: ProxyFactory) -> None:
    expiring = proxy_condition(parse_proxy(factory.expiring()), factory.now, MARGIN)
    healthy = proxy_condition(parse_proxy(factory.rfc()), factory.now, MARGIN)
    assert proxy_event(None, healthy) is None
    assert proxy_event({"reason": "ProxyValid"}, expiring) == (
        "Warning",
        "ProxyExpiring",
        expiring.message,
    )
    assert proxy_event({"reason": "ProxyExpiring"}, expiring) is None
    renewed = proxy_event({"reason": "ProxyExpired"}, healthy)
    assert renewed is not None and renewed[:2] == ("Normal", "ProxyRenewed")


# -- a proxy bundled in the pilot executable ------------------------------------------------


def test_proxy_found_in_a_dirac_pilot_wrapper(factory: ProxyFactory) -> None:
    pem = factory.rfc()
    wrapper = bundle_in_wrapper(pem, {"pilotTools.py": b"print('hello')\n" * 50})
    assert b"BEGIN CERTIFICATE" not in wrapper
    found = find_proxy_pem(wrapper)
    assert found is not None
    assert parse_proxy(found).valid
    assert parse_proxy(found).not_after == parse_proxy(pem).not_after


def test_plain_pem_in_an_executable_and_no_proxy_at_all(factory: ProxyFactory) -> None:
    pem = factory.rfc()
    script = b"#!/bin/sh\ncat > proxy <<EOF\n" + pem + b"EOF\nexec pilot\n"
    assert parse_proxy(find_proxy_pem(script) or b"").valid
    assert find_proxy_pem(b"#!/bin/sh\necho token-based pilot\n" + b"QUJD" * 40) is None


# --- Unusable content: not a PEM certificate chain with its key ---------------------------


@pytest.mark.parametrize(
    "content",
    ["garbage", "corrupt_certificate", "without_key", "key_mismatch"],
)
def test_content_nothing_can_use_stops_new_pilots_without_being_asked(
    factory: ProxyFactory, content: str
) -> None:
    """Garbage is not a doubtful chain: no TLS handshake can use it, so pilots stop."""
    pem = {
        "garbage": b"this is not a proxy\n",
        "corrupt_certificate": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "without_key": factory.without_key(),
        "key_mismatch": factory.key_mismatch(),
    }[content]
    info = parse_proxy(pem)
    assert not info.usable
    verdict = proxy_condition(info, factory.now, MARGIN)
    assert verdict.stop
    assert verdict.reason is ProxyReason.INVALID
    assert "unusable" in verdict.message and "no new pilots start" in verdict.message
    assert unusable_proxy(pem) is not None


def test_a_doubtful_but_usable_chain_is_usable(factory: ProxyFactory) -> None:
    """A chain the offline check doubts (signature, order) may still work: no stop."""
    for pem in (factory.broken_signature(), factory.wrong_order(), factory.rfc()):
        assert parse_proxy(pem).usable
        assert unusable_proxy(pem) is None


def test_the_pool_stops_on_the_unusable_proxy_before_the_expired_one(
    factory: ProxyFactory,
) -> None:
    """Two queues, one expired, one garbage: the report names the garbage (the one
    renewing would not fix), and stops both."""
    location = ProxyLocation("s", "k", bundled=False)
    proxies = {
        "a-expired": QueueProxy(location, factory.expired(), "ns/s:k"),
        "b-garbage": QueueProxy(location, b"garbage", "ns/s:k2"),
        "c-fine": QueueProxy(location, factory.rfc(), "ns/s:k3"),
    }
    report = assess(proxies, now=factory.now, warn_margin=MARGIN, previous_status=None)
    assert report.stopped_queues == {"a-expired", "b-garbage"}
    assert report.stop is not None and report.stop.reason is ProxyReason.INVALID
    only_expired = {k: v for k, v in proxies.items() if k != "b-garbage"}
    report = assess(only_expired, now=factory.now, warn_margin=MARGIN, previous_status=None)
    assert report.stop is not None and report.stop.reason is ProxyReason.EXPIRED
    fine = {"c-fine": proxies["c-fine"]}
    assert assess(fine, now=factory.now, warn_margin=MARGIN, previous_status=None).stop is None
