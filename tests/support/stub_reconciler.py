"""A whole Reconciler on a stub libcloud driver and Secrets held in memory: for unit tests
of one cycle end to end (what it reads, decides, sends and says) without a cluster or a
cloud. A test subclasses :class:`StubDriver` for what its cloud lists and does with a
create or a destroy, and states only what its behaviour depends on.

The driver is named by its class path in the pool's ``cloudType`` and allowed in the
reconciler's settings, as an operator allows a driver it trusts (cloudpilot.drivers).
"""

from __future__ import annotations

from typing import Any

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize

from cloudpilot.reconciler import PoolRef, Reconciler, ReconcilerSettings
from cloudpilot.shared_caches import SecretReader
from tests.support.builders import NAMESPACE, pool_spec

__all__ = ["SECRETS", "StubDriver", "pool_body", "pool_ref", "stub_reconciler"]

SECRETS: dict[str, dict[str, bytes]] = {
    "cloud-creds": {"key": b"access-key", "secret": b"secret-value"},
    "pilot": {"pilot.sh": b"#!/bin/sh\necho pilot\n"},
}
"""The cloud credentials and the pilot script every stub pool names."""


class StubDriver(NodeDriver):
    """An empty cloud with the one image and size a stub pool asks for."""

    name = "stub"

    def __init__(self, key: str, secret: str | None = None, **options: object) -> None:
        self.key, self.secret = key, secret

    def list_nodes(self) -> list[Node]:
        return []

    def list_images(self, location: object = None) -> list[NodeImage]:
        return [NodeImage("ami-12345678", "image", self)]

    def list_sizes(self, location: object = None) -> list[NodeSize]:
        return [NodeSize("m5.large", "m5.large", 8192, 0, 0, 0.0, self)]


def _class_path(driver: type[NodeDriver]) -> str:
    return f"{driver.__module__}.{driver.__qualname__}"


def stub_reconciler(
    driver: type[NodeDriver],
    *,
    read_secret: SecretReader | None = None,
    **options: Any,
) -> Reconciler:
    """A Reconciler that may load ``driver`` and reads :data:`SECRETS` (or ``read_secret``);
    ``options``: the Reconciler's other keyword arguments (``write_status``, ...)."""

    async def read_stub_secret(namespace: str, name: str) -> dict[str, bytes]:
        return SECRETS[name]

    return Reconciler(
        ReconcilerSettings(allowed_driver_classes=frozenset({_class_path(driver)})),
        read_secret=read_secret or read_stub_secret,
        **options,
    )


def pool_ref(name: str) -> PoolRef:
    return PoolRef(NAMESPACE, name, f"uid-{name}")


def pool_body(driver: type[NodeDriver], name: str, **spec: Any) -> dict[str, Any]:
    """A new pool (generation 1, no status yet) on ``driver``, with the stub pilot script;
    ``spec``: fields of ``.spec`` to set or replace (camelCase)."""
    fields: dict[str, Any] = {
        "cloudType": _class_path(driver),
        "driver": {},
        "pilot": {"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
        **spec,
    }
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1},
        "spec": pool_spec(**fields),
        "status": {},
    }
