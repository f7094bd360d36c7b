"""An account's limit for CloudPilot from Nova's ``/limits``, for the queues' flavors.

The gateway reads Nova's absolute limits beside each listing of an OpenStack account
(:attr:`cloudpilot.cloud.gateway.CloudGateway.nova_headroom`); this turns that reading into
the limit the closed loop plans with, so an OpenStack account's quota is known before a
create is refused instead of learned from the refusal. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudpilot import capacity
from cloudpilot.cloud import nova_limits


@dataclass(frozen=True)
class Flavor:
    """What one VM of a queue's flavor uses; 0 where unknown (a raw flavor id not looked
    up): then only Nova's instance count bounds it, which is still an upper bound."""

    vcpus: int = 0
    ram_mb: int = 0


@dataclass(frozen=True)
class NovaReading:
    """One account's ``/limits`` as read this listing, and the flavors its queues use."""

    headroom: nova_limits.Headroom
    flavors: tuple[Flavor, ...]


def account_limit(
    reading: NovaReading, *, ours_live: int, now: datetime
) -> capacity.Headroom | None:
    """The most CloudPilot VMs the account allows now (None: no Nova limit applies).

    Queues of different flavors on one account: the smallest of their limits, so that no
    queue is planned beyond what fits (a wider flavor fits fewer times).
    """
    limits = [
        found
        for flavor in reading.flavors or (Flavor(),)
        if (
            found := capacity.from_nova(
                reading.headroom,
                ours_live=ours_live,
                vcpus=flavor.vcpus,
                ram_mb=flavor.ram_mb,
                now=now,
            )
        )
        is not None
    ]
    return min(limits, key=lambda h: h.limit) if limits else None
