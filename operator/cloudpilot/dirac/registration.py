"""Which pilots to register in DiracX and which statuses to send: pure functions.

Every VM the operator starts is a DIRAC pilot: registered once (``POST /api/pilots/``)
with the stamp the VM itself derives from its instance id (:func:`cloudpilot.naming.
pilot_stamp`), the reference ``cloud://<id>``, the grid site, the CE as destination and
the queue. Its DiracX status then follows the VM's phase, and a pilot whose VM is gone is
marked ended: never left ``Submitted`` forever.

Idempotence: the stamp is a function of the instance id, so a registration repeated after
a crash or a lost answer meets 409 Conflict, which counts as registered. Back-off: each
pilot that failed to register or update waits ``backoff(failures)`` before it is tried
again; the others go on.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from cloudpilot import constants
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.naming import pilot_reference, pilot_stamp


class PilotStatus(StrEnum):
    """DiracX's pilot statuses (diracx.core.models.pilot.PilotStatus) that CloudPilot sends."""

    SUBMITTED = "Submitted"
    RUNNING = "Running"
    DONE = "Done"
    FAILED = "Failed"
    DELETED = "Deleted"
    UNKNOWN = "Unknown"


FINAL = frozenset({PilotStatus.DONE, PilotStatus.FAILED, PilotStatus.DELETED})

_BY_PHASE = {
    Phase.STARTING: PilotStatus.SUBMITTED,
    Phase.RUNNING: PilotStatus.RUNNING,
    Phase.DONE: PilotStatus.DONE,
    Phase.FAILED: PilotStatus.FAILED,
    Phase.UNKNOWN: PilotStatus.UNKNOWN,
}


def status_for(phase: Phase) -> PilotStatus:
    return _BY_PHASE[phase]


@dataclass(frozen=True)
class Pilot:
    """One pilot as DiracX has been told about it (or is yet to be)."""

    vm_id: str
    queue: str
    registered: bool = False
    reported: PilotStatus | None = None
    """The status DiracX holds; the initial ``Submitted`` once registered."""
    wanted: PilotStatus = PilotStatus.SUBMITTED
    """The status the pilot should have now."""
    failures: int = 0
    retry_at: datetime | None = None
    unseen_since: datetime | None = None
    """When a settled pilot's VM was first missing from a listing: it is remembered until
    ``ENDED_MEMORY`` later, so that a lagging listing that shows the VM again finds it
    ended instead of a new pilot to register (and to set ``Running`` again)."""

    @property
    def stamp(self) -> str:
        return pilot_stamp(self.vm_id)

    @property
    def reference(self) -> str:
        return pilot_reference(self.vm_id)

    @property
    def settled(self) -> bool:
        """Registered, DiracX up to date, and nothing more will ever change."""
        return self.registered and self.reported == self.wanted and self.wanted in FINAL


@dataclass(frozen=True)
class SyncPlan:
    register: tuple[Pilot, ...] = ()
    update: tuple[Pilot, ...] = ()


ENDED_MEMORY = timedelta(seconds=constants.DELETING_TTL)
"""How long a settled pilot is remembered after its VM left the listings: as long as the
operator expects a destroyed VM to be listed again now and then (EC2 lists one for a minute
or more, an eventually consistent listing may show it once more)."""


def observe(
    known: Mapping[str, Pilot],
    vms: Iterable[ObservedVM],
    unlisted_queues: Collection[str] = frozenset(),
    *,
    now: datetime,
    forget_after: timedelta = ENDED_MEMORY,
) -> dict[str, Pilot]:
    """Pilots after a cycle's listing (``vms``: listed and pending VMs of the pool).

    A VM seen for the first time becomes a pilot to register; a known one wants the status
    of its phase (a final status is never taken back); a known pilot whose VM is no longer
    listed ended: ``Deleted`` (the operator or the cloud removed it) unless it had already
    ended ``Done`` or ``Failed``. Settled pilots whose VM is gone are dropped
    ``forget_after`` it was last listed: until then a listing that lags and shows the VM
    again meets its ended pilot, not a new one registered (409) and set to the VM's phase.

    ``unlisted_queues``: queues whose cloud account could not be listed this cycle. Their
    VMs are missing from ``vms`` because nobody looked, not because they are gone: their
    pilots are kept as they were. (A cloud API blip would otherwise end every running
    pilot of the pool in DiracX, a final status that is never taken back.)
    """
    seen: dict[str, Pilot] = {}
    for vm in vms:
        pilot = known.get(vm.id) or Pilot(vm_id=vm.id, queue=vm.queue)
        wanted = pilot.wanted if pilot.wanted in FINAL else status_for(vm.phase)
        seen[vm.id] = replace(pilot, wanted=wanted, unseen_since=None)
    for vm_id, pilot in known.items():
        if vm_id in seen:
            continue
        if pilot.queue in unlisted_queues:
            seen[vm_id] = pilot
            continue
        if pilot.settled:
            since = pilot.unseen_since or now
            if now - since < forget_after:
                seen[vm_id] = replace(pilot, unseen_since=since)
            continue
        if not pilot.registered:
            # Never registered and already gone: nothing in DiracX to end. It was
            # registered if it lived a cycle with DiracX reachable; otherwise it is lost
            # to DIRAC's accounting, as a SiteDirector's failed submission is.
            continue
        wanted = pilot.wanted if pilot.wanted in FINAL else PilotStatus.DELETED
        seen[vm_id] = replace(pilot, wanted=wanted)
    return seen


def plan(pilots: Mapping[str, Pilot], now: datetime, max_registrations: int) -> SyncPlan:
    """What to send now: registrations (bounded per cycle), then status updates; pilots
    in back-off wait."""

    def ready(p: Pilot) -> bool:
        return p.retry_at is None or p.retry_at <= now

    register = tuple(p for p in pilots.values() if not p.registered and ready(p))
    update = tuple(
        p for p in pilots.values() if p.registered and p.reported != p.wanted and ready(p)
    )
    return SyncPlan(register=register[:max_registrations], update=update)


def backoff(failures: int, initial: float = 5.0, maximum: float = 300.0) -> timedelta:
    """Seconds before a pilot's next attempt after ``failures`` failed ones."""
    return timedelta(seconds=min(maximum, initial * 2 ** max(failures - 1, 0)))


def registered(pilot: Pilot) -> Pilot:
    """DiracX holds the pilot (created now, or 409: created before)."""
    return replace(
        pilot, registered=True, reported=PilotStatus.SUBMITTED, failures=0, retry_at=None
    )


def reported(pilot: Pilot) -> Pilot:
    return replace(pilot, reported=pilot.wanted, failures=0, retry_at=None)


def failed(pilot: Pilot, now: datetime) -> Pilot:
    failures = pilot.failures + 1
    return replace(pilot, failures=failures, retry_at=now + backoff(failures))
