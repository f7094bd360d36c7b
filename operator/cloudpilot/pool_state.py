"""What the operator remembers about one pool between its cycles: one record per pool,
so that forgetting a pool is one removal (see :meth:`Reconciler.forget`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

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
    redaction_owners: set[str] = field(default_factory=set)
    """Owners under which this pool's rendered secrets are masked in logs."""
