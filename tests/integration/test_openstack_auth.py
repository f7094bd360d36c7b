"""keystone application credentials (``3.x_appcred``) and tokens that expire mid-run.

A private peer whose keystone issues tokens for ``TOKEN_SECONDS`` only, and whose Nova and
Neutron refuse an expired token with 401 (as keystonemiddleware does in front of a real
Nova). The robot account is an application credential made in keystone by the test. The
operator must keep reconciling across several token lifetimes: libcloud renews a token
``AUTH_TOKEN_EXPIRES_GRACE_SECONDS`` before it expires, so no request may reach Nova with a
dead one, no cycle may fail, and the application credential's secret must show up in no
log record, event, status or annotation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from cloudpilot import naming, redaction
from tests.support.kube import wait_for
from tests.support.openstack import make_driver, require_openstack_peer
from tests.support.openstack_peer import OpenStackPeer
from tests.support.stack import Stack

TOKEN_SECONDS = 10
"""keystone's ``[token] expiration``: libcloud uses a token for ~5 s, then renews it."""

TOKENS_TO_OUTLIVE = 3
"""How many successive token lifetimes the operator must work through."""

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def short_token_peer() -> Iterator[OpenStackPeer]:
    require_openstack_peer()
    with OpenStackPeer(token_expiration=TOKEN_SECONDS) as peer:
        yield peer


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    redaction.install_log_filter()
    yield caplog


def _forms(value: str) -> set[str]:
    encoded = base64.b64encode(value.encode()).decode()
    return {value, encoded, quote(encoded, safe=""), quote(value, safe="")}


def _appcred_token(peer: OpenStackPeer, cred_id: str, secret: str) -> str:
    auth = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": cred_id, "secret": secret},
            }
        }
    }
    request = urllib.request.Request(  # noqa: S310 - the peer's loopback keystone
        f"{peer.identity_url}/auth/tokens",
        data=json.dumps(auth).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with _OPENER.open(request, timeout=10) as answer:
        return str(answer.headers["X-Subject-Token"])


def _nova_status(peer: OpenStackPeer, token: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - the peer's loopback Nova
        f"{peer.compute_url}/servers", headers={"X-Auth-Token": token}
    )
    try:
        with _OPENER.open(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _servers(driver: Any, pool: str, namespace: str) -> list[Any]:
    prefix = naming.pool_prefix(namespace, pool)
    return [n for n in driver.list_nodes() if n.name.startswith(prefix)]


def test_appcred_pool_outlives_expiring_tokens_without_a_failed_cycle_or_a_leak(
    stack: Stack, short_token_peer: OpenStackPeer, every_log: pytest.LogCaptureFixture
) -> None:
    peer = short_token_peer
    cred_id, cred_secret = peer.create_application_credential("cloudpilot-robot")
    stack.create_secret("robot", {"key": cred_id, "secret": cred_secret})

    # The control: a token of our own, refused by Nova once it has expired.
    ours = _appcred_token(peer, cred_id, cred_secret)
    ours_digest = hashlib.sha256(ours.encode()).hexdigest()[:16]
    assert _nova_status(peer, ours) == 200

    driver = make_driver(peer)
    stack.apply_pool(
        "robot",
        ce="cloudprov.mysite.example",
        cloudType="OPENSTACK",
        driver=peer.appcred_driver_options(),
        credentialsSecret={"name": "robot"},
        instance={"image": "name:CentOS 7 (PVHVM)", "flavor": "name:1GB Standard Instance"},
        replicas=1,
    )
    wait_for(lambda: len(_servers(driver, "robot", stack.namespace)) == 1, 60, message="1 VM")

    def operator_tokens() -> list[dict[str, Any]]:
        return [
            t
            for t in peer.stats()["tokens"]
            if t["application_credential"] == cred_id and t["digest"] != ours_digest
        ]

    first = operator_tokens()[0]
    assert first["methods"] == ["application_credential"]

    def outlived() -> bool:
        """The operator used tokens issued after ``TOKENS_TO_OUTLIVE`` expiries."""
        tokens = operator_tokens()
        expiries = sorted({t["expires_at"] for t in tokens})
        return any(
            t["issued_at"] >= expiries[0] + (TOKENS_TO_OUTLIVE - 1) * TOKEN_SECONDS for t in tokens
        )

    wait_for(outlived, 30 + TOKENS_TO_OUTLIVE * TOKEN_SECONDS, message="tokens renewed")
    assert wait_for(lambda: _nova_status(peer, ours) == 401 or None, 2 * TOKEN_SECONDS) is True

    # A write after the renewals: the scale-up goes through with a fresh token.
    stack.scale_pool("robot", 2)
    wait_for(lambda: len(_servers(driver, "robot", stack.namespace)) == 2, 60, message="2 VMs")
    status = stack.wait_status("robot", lambda s: s.get("replicas") == 2 and s, what="2 live")

    assert [t["refused"] for t in operator_tokens()] == [0] * len(operator_tokens())
    warnings = [f"{e.reason}: {e.message}" for e in stack.events() if e.type == "Warning"]
    assert warnings == []
    assert "lastError" not in status
    ready = stack.condition("robot", "Ready")
    assert ready is not None and ready["status"] == "True"

    surfaces = {
        "logs": "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in every_log.records),
        "events": "\n".join(f"{e.reason} {e.message}" for e in stack.events()),
        "pool": json.dumps(stack.pool("robot")),
    }
    for surface, text in surfaces.items():
        for needle in _forms(cred_secret):
            assert needle not in text, f"the application credential's secret leaked into {surface}"
