"""One cycle reads each Secret once, and every use of it in the cycle sees that version:
the pilot proxy assessed before deciding (expired? then no creation) is the one the new
VMs' user data carries. The shared cache between pools is made useless here (every read
is already old), so only the cycle's own reads are counted."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from libcloud.compute.base import Node, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from cloudpilot import shared_caches
from tests.support.proxies import ProxyFactory
from tests.support.stub_reconciler import (
    SECRETS,
    StubDriver,
    pool_body,
    pool_ref,
    stub_reconciler,
)

pytestmark = pytest.mark.usefixtures("forget_registered_secrets")

POOL = "one-read"
CREATED: list[str] = []


class CreatingDriver(StubDriver):
    """An empty cloud that creates what it is asked for."""

    def create_node(self, name: str, size: NodeSize, image: NodeImage, **kw: Any) -> Node:
        CREATED.append(name)
        return Node(f"i-{len(CREATED)}", name, NodeState.PENDING, [], [], self)


async def test_a_cycle_reads_each_secret_once_listing_and_creating_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    CREATED.clear()
    ticks = itertools.count(0.0, 3600.0)  # an hour between any two looks at the clock
    monkeypatch.setattr(shared_caches.time, "monotonic", lambda: next(ticks))
    secrets = {**SECRETS, "pilot": {**SECRETS["pilot"], "proxy.pem": ProxyFactory().rfc()}}
    reads: Counter[str] = Counter()

    async def read_secret(namespace: str, name: str) -> dict[str, bytes]:
        reads[name] += 1
        return secrets[name]

    reconciler = stub_reconciler(CreatingDriver, read_secret=read_secret)
    pilot = {
        "executableSecret": {"name": "pilot", "key": "pilot.sh"},
        "proxySecret": {"name": "pilot", "key": "proxy.pem"},
    }
    body = pool_body(CreatingDriver, POOL, replicas=1, pilot=pilot)
    outcome = await reconciler.reconcile(pool_ref(POOL), body)

    assert len(CREATED) == 1, outcome.events  # the cycle got as far as creating
    assert reads == {"cloud-creds": 1, "pilot": 1}, "a Secret was read twice in one cycle"
