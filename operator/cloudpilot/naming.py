"""VM names, ownership and pilot stamps.

DIRAC named every VM ``VMDIRAC3_<8 hex>``, a prefix shared by every CE in the world, so one
CE's cleanup counted and destroyed another's VMs. Here each pool *and queue* gets its own
prefix, valid under the strictest common rules (GCE and Azure: lower case letters, digits
and hyphens, starting with a letter, at most 63 characters):

    cp-<pool>-<pool hash>-<queue>-<queue hash>-<8 hex>

The readable parts are truncated; the short hashes of the full identity keep two pools (or
queues) whose names share a long beginning apart. The pool part alone finds VMs of a queue
that was removed from the spec, so they are cleaned up instead of forgotten.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

from cloudpilot import constants

MAX_NAME_LENGTH = 63
SUFFIX_LENGTH = 8
_UNSAFE = re.compile(r"[^a-z0-9]+")
_QUEUE_PART = re.compile(r"^(?P<queue>[a-z0-9-]+)-[0-9a-f]{4}-[0-9a-f]{8}$")


def _slug(text: str, limit: int) -> str:
    slug = _UNSAFE.sub("-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "x"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def pool_prefix(namespace: str, pool: str) -> str:
    """The part of every VM name shared by all queues of one pool.

    The hash does not include the pool's uid: a pool deleted with ``deletionPolicy: Orphan``
    and applied again adopts its VMs, as a Deployment adopts its ReplicaSets.
    """
    return f"cp-{_slug(pool, 18)}-{_digest(f'{namespace}/{pool}', 6)}-"


def queue_prefix(namespace: str, pool: str, queue: str) -> str:
    """The friendly-name prefix unique to one pool and queue."""
    queue_hash = _digest(f"{namespace}/{pool}/{queue}", 4)
    return f"{pool_prefix(namespace, pool)}{_slug(queue, 12)}-{queue_hash}-"


def new_vm_name(prefix: str) -> str:
    """A fresh VM name under a queue's prefix; the suffix only keeps names distinct."""
    return f"{prefix}{secrets.token_hex(SUFFIX_LENGTH // 2)}"


def pool_tag_value(namespace: str, pool: str) -> str:
    return f"{namespace}/{pool}"


def vm_tags(namespace: str, pool: str, queue: str, ce: str) -> dict[str, str]:
    """Metadata put on each VM (EC2 tags, OpenStack metadata) where the driver allows it."""
    return {
        constants.TAG_POOL: pool_tag_value(namespace, pool),
        constants.TAG_QUEUE: queue,
        constants.TAG_CE: ce,
        constants.TAG_MANAGED_BY: "cloudpilot",
    }


def owned_by_pool(
    name: str,
    tags: Mapping[str, str] | None,
    *,
    namespace: str,
    pool: str,
    tags_supported: bool,
) -> bool:
    """Whether a listed VM belongs to this pool.

    The name must have the pool's prefix and the full shape of a CloudPilot name. Where the
    driver keeps metadata the pool tag must match too: a VM made by hand with a copied name
    has no such tag and stays untouched.
    """
    prefix = pool_prefix(namespace, pool)
    if not name.startswith(prefix) or not _QUEUE_PART.match(name[len(prefix) :]):
        return False
    if not tags_supported:
        return True
    return (tags or {}).get(constants.TAG_POOL) == pool_tag_value(namespace, pool)


def queue_of(
    name: str, tags: Mapping[str, str] | None, prefixes: Mapping[str, str], pool_prefix: str
) -> str:
    """The queue a pool's VM belongs to: the one whose prefix it carries.

    ``prefixes`` maps the spec's queue names to their prefixes. A VM of a queue that is no
    longer in the spec gets the name from its tag (or the readable part of its name).
    """
    for queue, prefix in prefixes.items():
        if name.startswith(prefix):
            return queue
    if tags and tags.get(constants.TAG_QUEUE):
        return tags[constants.TAG_QUEUE]
    match = _QUEUE_PART.match(name[len(pool_prefix) :])
    return match.group("queue") if match else "unknown"


def pilot_stamp(instance_id: str) -> str:
    """The ``DIRAC_PILOT_STAMP`` of a VM, derived from its instance id.

    A batch of VMs (EC2 ``MinCount/MaxCount``, OpenStack multi-create) shares one user data,
    so the stamp cannot be written into it per VM. The VM computes the same value at boot
    from its own instance id (see the templates: ``sha256("cloudpilot:<id>")``, 32 hex
    characters, the width of DIRAC's stamp column), and the operator records it in status
    against the pilot reference, which is how DIRAC's pilot database looks stamps up.
    """
    return hashlib.sha256(f"cloudpilot:{instance_id}".encode()).hexdigest()[:32]


def pilot_reference(instance_id: str) -> str:
    return f"cloud://{instance_id}"


def pool_selector(pool: str, uid: str) -> str:
    """``status.selector``: the label selector the CRD's scale subresource reports.

    No Pod carries it (pilots are VMs): it exists because the HorizontalPodAutoscaler and
    KEDA refuse a scale target without one ("selector is required"), even when they scale
    on an external metric that never selects Pods. It names the pool, so it is unique, and
    it must parse: a pool name longer than a label value (63) uses the pool's uid instead.
    """
    if len(pool) <= 63:
        return f"{constants.TAG_POOL}={pool}"
    return f"{constants.TAG_POOL}-uid={uid}"
