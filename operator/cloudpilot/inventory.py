"""Split one cloud account's listing into the VMs each pool and queue owns (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cloudpilot.cloud.results import ListedNode
from cloudpilot.cloud.states import phase_of
from cloudpilot.models.queues import QueueConfig
from cloudpilot.models.vms import ObservedVM
from cloudpilot.naming import owned_by_pool, pool_prefix, queue_of, queue_prefix


def queue_prefixes(queues: Sequence[QueueConfig]) -> dict[str, str]:
    return {q.name: queue_prefix(q.pool_namespace, q.pool_name, q.name) for q in queues}


def owned_vms(
    listing: Iterable[ListedNode],
    *,
    namespace: str,
    pool: str,
    queues: Sequence[QueueConfig],
    tags_supported: bool,
) -> list[ObservedVM]:
    """The pool's VMs in a listing; terminated ones and everyone else's are left out."""
    prefixes = queue_prefixes(queues)
    base = pool_prefix(namespace, pool)
    owned = []
    for node in listing:
        if not owned_by_pool(
            node.name, node.tags, namespace=namespace, pool=pool, tags_supported=tags_supported
        ):
            continue
        phase = phase_of(node.state)
        if phase is None:
            continue
        owned.append(
            ObservedVM(
                id=node.id,
                name=node.name,
                queue=queue_of(node.name, node.tags, prefixes, base),
                phase=phase,
                created_at=node.created_at,
                cloud_state=node.state,
            )
        )
    return owned
