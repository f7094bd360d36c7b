"""What the operator remembers about one pool between its cycles: one record per pool,
so that forgetting a pool is one removal (see :meth:`Reconciler.forget`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cloudpilot.early_create import LastLook
from cloudpilot.memory import PoolMemory
from cloudpilot.teardown import TeardownState


@dataclass
class PoolState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises the pool's cycles and its teardown."""
    memory: PoolMemory = field(default_factory=PoolMemory)
    """What the listing lags behind (pending, deleting), back-off, outage, credentials."""
    recorded_spec: str | None = None
    """The last usable spec as recorded in ``status.teardownSpec``, as compact JSON:
    re-parsed only if the pool is deleted (parsed models would cost ~4 KB a pool for a
    case that almost never happens)."""
    teardown: TeardownState = field(default_factory=TeardownState)
    last_look: LastLook | None = None
    """What the last fully listed cycle saw: where an early scale-up starts from
    (:mod:`cloudpilot.early_create`)."""
