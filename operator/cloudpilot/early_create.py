"""A scale-up decided before the cycle's listing, from the pool's last one: a pure rule.

A ``kubectl scale`` used to cost two round trips before a VM was asked for: the cycle listed
the account, then created. The listing adds nothing to *how many* VMs to create when the
pool's last cycle listed it recently and the operator remembers every creation it made
since: so the create is sent at once and the listing runs beside it. The listing's result
then feeds the rest of the cycle as usual (deletions, status, anything the early decision
left to do).

Why this cannot create a VM twice. The VMs of a pool that can exist are (a) those in the
pool's last listing, (b) those this process created since, and (c) those anyone else
created since. The early decision counts (a) and (b) exactly as a normal cycle on a shared
listing does (``cloudpilot.cloud.listing``: a listing up to an interval old, the
account's tick's, is normal, and what it lacks of the pool's own creations is in
``memory.pending``, by id).
(c) is empty for as long as this process holds the pool: only the leader creates, a new
Lease term starts a new reconciler (empty memory, no last look), and nothing else names
VMs with the pool's prefix and tags. The rule refuses whenever one of those arguments
could fail:

* **no last look**: a new process (restart), a new leadership term, a new pool, or a pool
  applied again over orphaned VMs (a new uid): only a listing knows what exists, so the
  cycle waits for one (a shared one made moments ago, if any: see below);
* **another shape**: anything but ``replicas`` changed in the queues (an account, a
  prefix, a queue added or renamed): the last listing may not show the VMs that count;
* **too old**: the last look is older than :data:`MAX_AGE`, well inside the TTL after
  which ``memory.pending`` forgets a creation that no listing ever showed;
* **an uncertain create**: a create whose outcome is unknown (a timeout, a lost answer)
  may have started VMs whose ids nobody knows; only a listing that started after it can
  tell (``memory.UNCERTAIN_HOLD``), so no early decision while one is remembered.

What the last look may lack in the other direction (a pilot that halted, a VM deleted by
hand) makes the early decision create *fewer* VMs, never more; the listing beside it shows
them and the same cycle creates the rest.

**A new pool on an account already listed** (issue 17) creates at once too, without this
rule: the account's shared listing, made for another pool moments ago, is handed to it
(:func:`cloudpilot.cloud.listing_reuse.unserved`: younger than the reuse age, half an
interval; started after the last create under the pool's prefix; made by this reconciler,
so in this process and this leadership term), its first creations are decided from it and
sent with no listing round trip. A separate early path would add nothing but a second
``DescribeInstances`` beside the create, so :data:`Refusal.NO_LAST_LOOK` stays. It is as
safe as (a)/(b)/(c) above:

* (a) the listing shows every VM that carried the pool's prefix when it started. Names and
  tags carry the namespace and the pool's name, not its uid, so the orphans of a pool
  deleted with ``deletionPolicy: Orphan`` and applied again (a new uid, the same prefix)
  are in it, and the new pool adopts them instead of creating;
* (b) a create under the prefix that returned after the listing started holds the listing
  back for that prefix (``WriteLog``), whichever pool object made it and through whichever
  credentials or endpoint: the log is one per reconciler. (It was one per listing: a
  predecessor that created through another Secret for the same cloud account left the
  other Secret's older listing servable, and the re-applied pool started its VMs again;
  ``test_new_pool_on_listed_account.py::...predates_its_orphans``.) A create still on the
  wire cannot be missed: a predecessor's object is gone only once its finalizer is
  released, under its lock, after its last cycle (and create) ended;
* (c) nobody else's: a restart or a new term has no listing (``Unserved.NONE_YET``), so
  the first pool of each account lists first, as before.

* an uncertain create (a timeout, a lost answer) may start VMs after any listing: its
  ``UNCERTAIN_HOLD`` was only in the pool's memory, which goes with its uid, so a pool
  deleted and applied again within it (7 s) could start them again, with or without a
  shared listing. The gateway now also notes it per queue prefix in the reconciler's
  ``WriteLog`` and refuses, unsent, any create under that prefix for the hold, as an
  uncertain failure of its own (:func:`cloudpilot.cloud.listing_reuse.create_hold_left`):
  the new pool object backs off as its predecessor did, its cycles list meanwhile and adopt
  what the late create started
  (``test_new_pool_on_listed_account.py::...right_after_an_uncertain_create...``). The
  log is the reconciler's: a restart or a new leadership term within the hold forgets it.

The first pool of an account has no such listing and must list before it creates: nothing
else knows which VMs already carry its prefix (orphans). EC2's ``ClientToken`` would not
help: it makes a *retry of one request* idempotent, while orphans were started by other
requests, with tokens no new pool object can know (and OpenStack has no such token).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from cloudpilot import constants, planner
from cloudpilot import memory as mem
from cloudpilot.models.queues import QueueConfig
from cloudpilot.models.spec import ScaleDownPolicy
from cloudpilot.models.vms import ObservedVM

MAX_AGE: Final = timedelta(seconds=constants.PENDING_CREATE_TTL / 4)
"""Oldest last look an early decision trusts: a quarter of the TTL of a remembered creation
(150 s), so a creation it relies on cannot have been forgotten, even counting the
interval by which a shared listing may predate the cycle that got it. A quiet pool is looked
at every minute, so a ``kubectl scale`` almost always finds a usable last look."""


@dataclass(frozen=True)
class LastLook:
    """What the pool's last cycle saw once every account was listed."""

    shape: str
    """:func:`shape_of` the queues of that cycle."""
    observed: tuple[ObservedVM, ...]
    at: datetime
    """The start of that cycle (its listing may be older, by at most an interval)."""


class Refusal(StrEnum):
    """Why a cycle lists before it creates."""

    NO_LAST_LOOK = "NoLastLook"
    OTHER_SHAPE = "OtherShape"
    TOO_OLD = "TooOld"
    UNCERTAIN_CREATE = "UncertainCreate"


def shape_of(queues: Sequence[QueueConfig]) -> str:
    """The queues with their replicas left out, as a short digest: equal for two specs that
    differ only in how many VMs they ask for."""
    text = repr(sorted((replace(q, replicas=0) for q in queues), key=lambda q: q.name))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def refusal(
    last: LastLook | None, queues: Sequence[QueueConfig], memory: mem.PoolMemory, now: datetime
) -> Refusal | None:
    """Why the last look cannot serve this cycle's creations (None: it can)."""
    if last is None:
        return Refusal.NO_LAST_LOOK
    if shape_of(queues) != last.shape:
        return Refusal.OTHER_SHAPE
    if now - last.at > MAX_AGE:
        return Refusal.TOO_OLD
    if any(b.error.uncertain for b in memory.backoff.values()):
        return Refusal.UNCERTAIN_CREATE
    return None


def early_creations(
    last: LastLook | None,
    queues: Sequence[QueueConfig],
    memory: mem.PoolMemory,
    now: datetime,
    *,
    limits: planner.PoolLimits | None = None,
    removed_queue_policy: ScaleDownPolicy = ScaleDownPolicy.DRAIN,
    max_creates: int | None = None,
    gates: Mapping[str, planner.QueueGate] | None = None,
) -> tuple[planner.Creation, ...]:
    """The creations the planner decides from the last look and memory, or none when the
    last look cannot be trusted (:func:`refusal`). Deletions wait for the listing."""
    if refusal(last, queues, memory, now) is not None or last is None:
        return ()
    plan = planner.plan(
        queues,
        last.observed,
        memory,
        now,
        limits=limits or planner.PoolLimits(),
        removed_queue_policy=removed_queue_policy,
        max_creates=max_creates,
        gates=gates,
    )
    return plan.creations
