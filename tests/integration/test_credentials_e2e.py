"""Credentials end to end: the real operator, the Kubernetes API emulator, moto behind the
latency proxy. moto accepts any key, so the proxy reads which access key signed each
request and answers 401 AuthFailure for the ones a test revokes, as EC2 does."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from cloudpilot_devtools.latency_proxy import LatencyProxy
from tests.support.kube import wait_for
from tests.support.proxies import ProxyFactory
from tests.support.stack import Stack

OLD_KEY = "AKIAOLDROTATEDKEY001"
NEW_KEY = "AKIANEWROTATEDKEY002"
SECRET = "rotation-test-secret-value"


@pytest.fixture
def proxy(stack: Stack) -> Iterator[LatencyProxy]:
    with LatencyProxy(stack.ec2.endpoint) as started:
        yield started


def _pool(stack: Stack, proxy: LatencyProxy, name: str, **spec: object) -> None:
    stack.apply_pool(name, driver=stack.ec2.driver_options(proxy.endpoint), **spec)


def _condition(stack: Stack, pool: str, kind: str, reason: str) -> dict[str, str]:
    def found() -> dict[str, str] | None:
        condition = stack.condition(pool, kind)
        return condition if condition and condition["reason"] == reason else None

    return wait_for(found, 30, message=f"{kind} {reason} on {pool}")


def test_a_rotated_secret_is_used_by_the_next_reconcile_without_a_restart(
    stack: Stack, proxy: LatencyProxy
) -> None:
    stack.create_secret("rotating", {"key": OLD_KEY, "secret": SECRET})
    _pool(stack, proxy, "rot", replicas=1, credentialsSecret={"name": "rotating"})
    stack.wait_vms("rot", 1)
    assert proxy.access_keys.get(OLD_KEY, 0) > 0
    stack.create_secret("rotating", {"key": NEW_KEY, "secret": SECRET})
    wait_for(lambda: proxy.access_keys.get(NEW_KEY, 0) > 0, 30, message="new key in use")
    used_after = proxy.access_keys.get(OLD_KEY, 0)
    stack.scale_pool("rot", 2)
    stack.wait_vms("rot", 2)
    assert proxy.access_keys.get(OLD_KEY, 0) == used_after, "the old key was used again"


def test_rejected_credentials_stall_the_pool_until_the_secret_is_fixed(
    stack: Stack, proxy: LatencyProxy
) -> None:
    proxy.reject_access_key(OLD_KEY)
    stack.create_secret("revoked", {"key": OLD_KEY, "secret": SECRET})
    _pool(stack, proxy, "locked", replicas=2, credentialsSecret={"name": "revoked"})
    stalled = _condition(stack, "locked", "Stalled", "BadCredentials")
    assert "AuthFailure" in stalled["message"]
    assert stack.vms("locked") == []
    wait_for(
        lambda: any(e.reason == "BadCredentials" for e in stack.events()),
        30,
        message="a BadCredentials Event",
    )
    stack.create_secret("revoked", {"key": NEW_KEY, "secret": SECRET})
    stack.wait_vms("locked", 2)
    wait_for(lambda: stack.condition("locked", "Stalled") is None, 30, message="not Stalled")


def test_a_missing_secret_is_named_and_other_pools_carry_on(
    stack: Stack, proxy: LatencyProxy
) -> None:
    _pool(stack, proxy, "orphaned", replicas=1, credentialsSecret={"name": "nowhere"})
    _pool(stack, proxy, "healthy", replicas=1)
    stalled = _condition(stack, "orphaned", "Stalled", "InvalidConfig")
    assert f"Secret {stack.namespace}/nowhere not found" in stalled["message"]
    stack.wait_vms("healthy", 1)
    assert stack.vms("orphaned") == []


def test_cloud_auth_ini_uses_the_ce_section_over_default(stack: Stack, proxy: LatencyProxy) -> None:
    ini = (
        '[DEFAULT]\nkey = "AKIADEFAULTSECTION01"\nsecret = "default-secret"\n'
        f'[ce.cloudpilot.test]\nkey = "{NEW_KEY}"\n'
    )
    stack.create_secret("ini-auth", {"cloud.auth": ini})
    _pool(stack, proxy, "ini", replicas=1, credentialsSecret={"name": "ini-auth"})
    stack.wait_vms("ini", 1)
    assert proxy.access_keys.get(NEW_KEY, 0) > 0
    assert "AKIADEFAULTSECTION01" not in proxy.access_keys
    assert '"' + NEW_KEY not in "".join(proxy.access_keys), "quotes were kept literally"


def test_proxy_secret_becomes_a_private_file_removed_with_the_pool(
    stack: Stack, proxy: LatencyProxy
) -> None:
    pem = ProxyFactory().rfc()
    stack.create_secret("pilot-proxy", {"proxy": pem.decode()})
    stack.create_secret("fedcloud", {"cloud.auth": f"[DEFAULT]\nkey = {NEW_KEY}\nsecret = PROXY\n"})
    _pool(
        stack,
        proxy,
        "fed",
        replicas=1,
        credentialsSecret={"name": "fedcloud"},
        pilot={
            "executableSecret": {"name": "pilot", "key": "pilot.sh"},
            "proxySecret": {"name": "pilot-proxy", "key": "proxy"},
        },
    )
    stack.wait_vms("fed", 1)
    store = stack.reconcilers[-1].proxy_files
    path = store.path_of(f"{stack.namespace}/pilot-proxy:proxy")
    assert path is not None and Path(path).read_bytes() == pem
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(path).parent.stat().st_mode) == 0o700
    status = stack.wait_status("fed", lambda s: s.get("proxy") and s, what="status.proxy")
    assert status["proxy"]["reason"] == "ProxyValid" and status["proxy"]["valid"] is True
    # The expiry alert's gauge: the proxy's notAfter, published once the status is written.
    from cloudpilot import metrics

    labels = {"namespace": stack.namespace, "pool": "fed"}
    registry = metrics.default().registry
    expiry = wait_for(
        lambda: registry.get_sample_value("cloudpilot_proxy_expiry_timestamp_seconds", labels),
        30,
        message="the proxy expiry gauge",
    )
    not_after = datetime.fromisoformat(status["proxy"]["notAfter"].replace("Z", "+00:00"))
    assert expiry == not_after.timestamp()
    stack.delete_pool("fed")
    wait_for(lambda: stack.pool("fed") is None, 60, message="pool gone")
    assert not Path(path).exists()
    wait_for(
        lambda: (
            registry.get_sample_value("cloudpilot_proxy_expiry_timestamp_seconds", labels) is None
        ),
        30,
        message="the deleted pool's proxy gauge removed",
    )


def test_an_expired_pilot_proxy_stops_new_pilots_until_it_is_renewed(
    stack: Stack, proxy: LatencyProxy
) -> None:
    factory = ProxyFactory()
    stack.create_secret("pilot-proxy", {"proxy": factory.expired().decode()})
    _pool(
        stack,
        proxy,
        "expired",
        replicas=2,
        pilot={
            "executableSecret": {"name": "pilot", "key": "pilot.sh"},
            "proxySecret": {"name": "pilot-proxy", "key": "proxy"},
        },
    )
    stalled = _condition(stack, "expired", "Stalled", "ProxyExpired")
    assert "no new pilots" in stalled["message"]
    assert _condition(stack, "expired", "ProxyExpiring", "ProxyExpired")["status"] == "True"
    assert stack.vms("expired") == []
    stack.create_secret("pilot-proxy", {"proxy": factory.rfc().decode()})
    stack.wait_vms("expired", 2)
    wait_for(
        lambda: any(e.reason == "ProxyRenewed" for e in stack.events()),
        30,
        message="ProxyRenewed event",
    )
