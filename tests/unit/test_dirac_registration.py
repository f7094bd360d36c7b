"""cloudpilot.dirac.registration: which pilots DiracX must hear of, and with what status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cloudpilot.dirac import registration as reg
from cloudpilot.models.vms import ObservedVM, Phase
from cloudpilot.naming import pilot_stamp

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def vm(vm_id: str, phase: Phase = Phase.STARTING) -> ObservedVM:
    return ObservedVM(id=vm_id, name=f"n-{vm_id}", queue="q", phase=phase, created_at=T0)


def test_a_new_vm_is_a_pilot_to_register_with_its_stamp_and_reference() -> None:
    pilots = reg.observe({}, [vm("i-1")], now=T0)
    sync = reg.plan(pilots, T0, 10)
    (pilot,) = sync.register
    assert pilot.stamp == pilot_stamp("i-1") and pilot.reference == "cloud://i-1"
    assert sync.update == ()


def test_registrations_per_cycle_are_bounded() -> None:
    pilots = reg.observe({}, [vm(f"i-{n}") for n in range(50)], now=T0)
    assert len(reg.plan(pilots, T0, 20).register) == 20


def test_status_follows_the_phase_after_registration() -> None:
    pilots = reg.observe({}, [vm("i-1")], now=T0)
    pilots = {k: reg.registered(p) for k, p in pilots.items()}
    assert reg.plan(pilots, T0, 10) == reg.SyncPlan()  # Submitted is what DiracX holds
    pilots = reg.observe(pilots, [vm("i-1", Phase.RUNNING)], now=T0)
    (update,) = reg.plan(pilots, T0, 10).update
    assert update.wanted is reg.PilotStatus.RUNNING


def test_a_vanished_pilot_is_marked_deleted_and_then_forgotten() -> None:
    pilots = {
        "i-1": reg.reported(reg.registered(reg.Pilot("i-1", "q", wanted=reg.PilotStatus.RUNNING)))
    }
    pilots = reg.observe(pilots, [], now=T0)
    assert pilots["i-1"].wanted is reg.PilotStatus.DELETED
    pilots = {k: reg.reported(p) for k, p in pilots.items()}
    remembered = reg.observe(pilots, [], now=T0)
    assert remembered["i-1"].settled and reg.plan(remembered, T0, 10) == reg.SyncPlan()
    later = T0 + reg.ENDED_MEMORY
    assert reg.observe(remembered, [], now=later - timedelta(seconds=1)) != {}
    assert reg.observe(remembered, [], now=later) == {}


def test_a_final_status_is_never_taken_back() -> None:
    done = reg.registered(reg.Pilot("i-1", "q"))
    pilots = reg.observe({"i-1": done}, [vm("i-1", Phase.DONE)], now=T0)
    assert pilots["i-1"].wanted is reg.PilotStatus.DONE
    pilots = {k: reg.reported(p) for k, p in pilots.items()}
    # The stopped VM is destroyed: still Done, not Deleted; settled, so forgotten in time.
    unknown = reg.observe(pilots, [vm("i-1", Phase.UNKNOWN)], now=T0)
    assert unknown["i-1"].wanted is reg.PilotStatus.DONE
    gone = reg.observe(pilots, [], now=T0)
    assert gone["i-1"].wanted is reg.PilotStatus.DONE
    assert reg.observe(gone, [], now=T0 + reg.ENDED_MEMORY) == {}


def test_an_ended_pilot_is_not_registered_again_when_a_lagging_listing_shows_its_vm() -> None:
    running = reg.Pilot("i-1", "q", wanted=reg.PilotStatus.RUNNING)
    pilots = {"i-1": reg.reported(reg.registered(running))}
    pilots = {k: reg.reported(p) for k, p in reg.observe(pilots, [], now=T0).items()}
    assert pilots["i-1"].settled  # Deleted, and DiracX was told
    # The VM shows up once more (a lagging listing), then goes again, minutes later.
    for minutes in (1, 2, 10):
        moment = T0 + timedelta(minutes=minutes)
        shown = reg.observe(pilots, [vm("i-1", Phase.RUNNING)], now=moment)
        assert shown["i-1"].wanted is reg.PilotStatus.DELETED
        assert reg.plan(shown, moment, 10) == reg.SyncPlan()  # no registration, no Running
        pilots = reg.observe(shown, [], now=moment)
    # Remembered for ENDED_MEMORY after the last listing that showed it.
    last_seen = T0 + timedelta(minutes=10)
    assert reg.observe(pilots, [], now=last_seen + reg.ENDED_MEMORY - timedelta(seconds=1))
    assert reg.observe(pilots, [], now=last_seen + reg.ENDED_MEMORY) == {}


def test_a_listed_settled_pilot_is_kept_so_it_is_not_registered_again() -> None:
    pilots = {
        "i-1": reg.reported(reg.registered(reg.Pilot("i-1", "q", wanted=reg.PilotStatus.DONE)))
    }
    pilots = reg.observe(pilots, [vm("i-1", Phase.DONE)], now=T0)
    assert reg.plan(pilots, T0, 10) == reg.SyncPlan()


def test_a_pilot_never_registered_and_gone_is_dropped() -> None:
    assert reg.observe({"i-1": reg.Pilot("i-1", "q")}, [], now=T0) == {}


def test_failures_back_off_per_pilot() -> None:
    pilot = reg.failed(reg.Pilot("i-1", "q"), T0)
    assert pilot.retry_at == T0 + timedelta(seconds=5)
    assert reg.plan({"i-1": pilot}, T0 + timedelta(seconds=4), 10).register == ()
    assert reg.plan({"i-1": pilot}, T0 + timedelta(seconds=5), 10).register == (pilot,)
    assert reg.failed(pilot, T0).retry_at == T0 + timedelta(seconds=10)
    assert reg.backoff(20) == timedelta(seconds=300)


def test_every_phase_has_a_dirac_status() -> None:
    assert {reg.status_for(p) for p in Phase} <= set(reg.PilotStatus)


def test_a_pilot_whose_queue_could_not_be_listed_is_not_taken_for_ended() -> None:
    # A cloud API blip hides the VMs of the queues on that account: they are not gone.
    known = {
        k: reg.reported(reg.registered(p)) for k, p in reg.observe({}, [vm("i-1")], now=T0).items()
    }
    known = {
        k: replace(p, wanted=reg.PilotStatus.RUNNING, reported=reg.PilotStatus.RUNNING)
        for k, p in known.items()
    }
    kept = reg.observe(known, [], unlisted_queues={"q"}, now=T0)
    assert kept == known
    assert reg.plan(kept, T0, 10) == reg.SyncPlan()
    # Listed again and gone: now it ended.
    gone = reg.observe(kept, [], now=T0)
    assert gone["i-1"].wanted is reg.PilotStatus.DELETED
