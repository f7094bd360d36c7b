"""Bad input that used to be accepted silently, or retried for ever, on the real API server.

Each case applies a bad pool beside a healthy one and asserts three things: the bad pool
says what is wrong (``Stalled=True`` and ``Ready=False`` with a reason naming the class of
problem), no VM of it was ever created, and the healthy pool converges all the same. The
operator runs with a 2 s bound on unreachable endpoints, so that case stalls in seconds
(the default is 10 minutes; the rule itself is unit-tested in ``tests/unit/test_status``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from cloudpilot import constants
from tests.support.kube import wait_for
from tests.support.proxies import ProxyFactory
from tests.support.stack import Stack

STALL_AFTER = 2.0


@pytest.fixture
def ops(stack_without_operator: Stack) -> Iterator[Stack]:
    stack_without_operator.start_operator(unreachable_stall_after=STALL_AFTER)
    yield stack_without_operator


def _stalled(stack: Stack, pool: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        stalled = stack.condition(pool, "Stalled")
        if stalled and stalled["status"] == "True" and stalled["reason"] == reason:
            return stalled
        return None

    stalled = wait_for(found, timeout, message=f"Stalled {reason} on {pool}")
    ready = stack.condition(pool, "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == reason
    return stalled


def _healthy_beside(stack: Stack, bad: str) -> None:
    """A good pool applied next to the bad one converges, and the bad one has no VM."""
    stack.apply_pool("healthy", replicas=2)
    stack.wait_vms("healthy", 2)
    stack.wait_status(
        "healthy",
        lambda s: any(
            c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", [])
        ),
        what="healthy pool Ready=True",
    )
    assert stack.vms(bad, include_gone=True) == [], "the bad pool created a VM"


def _warning(stack: Stack, reason: str, text: str) -> Any:
    return wait_for(
        lambda: next(
            (e for e in stack.events() if e.reason == reason and text in (e.message or "")), None
        ),
        30,
        message=f"Warning event {reason} with {text!r}",
    )


def _create(stack: Stack, manifest: dict[str, Any]) -> None:
    stack.custom.create_namespaced_custom_object(
        constants.API_GROUP,
        constants.API_VERSION,
        stack.namespace,
        constants.PLURAL,
        manifest,
        field_validation="Strict",
    )


# -- the pilot proxy ---------------------------------------------------------------------------


def test_a_garbage_proxy_behind_secret_proxy_is_never_used(ops: Stack) -> None:
    ops.create_secret("garbage-proxy", {"proxy": "this is not a proxy\n"})
    key = ops.ec2.credentials[0]
    ops.create_secret("fedcloud", {"cloud.auth": f"[DEFAULT]\nkey = {key}\nsecret = PROXY\n"})
    ops.apply_pool(
        "fed",
        replicas=2,
        credentialsSecret={"name": "fedcloud"},
        pilot={
            "executableSecret": {"name": "pilot", "key": "pilot.sh"},
            "proxySecret": {"name": "garbage-proxy", "key": "proxy"},
        },
    )
    stalled = _stalled(ops, "fed", "InvalidProxy")
    assert "secret = PROXY" in stalled["message"]
    assert "not a PEM certificate chain with its private key" in stalled["message"]
    # Never written to disk, so never handed to a driver.
    store = ops.reconcilers[-1].proxy_files
    assert store.path_of(f"{ops.namespace}/garbage-proxy:proxy") is None
    _healthy_beside(ops, "fed")


def test_a_garbage_pilot_proxy_stalls_the_pool_not_only_a_warning(ops: Stack) -> None:
    """ProxyExpiring=False alone reads as healthy to kstatus: Stalled/Ready=False say it."""
    ops.create_secret("garbage-proxy", {"proxy": "-----BEGIN CERTIFICATE-----\nAAAA\n"})
    ops.apply_pool(
        "junk",
        replicas=2,
        pilot={
            "executableSecret": {"name": "pilot", "key": "pilot.sh"},
            "proxySecret": {"name": "garbage-proxy", "key": "proxy"},
        },
    )
    stalled = _stalled(ops, "junk", "InvalidProxy")
    assert "unusable" in stalled["message"] and "no new pilots start" in stalled["message"]
    proxy_condition = ops.condition("junk", "ProxyExpiring")
    assert proxy_condition is not None and proxy_condition["reason"] == "InvalidProxy"
    _healthy_beside(ops, "junk")
    # Replaced by a good proxy, the pool starts its pilots.
    ops.create_secret("garbage-proxy", {"proxy": ProxyFactory().rfc().decode()})
    ops.wait_vms("junk", 2)


# -- options the driver does not know ----------------------------------------------------------


def test_an_unknown_driver_option_is_refused_with_the_accepted_names(ops: Stack) -> None:
    ops.apply_pool("typo", replicas=2, driver={**ops.ec2.driver_options(), "regoin": "eu-west-1"})
    stalled = _stalled(ops, "typo", "InvalidConfig")
    assert "unknown option(s) regoin for MotoEC2NodeDriver" in stalled["message"]
    assert "region" in stalled["message"].split("accepted: ")[1]
    _warning(ops, "InvalidConfig", "regoin")
    _healthy_beside(ops, "typo")


def test_an_unknown_create_option_is_refused_before_any_create(ops: Stack) -> None:
    ops.apply_pool(
        "badcreate",
        replicas=2,
        instance={
            "image": "name:AlmaLinux-9-GenericCloud-9.4-x86_64",
            "flavor": "t3.small",
            "createOptions": {"ex_bogus": True},
        },
    )
    stalled = _stalled(ops, "badcreate", "InvalidConfig")
    assert "createOptions: unknown option(s) ex_bogus" in stalled["message"]
    assert "ex_spot" in stalled["message"]
    _healthy_beside(ops, "badcreate")


def test_an_invalid_region_stalls_at_once(ops: Stack) -> None:
    """libcloud's EC2 driver refuses an unknown region when it is built: a ValueError that
    used to be retried as transient for ever."""
    ops.apply_pool("mars", replicas=2, driver={**ops.ec2.driver_options(), "region": "mars-1"})
    stalled = _stalled(ops, "mars", "InvalidConfig")
    assert "Invalid region: mars-1" in stalled["message"]
    assert ops.condition("mars", "Reconciling") is None
    _healthy_beside(ops, "mars")


# -- the pilot executable ----------------------------------------------------------------------


def test_a_pool_without_a_pilot_executable_starts_no_stub_vm(ops: Stack) -> None:
    manifest = ops.pool_manifest("nopilot", replicas=2)
    del manifest["spec"]["pilot"]
    _create(ops, manifest)
    stalled = _stalled(ops, "nopilot", "InvalidConfig")
    assert "spec.pilot.executableSecret is not set" in stalled["message"]
    _healthy_beside(ops, "nopilot")


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ({"name": "nowhere", "key": "pilot.sh"}, "/nowhere not found"),
        ({"name": "pilot", "key": "wrong.sh"}, "has no key 'wrong.sh'"),
    ],
    ids=["secret", "key"],
)
def test_a_missing_pilot_executable_secret_or_key_stalls(
    ops: Stack, ref: dict[str, str], words: str
) -> None:
    ops.apply_pool("lost", replicas=2, pilot={"executableSecret": ref})
    stalled = _stalled(ops, "lost", "InvalidConfig")
    assert words in stalled["message"]
    _healthy_beside(ops, "lost")


# -- an endpoint that takes no connection ------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_endpoint_is_retried_then_stalled_after_the_bound(ops: Stack) -> None:
    ops.apply_pool(
        "refused", replicas=2, driver=ops.ec2.driver_options(("127.0.0.1", _closed_port()))
    )
    stalled = _stalled(ops, "refused", "EndpointUnreachable")
    assert f"longer than {STALL_AFTER:g}s" in stalled["message"]
    assert "Connection refused" in stalled["message"]
    # First a retried failure, then the stall: each with its own Warning.
    _warning(ops, "EndpointUnreachable", "Connection refused")
    _warning(ops, "EndpointUnreachable", f"longer than {STALL_AFTER:g}s")
    last_error = ops.status("refused")["lastError"]
    assert last_error["reason"] == "EndpointUnreachable"
    _healthy_beside(ops, "refused")
