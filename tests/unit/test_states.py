"""libcloud node states -> pilot phases.

DIRAC read every state but STOPPED as Running, so broken VMs were counted as pilots forever.
Each libcloud state must map to the phase that makes the planner do the right thing: stopped
means the pilot finished (delete and replace), error means broken (delete), gone means gone.
"""

from __future__ import annotations

import pytest
from libcloud.compute.types import NodeState

from cloudpilot.cloud.states import GONE, phase_of
from cloudpilot.models.vms import LIVE_PHASES, Phase

EXPECTED = {
    NodeState.PENDING: Phase.STARTING,
    NodeState.STARTING: Phase.STARTING,
    NodeState.REBOOTING: Phase.STARTING,
    NodeState.RUNNING: Phase.RUNNING,
    NodeState.RECONFIGURING: Phase.RUNNING,
    NodeState.MIGRATING: Phase.RUNNING,
    NodeState.UPDATING: Phase.RUNNING,
    NodeState.NORMAL: Phase.RUNNING,
    NodeState.STOPPING: Phase.DONE,
    NodeState.STOPPED: Phase.DONE,
    NodeState.ERROR: Phase.FAILED,
    NodeState.SUSPENDED: Phase.UNKNOWN,
    NodeState.PAUSED: Phase.UNKNOWN,
    NodeState.UNKNOWN: Phase.UNKNOWN,
    NodeState.TERMINATED: None,
}


def test_every_libcloud_state_has_a_decided_phase() -> None:
    """A state added to libcloud must be placed on purpose, not fall into Unknown silently."""
    assert set(EXPECTED) == set(NodeState)


@pytest.mark.parametrize(("state", "phase"), EXPECTED.items(), ids=lambda s: str(s))
def test_node_state_maps_to_phase(state: NodeState, phase: Phase | None) -> None:
    assert phase_of(state) is phase


@pytest.mark.parametrize(("state", "phase"), EXPECTED.items(), ids=lambda s: str(s))
def test_state_string_maps_like_the_enum(state: NodeState, phase: Phase | None) -> None:
    """The gateway hands states over as strings (``ListedNode.state``)."""
    assert phase_of(state.value) is phase
    assert phase_of(state.value.upper()) is phase


def test_stopped_vm_is_a_finished_pilot_not_a_running_one() -> None:
    """The template powers the VM off when the pilot ends (DIRAC counted it as Running)."""
    assert phase_of("stopped") is Phase.DONE


def test_error_vm_is_failed_not_running() -> None:
    assert phase_of("error") is Phase.FAILED


@pytest.mark.parametrize("state", ["terminated", "deleted", "TERMINATED"])
def test_gone_vms_drop_out_of_the_books(state: str) -> None:
    """EC2 lists terminated instances for an hour; they are neither pilots nor to delete."""
    assert phase_of(state) is None
    assert state.lower() in GONE


@pytest.mark.parametrize("state", ["hibernating", "", "shelved_offloaded", None])
def test_unrecognised_state_is_unknown(state: object) -> None:
    """Unknown occupies a slot and is never a scale-down victim: the safe reading."""
    assert phase_of(state) is Phase.UNKNOWN


def test_live_phases_are_starting_and_running() -> None:
    """``status.replicas`` (the scale subresource) counts exactly these."""
    assert frozenset({Phase.STARTING, Phase.RUNNING}) == LIVE_PHASES


def test_phase_values_are_the_fixed_api_names() -> None:
    assert [p.value for p in Phase] == ["Starting", "Running", "Done", "Failed", "Unknown"]
