"""One cycle reads each Secret once, and every use of it in the cycle sees that version:
the pilot proxy assessed before deciding (expired? then no creation) is the one the new
VMs' user data carries. The shared cache between pools is made useless here (every read
is already old), so only the cycle's own reads are counted."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from cloudpilot import redaction, shared_caches
from cloudpilot.reconciler import PoolRef, Reconciler, ReconcilerSettings
from tests.support.builders import NAMESPACE, pool_spec
from tests.support.proxies import ProxyFactory

POOL = "one-read"
DRIVER = f"{__name__}.CreatingDriver"
CREATED: list[str] = []


class CreatingDriver(NodeDriver):
    """An empty cloud that creates what it is asked for."""

    name = "creating"

    def __init__(self, key: str, secret: str | None = None, **options: object) -> None:
        self.key, self.secret = key, secret

    def list_nodes(self) -> list[Node]:
        return []

    def list_images(self, location: object = None) -> list[NodeImage]:
        return [NodeImage("ami-12345678", "image", self)]

    def list_sizes(self, location: object = None) -> list[NodeSize]:
        return [NodeSize("m5.large", "m5.large", 8192, 0, 0, 0.0, self)]

    def create_node(self, name: str, size: NodeSize, image: NodeImage, **kw: Any) -> Node:
        CREATED.append(name)
        return Node(f"i-{len(CREATED)}", name, NodeState.PENDING, [], [], self)


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    before = set(redaction._secrets)
    yield
    for owner in set(redaction._secrets) - before:
        redaction.forget(owner)


async def test_a_cycle_reads_each_secret_once_listing_and_creating_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    CREATED.clear()
    ticks = itertools.count(0.0, 3600.0)  # an hour between any two looks at the clock
    monkeypatch.setattr(shared_caches.time, "monotonic", lambda: next(ticks))
    secrets = {
        "cloud-creds": {"key": b"access-key", "secret": b"secret-value"},
        "pilot": {"pilot.sh": b"#!/bin/sh\necho pilot\n", "proxy.pem": ProxyFactory().rfc()},
    }
    reads: Counter[str] = Counter()

    async def read_secret(namespace: str, name: str) -> dict[str, bytes]:
        reads[name] += 1
        return secrets[name]

    reconciler = Reconciler(
        ReconcilerSettings(allowed_driver_classes=frozenset({DRIVER})), read_secret=read_secret
    )
    spec = pool_spec(
        replicas=1,
        cloudType=DRIVER,
        driver={},
        pilot={
            "executableSecret": {"name": "pilot", "key": "pilot.sh"},
            "proxySecret": {"name": "pilot", "key": "proxy.pem"},
        },
    )
    body = {
        "metadata": {"name": POOL, "namespace": NAMESPACE, "uid": "uid-r", "generation": 1},
        "spec": spec,
        "status": {},
    }
    outcome = await reconciler.reconcile(PoolRef(NAMESPACE, POOL, "uid-r"), body)

    assert len(CREATED) == 1, outcome.events  # the cycle got as far as creating
    assert reads == {"cloud-creds": 1, "pilot": 1}, "a Secret was read twice in one cycle"
