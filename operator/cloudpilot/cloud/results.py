"""What a cloud call reports back, as plain data: a listed VM, the outcome of a create.

Kept apart from :mod:`cloudpilot.cloud.gateway` (which imports libcloud) so that the pure
modules that read these records (:mod:`cloudpilot.decision`, :mod:`cloudpilot.cycle_events`,
:mod:`cloudpilot.inventory`) and their unit tests never load a cloud driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cloudpilot.memory import CloudError


@dataclass(frozen=True)
class ListedNode:
    """One VM as the cloud's listing shows it (provider-neutral)."""

    id: str
    name: str
    state: str
    created_at: datetime | None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateResult:
    """One queue's create: the VMs started and, if not all were, why not."""

    queue: str
    requested: int
    created: tuple[ListedNode, ...] = ()
    error: CloudError | None = None
    fenced: bool = False
    """Part of it was not sent: this replica lost the Lease first (leader.NotLeading).
    Neither a success nor a failure: the replica that leads now creates what is missing."""
