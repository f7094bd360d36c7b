"""Shared pieces of the benchmark: the emulated cloud, a reconciler harness, timing.

Everything listens on 127.0.0.1 and is stopped by the context managers that start it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cloudpilot.reconciler import Outcome, PoolRef, Reconciler, ReconcilerSettings
from cloudpilot_devtools import moto_ec2
from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy
from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver

CE = "ce.cloudpilot.bench"
NAMESPACE = "pilots"
IMAGE_NAME = "AlmaLinux-9-GenericCloud-9.4-x86_64"
AMI_ID = "ami-0a1e9c0a1a9e94001"  # IMAGE_NAME's id in the emulator's small catalogue
FLAVOR = "t3.small"
PILOT = "#!/bin/sh\necho pilot\n"
DRIVER_CLASS = moto_ec2.CLASS_PATH


@dataclass
class Cloud:
    ec2: EC2Emulator
    proxy: LatencyProxy

    def driver(self, *, proxied: bool = True) -> MotoEC2NodeDriver:
        endpoint = self.proxy.endpoint if proxied else None
        return MotoEC2NodeDriver(*self.ec2.credentials, **self.ec2.driver_options(endpoint))

    def fresh(self, latency: float) -> None:
        """Empty cloud, zero counts, the given latency per request."""
        self.ec2.reset()
        self.proxy.latency = latency
        self.proxy.reset_counts()

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self.proxy.counts.items() if v}

    def calls(self) -> int:
        return sum(self.proxy.counts.values())


@contextlib.contextmanager
def emulated_cloud() -> Iterator[Cloud]:
    with EC2Emulator() as ec2, LatencyProxy(ec2.endpoint) as proxy:
        yield Cloud(ec2, proxy)


def pool_spec(cloud: Cloud, replicas: int, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "ce": CE,
        "cloudType": DRIVER_CLASS,
        # moto spends ~20 ms of CPU per instance: on a busy machine a batch of 500 can take
        # longer than the operator's 10 s default wait, which a real EC2 never does.
        "driver": {**cloud.ec2.driver_options(cloud.proxy.endpoint), "timeout": 60},
        "credentialsSecret": {"name": "ec2-credentials"},
        "instance": {"image": f"name:{IMAGE_NAME}", "flavor": FLAVOR},
        "pilot": {"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
    }
    spec.update(extra)
    return spec


@dataclass
class ReconcilerHarness:
    """CloudPilot's real reconciler (gateway, shared listing, planner, user data), with
    Secrets from a dict and pools as plain bodies: the operator minus kopf."""

    cloud: Cloud
    settings: ReconcilerSettings = field(
        default_factory=lambda: ReconcilerSettings(rate_limit=1000.0, rate_burst=1000)
    )
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock: Callable[[], datetime] | None = None
    """The reconciler's clock (None: the real one), to run hours of the operator's time."""

    def __post_init__(self) -> None:
        key, secret = self.cloud.ec2.credentials
        secrets = {
            "ec2-credentials": {"key": key.encode(), "secret": secret.encode()},
            "pilot": {"pilot.sh": PILOT.encode()},
        }

        async def read_secret(namespace: str, name: str) -> dict[str, bytes]:
            return secrets[name]

        # The pools name the moto driver's class path: an operator must allow it.
        self.settings = replace(
            self.settings,
            allowed_driver_classes=self.settings.allowed_driver_classes | {DRIVER_CLASS},
        )
        if self.clock is None:
            self.reconciler = Reconciler(self.settings, read_secret=read_secret)
        else:
            self.reconciler = Reconciler(self.settings, read_secret=read_secret, clock=self.clock)

    async def reconcile(self, name: str, replicas: int, **extra: Any) -> dict[str, Any]:
        return (await self.cycle(name, replicas, **extra))[0]

    async def cycle(self, name: str, replicas: int, **extra: Any) -> tuple[dict[str, Any], Outcome]:
        """One reconcile: the status as stored after it, and the outcome (next delay ...)."""
        body = {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"uid-{name}",
                "generation": 1,
            },
            "spec": pool_spec(self.cloud, replicas, **extra),
            "status": dict(self.statuses.get(name, {})),
        }
        outcome = await self.reconciler.reconcile(PoolRef(NAMESPACE, name, f"uid-{name}"), body)
        status = {**self.statuses.get(name, {}), **outcome.status_patch}
        self.statuses[name] = {k: v for k, v in status.items() if v is not None}
        return self.statuses[name], outcome


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (monotonic wall-clock)."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")
