"""What the cloud says about one VM, reduced to what decisions need."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cloudpilot.naming import pilot_stamp


class Phase(StrEnum):
    """A pilot VM's phase (fixed by ../shared/guides/api.md)."""

    STARTING = "Starting"
    RUNNING = "Running"
    DONE = "Done"
    """The VM stopped itself: the pilot ended and the template halted the machine."""
    FAILED = "Failed"
    UNKNOWN = "Unknown"


LIVE_PHASES = frozenset({Phase.STARTING, Phase.RUNNING})
"""Counted in ``status.replicas``."""


@dataclass(frozen=True)
class ObservedVM:
    """One VM owned by a pool, as seen in the last listing (terminated VMs never get here)."""

    id: str
    name: str
    queue: str
    phase: Phase
    created_at: datetime | None
    cloud_state: str = ""
    """The provider-neutral libcloud state (``running``, ``stopped`` ...), for status detail."""

    @property
    def stamp(self) -> str:
        return pilot_stamp(self.id)
