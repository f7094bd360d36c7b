"""Nova's absolute limits as headroom: how many more VMs of a flavor a project can start.

Nova answers ``GET /limits`` with the project's quota and usage (``limits.absolute``:
``maxTotalInstances``/``totalInstancesUsed``, ``maxTotalCores``/``totalCoresUsed``,
``maxTotalRAMSize``/``totalRAMUsed`` in MiB; ``-1`` means unlimited). A create beyond any
of the three is refused with a 403 "Quota exceeded", which costs a round trip and a
back-off; knowing the headroom first lets the planner ask for what fits. This module only
reads the answer (pure, no I/O): fetching it and feeding it to the closed loop belong to
the gateway and the planner (issue 13).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

UNLIMITED = -1
"""Nova's value of a limit that is not enforced."""


@dataclass(frozen=True)
class Headroom:
    """What the project may still use; ``None`` where Nova enforces no limit."""

    instances: int | None
    cores: int | None
    ram_mb: int | None

    def vms_that_fit(self, *, vcpus: int, ram_mb: int) -> int | None:
        """How many more VMs of a flavor with ``vcpus`` and ``ram_mb`` fit (``None``: no
        limit applies). A flavor of 0 vCPUs or 0 MiB is not limited by that resource."""
        bounds = [self.instances]
        if vcpus > 0 and self.cores is not None:
            bounds.append(self.cores // vcpus)
        if ram_mb > 0 and self.ram_mb is not None:
            bounds.append(self.ram_mb // ram_mb)
        known = [b for b in bounds if b is not None]
        return min(known) if known else None


def _left(absolute: Mapping[str, Any], limit: str, used: str) -> int | None:
    maximum = absolute.get(limit)
    if not isinstance(maximum, int) or isinstance(maximum, bool) or maximum == UNLIMITED:
        return None
    in_use = absolute.get(used)
    taken = in_use if isinstance(in_use, int) and not isinstance(in_use, bool) else 0
    return max(0, maximum - taken)


def headroom(limits: Mapping[str, Any]) -> Headroom:
    """Headroom from Nova's ``/limits`` answer (the whole body, or its ``absolute`` part).

    A limit Nova leaves out or marks ``-1`` is unlimited; usage above the limit (a quota
    lowered under running VMs) is no room, never negative.
    """
    body = limits.get("limits", limits)
    absolute = body.get("absolute", body) if isinstance(body, Mapping) else {}
    return Headroom(
        instances=_left(absolute, "maxTotalInstances", "totalInstancesUsed"),
        cores=_left(absolute, "maxTotalCores", "totalCoresUsed"),
        ram_mb=_left(absolute, "maxTotalRAMSize", "totalRAMUsed"),
    )
