"""Pools with DiracX configured, end to end: the real operator against a real kube-apiserver,
moto EC2, and a real DiracX 0.7.0 (PyPI) on 127.0.0.1 (tests/support/diracx_peer.py).

Skipped (with the install command) when the peer's venv is missing; failed under CI=true.
"""

from __future__ import annotations

import uuid
from typing import Any

from cloudpilot import naming
from tests.support.diracx import diracx_peer
from tests.support.diracx_peer import DiracXPeer
from tests.support.kube import wait_for
from tests.support.stack import Stack

__fixtures__ = (diracx_peer,)

FINAL = {"Done", "Failed", "Deleted"}


def _site() -> str:
    """A grid site of this test only: the module's DiracX is shared."""
    return f"CLOUD.t{uuid.uuid4().hex[:8]}.test"


def _dirac(stack: Stack, peer: DiracXPeer, site: str, **extra: Any) -> dict[str, Any]:
    stack.create_secret("diracx-token", {"token": peer.operator_token})
    return {
        "endpoint": peer.url,
        "credentialsSecret": {"name": "diracx-token"},
        "vo": peer.vo,
        "site": site,
        **extra,
    }


def _pilots(peer: DiracXPeer, site: str) -> dict[str, dict[str, Any]]:
    return {p["PilotStamp"]: p for p in peer.pilots() if p["GridSite"] == site}


def test_every_pilot_started_is_registered_and_marked_as_its_vm_ends(
    stack: Stack, diracx_peer: DiracXPeer
) -> None:
    site = _site()
    stack.apply_pool(
        "reg", replicas=3, scaleDownPolicy="DeleteRunning", dirac=_dirac(stack, diracx_peer, site)
    )
    vms = stack.wait_vms("reg", 3)
    stack.wait_status(
        "reg",
        lambda s: (s.get("dirac") or {}).get("registeredPilots") == 3,
        what="status.dirac.registeredPilots == 3",
    )
    pilots = wait_for(
        lambda: (
            (p := _pilots(diracx_peer, site))
            and all(r["Status"] == "Running" for r in p.values())
            and p
        ),
        60,
        message="three Running pilots in DiracX",
    )
    assert set(pilots) == {naming.pilot_stamp(vm.id) for vm in vms}
    for vm in vms:
        record = pilots[naming.pilot_stamp(vm.id)]
        assert record["PilotJobReference"] == f"cloud://{vm.id}"
        assert record["DestinationSite"] == "ce.cloudpilot.test"
        assert record["Queue"] == "default"
        assert record["GridType"] == "Cloud"
        assert record["VO"] == diracx_peer.vo

    # A pilot ends (its VM halts itself): Done in DiracX, and its replacement registered.
    stack.driver().ex_stop_node(vms[0])
    done = naming.pilot_stamp(vms[0].id)
    wait_for(
        lambda: _pilots(diracx_peer, site).get(done, {}).get("Status") == "Done",
        60,
        message="the halted VM's pilot Done in DiracX",
    )
    # Scale down: the destroyed VMs' pilots are marked ended, none left Submitted/Running.
    stack.scale_pool("reg", 1)
    stack.wait_vms("reg", 1)

    def settled() -> dict[str, dict[str, Any]] | None:
        live = {naming.pilot_stamp(vm.id) for vm in stack.live_vms("reg")}
        pilots = _pilots(diracx_peer, site)
        active = {s for s, p in pilots.items() if p["Status"] not in FINAL}
        return pilots if active == live and len(live) == 1 else None

    pilots = wait_for(settled, 60, message="only the live VM's pilot is active in DiracX")
    # Exactly the pilots the pool started: every VM it ever made, nothing else.
    started = {naming.pilot_stamp(vm.id) for vm in stack.vms("reg", include_gone=True)}
    assert set(pilots) == started
    assert pilots[done]["Status"] == "Done"
    assert {p["Status"] for s, p in pilots.items() if s != done} <= {"Running", "Deleted"}


def test_demand_from_submitted_jobs_scales_between_minimum_and_ceiling(
    stack: Stack, diracx_peer: DiracXPeer
) -> None:
    site = _site()
    demand = {
        "minReplicas": 1,
        "sites": [site],
        "maxScaleUpStep": 10,
        "scaleDownDelaySeconds": 0,
        "intervalSeconds": 5,
    }
    stack.apply_pool(
        "demand",
        replicas=4,
        scaleDownPolicy="DeleteRunning",
        dirac=_dirac(stack, diracx_peer, site, registerPilots=False, demand=demand),
    )

    def demand_is(jobs: int, target: int) -> Any:
        def check(status: dict[str, Any]) -> Any:
            read = (status.get("dirac") or {}).get("demand") or {}
            return read.get("waitingJobs") == jobs and read.get("target") == target and status

        return check

    status = stack.wait_status("demand", demand_is(0, 1), what="no jobs: the minimum")
    assert status["desiredReplicas"] == 1 and "readAt" in status["dirac"]["demand"]
    stack.wait_vms("demand", 1)

    # Jobs for another site, and jobs not yet Waiting, are not this pool's demand.
    diracx_peer.submit_jobs(3, site="CLOUD.elsewhere.test")
    received = diracx_peer.submit_jobs(2, site=site)
    waiting = diracx_peer.submit_jobs(2, site=site)
    diracx_peer.set_job_status(waiting, "Waiting")
    stack.wait_status("demand", demand_is(2, 2), what="two waiting jobs: two pilots")
    stack.wait_vms("demand", 2)

    diracx_peer.set_job_status(received, "Waiting")
    more = diracx_peer.submit_jobs(6, site=site)
    diracx_peer.set_job_status(more, "Waiting")
    stack.wait_status("demand", demand_is(10, 4), what="ten waiting jobs: the ceiling, 4")
    stack.wait_vms("demand", 4)

    # The jobs are taken (killed here): demand falls to the minimum, and so does the pool.
    diracx_peer.set_job_status([*waiting, *received, *more], "Killed")
    stack.wait_status("demand", demand_is(0, 1), what="no waiting job: back to the minimum")
    stack.wait_vms("demand", 1)


def test_an_unreachable_diracx_never_stops_vm_management(
    stack: Stack, diracx_peer: DiracXPeer
) -> None:
    site = _site()
    dirac = _dirac(stack, diracx_peer, site)
    dirac["endpoint"] = "http://127.0.0.1:9"  # discard port: connection refused
    stack.apply_pool("outage", replicas=2, dirac=dirac)
    stack.wait_vms("outage", 2)
    status = stack.wait_status(
        "outage",
        lambda s: (s.get("dirac") or {}).get("unregisteredPilots") == 2 and s,
        what="two pilots waiting to be registered",
    )
    assert "127.0.0.1:9" in status["dirac"]["lastError"]
    assert diracx_peer.operator_token not in str(status)
    # DiracX comes back (here: the right endpoint): the same pilots register, no others.
    stack.patch_pool("outage", {"dirac": {"endpoint": diracx_peer.url}})
    stack.wait_status(
        "outage",
        lambda s: (
            (s.get("dirac") or {}).get("registeredPilots") == 2 and "lastError" not in s["dirac"]
        ),
        what="both pilots registered after the outage",
    )
    stamps = {naming.pilot_stamp(vm.id) for vm in stack.live_vms("outage")}
    assert set(_pilots(diracx_peer, site)) == stamps


def _foreign_pilot(peer: DiracXPeer, site: str, vm_id: str, stamp: str, owner: str) -> None:
    """A live pilot on the pool's site, CE and queue that is not the pool's to end."""
    peer.call(
        "POST",
        "/api/pilots/",
        {
            "pilot_stamp": stamp,
            "vo": peer.vo,
            "grid_type": "Cloud",
            "grid_site": site,
            "destination_site": "ce.cloudpilot.test",
            "pilot_reference": f"cloud://{vm_id}",
        },
        peer.operator_token,
    )
    fields = {"Status": "Running", "Queue": "default", "StatusReason": owner}
    peer.call("PATCH", "/api/pilots/metadata", {stamp: fields}, peer.operator_token)


def test_a_vm_that_vanished_while_no_operator_ran_has_its_pilot_ended(
    stack_without_operator: Stack, diracx_peer: DiracXPeer
) -> None:
    stack, site = stack_without_operator, _site()
    stack.start_operator(dirac_vanished_grace=1.0)
    stack.apply_pool("gone", replicas=3, dirac=_dirac(stack, diracx_peer, site))
    vms = stack.wait_vms("gone", 3)
    owner = f"CloudPilotPool {stack.namespace}/gone"
    before = wait_for(
        lambda: (
            (p := _pilots(diracx_peer, site))
            and len(p) == 3
            and all(r["Status"] == "Running" and r["StatusReason"] == owner for r in p.values())
            and p
        ),
        60,
        message="three Running pilots marked as the pool's in DiracX",
    )
    # Pilots on the same site, CE and queue that are not this pool's, their VMs gone too:
    # another pool's (two pools without queues share "default"), and a SiteDirector's
    # (DIRAC's Cloud CE: cloud:// references, 8-hex stamps, no CloudPilot mark).
    _foreign_pilot(
        diracx_peer,
        site,
        "i-0123456789abcdef0",
        naming.pilot_stamp("i-0123456789abcdef0"),
        f"CloudPilotPool {stack.namespace}/other",
    )
    _foreign_pilot(diracx_peer, site, "i-0fedcba987654321f", "0a1b2c3d", "Unknown")

    # The operator is down (or only a standby runs) while a VM goes.
    stack.stop_operator()
    lost = vms[0]
    stack.driver().destroy_node(lost)
    stack.wait_vms("gone", 2)
    stack.start_operator(dirac_vanished_grace=1.0)

    ended = naming.pilot_stamp(lost.id)
    wait_for(
        lambda: _pilots(diracx_peer, site)[ended]["Status"] == "Deleted",
        60,
        message="the vanished VM's pilot Deleted in DiracX",
    )
    after = _pilots(diracx_peer, site)
    for vm in vms[1:]:
        stamp = naming.pilot_stamp(vm.id)
        # Still alive, and the same record: 409 on the new registration, not a second one.
        assert after[stamp]["Status"] == "Running"
        assert after[stamp]["PilotID"] == before[stamp]["PilotID"]
    assert after[naming.pilot_stamp("i-0123456789abcdef0")]["Status"] == "Running"
    assert after["0a1b2c3d"]["Status"] == "Running"
    stamps = [p["PilotStamp"] for p in diracx_peer.pilots() if p["GridSite"] == site]
    assert len(stamps) == len(set(stamps))
