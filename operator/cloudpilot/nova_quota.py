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

NOVA_SOURCE = "nova-limits"
"""The ``source`` of a limit read from Nova (:func:`cloudpilot.capacity.from_nova`)."""


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


def merged(
    current: capacity.Headroom | None, read: capacity.Headroom | None, now: datetime
) -> capacity.Headroom | None:
    """The account's limit once Nova's reading ``read`` is in.

    Nova's number is an upper bound (a raw-id flavor is bounded by the instance count
    only), a refusal is the cloud's own word: a lower limit learned from a refusal or a
    partial create is kept while it is fresh, else the next reading would send the same
    refused create every cycle. It goes stale as on EC2 (then the whole demand is tried
    once more). Otherwise the reading wins, and no reading drops a limit read before.
    """
    learned = current is not None and current.source != NOVA_SOURCE
    if learned and capacity.effective_limit(current, now) is not None:
        assert current is not None
        if read is None or current.limit < read.limit:
            return current
    if read is None:
        return current if learned else None
    return read
