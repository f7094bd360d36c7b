"""Builders for the pure core's inputs, with defaults that make a valid, boring pool.

A test states only what its behaviour depends on (a queue's replicas, a VM's phase and age)
and takes everything else from here, so that a new required field costs one edit in this
file instead of one in every test, and so that the test reads as the rule it checks.

Time is fixed: every builder works relative to :data:`NOW`, never the wall clock, so a test
cannot pass or fail by the second it runs in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudpilot import naming
from cloudpilot.memory import Backoff, CloudError, ErrorKind, PendingVM, PoolMemory
from cloudpilot.models.queues import CloudAccount, Lookup, QueueConfig
from cloudpilot.models.vms import ObservedVM, Phase

__all__ = [
    "CE",
    "NAMESPACE",
    "NOW",
    "POOL",
    "account",
    "ago",
    "backoff",
    "cloud_error",
    "listed_node",
    "memory",
    "owned_name",
    "owned_tags",
    "pending",
    "pool_spec",
    "queue",
    "vm",
    "vms",
]

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NAMESPACE = "grid"
POOL = "lhcb-pilots"
CE = "cloud.example.org"

_ids = itertools.count(1)


def _next_id() -> int:
    return next(_ids)


def ago(seconds: float) -> datetime:
    """The moment ``seconds`` before :data:`NOW`."""
    return NOW - timedelta(seconds=seconds)


def account(**overrides: Any) -> CloudAccount:
    """The cloud account every built queue shares unless a test says otherwise."""
    fields: dict[str, Any] = {
        "cloud_type": "EC2",
        "driver_options": (("region", '"eu-west-1"'),),
        "credentials_secret": "cloud-creds",
        "namespace": NAMESPACE,
    }
    fields.update(overrides)
    return CloudAccount(**fields)


def queue(name: str = "default", replicas: int = 0, **overrides: Any) -> QueueConfig:
    """One queue's effective configuration (what ``effective_queues`` would produce)."""
    fields: dict[str, Any] = {
        "pool_namespace": NAMESPACE,
        "pool_name": POOL,
        "name": name,
        "replicas": replicas,
        "ce": CE,
        "account": account(),
        "image": Lookup(by_name=False, value="ami-12345678"),
        "flavor": Lookup(by_name=False, value="m5.large"),
    }
    fields.update(overrides)
    return QueueConfig(**fields)


def vm(
    queue: str = "default",
    phase: Phase = Phase.RUNNING,
    *,
    age: float | None = 600.0,
    id: str | None = None,
    name: str | None = None,
    cloud_state: str = "",
) -> ObservedVM:
    """A VM the pool owns, created ``age`` seconds before NOW (None: the cloud did not say).

    Ids and names are unique per call, so two built VMs are never the same VM by accident.
    """
    number = _next_id()
    vm_id = id or f"i-{number:08x}"
    prefix = naming.queue_prefix(NAMESPACE, POOL, queue)
    return ObservedVM(
        id=vm_id,
        name=name or f"{prefix}{number:08x}",
        queue=queue,
        phase=phase,
        created_at=None if age is None else ago(age),
        cloud_state=cloud_state,
    )


def vms(
    count: int, queue: str = "default", phase: Phase = Phase.RUNNING, **kw: Any
) -> list[ObservedVM]:
    """``count`` VMs alike but for their id; ages grow by a second so newest-first is defined."""
    base = kw.pop("age", 600.0)
    return [vm(queue, phase, age=None if base is None else base + i, **kw) for i in range(count)]


def pending(queue: str = "default", *, age: float = 5.0, id: str | None = None) -> PendingVM:
    """A VM that ``create`` returned ``age`` seconds ago and no listing has shown yet."""
    number = _next_id()
    vm_id = id or f"i-{number:08x}"
    return PendingVM(
        id=vm_id,
        name=f"{naming.queue_prefix(NAMESPACE, POOL, queue)}{number:08x}",
        queue=queue,
        created_at=ago(age),
    )


def cloud_error(kind: ErrorKind = ErrorKind.TRANSIENT, message: str = "boom") -> CloudError:
    return CloudError(kind=kind, message=f"{kind.value}: {message}", operation="create")


def backoff(
    kind: ErrorKind = ErrorKind.TRANSIENT, *, retry_in: float = 60.0, failures: int = 1
) -> Backoff:
    """A back-off entry that ends ``retry_in`` seconds after NOW (negative: already over)."""
    return Backoff(
        failures=failures, retry_at=NOW + timedelta(seconds=retry_in), error=cloud_error(kind)
    )


def memory(
    pending: Iterable[PendingVM] = (),
    deleting: Iterable[str] | Mapping[str, datetime] = (),
    backoff: Mapping[str, Backoff] | None = None,
) -> PoolMemory:
    """Pool memory; ``deleting`` as ids means "destroy accepted a second before NOW"."""
    if not isinstance(deleting, Mapping):
        deleting = dict.fromkeys(deleting, ago(1))
    return PoolMemory(
        pending={p.id: p for p in pending}, deleting=dict(deleting), backoff=dict(backoff or {})
    )


def pool_spec(**fields: Any) -> dict[str, Any]:
    """A raw ``.spec`` (camelCase, as in a manifest) that is complete on its own.

    Keys given as ``None`` are dropped, so a test can remove a default:
    ``pool_spec(cloudType=None)``.
    """
    spec: dict[str, Any] = {
        "ce": CE,
        "cloudType": "EC2",
        "driver": {"region": "eu-west-1"},
        "credentialsSecret": {"name": "cloud-creds"},
        "instance": {"image": "ami-12345678", "flavor": "m5.large"},
    }
    spec.update(fields)
    return {k: v for k, v in spec.items() if v is not None}


def listed_node(
    name: str,
    *,
    state: str = "running",
    tags: Mapping[str, str] | None = None,
    age: float | None = 600.0,
    id: str | None = None,
) -> Any:
    """One entry of a cloud listing, as the gateway hands it to the inventory."""
    from cloudpilot.cloud.results import ListedNode

    number = _next_id()
    return ListedNode(
        id=id or f"i-{number:08x}",
        name=name,
        state=state,
        created_at=None if age is None else ago(age),
        tags=dict(tags or {}),
    )


def owned_name(queue: str = "default", *, namespace: str = NAMESPACE, pool: str = POOL) -> str:
    """A fresh VM name as the operator would give it in ``queue`` of a pool."""
    return naming.new_vm_name(naming.queue_prefix(namespace, pool, queue))


def owned_tags(
    queue: str = "default", *, namespace: str = NAMESPACE, pool: str = POOL
) -> dict[str, str]:
    """The tags the operator puts on a VM of ``queue``."""
    return naming.vm_tags(namespace, pool, queue, CE)
