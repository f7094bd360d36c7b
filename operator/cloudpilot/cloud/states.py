"""libcloud node states -> pilot phases.

DIRAC mapped everything that was not STOPPED to Running, ERROR and TERMINATED included, so
broken VMs were counted as pilots forever. Here each libcloud state has a phase, and the
ones that mean "gone" drop the VM from the books.
"""

from __future__ import annotations

from cloudpilot.models.vms import Phase

GONE = frozenset({"terminated", "deleted"})
"""The VM no longer exists (EC2 lists terminated instances for an hour)."""

_PHASES: dict[str, Phase] = {
    "pending": Phase.STARTING,
    "starting": Phase.STARTING,
    "rebooting": Phase.STARTING,
    "running": Phase.RUNNING,
    "reconfiguring": Phase.RUNNING,
    "migrating": Phase.RUNNING,
    "updating": Phase.RUNNING,
    "normal": Phase.RUNNING,
    # The template halts the VM when the pilot ends: a stopping or stopped VM is a pilot
    # that finished.
    "stopping": Phase.DONE,
    "stopped": Phase.DONE,
    "error": Phase.FAILED,
    "suspended": Phase.UNKNOWN,
    "paused": Phase.UNKNOWN,
    "unknown": Phase.UNKNOWN,
}


def phase_of(state: object) -> Phase | None:
    """The phase of a libcloud ``NodeState`` (or its string value); None if the VM is gone."""
    value = str(getattr(state, "value", state)).lower()
    if value in GONE:
        return None
    return _PHASES.get(value, Phase.UNKNOWN)
