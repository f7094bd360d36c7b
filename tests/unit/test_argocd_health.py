"""The Argo CD health check (docs/argocd-health.lua), run under a real Lua runtime (lupa).

Argo CD runs a resource's health script with the live object as the global ``obj`` (the
object's JSON as nested Lua tables, arrays 1-based, every number a float, as gopher-lua
decodes JSON) in a Lua 5.1 VM without ``os``, ``io`` or module loading, and reads the
``{status=..., message=...}`` table it returns. This test does the same under Lua 5.1, and
again under Lua 5.4 with integers, and requires the same answer; conditions are built by
CloudPilot's own ``status.merge_conditions`` so that the field names the script reads are
the ones the operator writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua51
import lupa.lua54
import pytest

from cloudpilot.status import Condition, merge_conditions

SCRIPT = (Path(__file__).resolve().parents[2] / "docs" / "argocd-health.lua").read_text()
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def to_lua(lua: Any, value: Any, *, floats: bool) -> Any:
    """Python JSON → Lua tables, as Argo CD's JSON-to-Lua conversion makes them."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v, floats=floats) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v, floats=floats) for v in value])
    if floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def health(obj: dict[str, Any]) -> dict[str, str]:
    """The script's verdict under Argo CD's Lua 5.1 (floats) and Lua 5.4 (integers)."""
    argo = run_script(lupa.lua51.LuaRuntime(unpack_returned_tuples=True), obj, floats=True)
    modern = run_script(lupa.lua54.LuaRuntime(unpack_returned_tuples=True), obj, floats=False)
    assert argo == modern
    return argo


def run_script(lua: Any, obj: dict[str, Any], *, floats: bool) -> dict[str, str]:
    sandbox = lua.globals()
    for unsafe in ("os", "io", "require", "dofile", "loadfile", "load", "package", "debug"):
        sandbox[unsafe] = None  # Argo CD's VM offers none of these either
    sandbox.obj = to_lua(lua, obj, floats=floats)
    result = lua.execute(SCRIPT)
    assert result is not None, "the script must return a table"
    out = dict(result.items())
    assert set(out) <= {"status", "message"}
    assert out["status"] in ARGO_STATUSES
    assert isinstance(out.get("message"), str) and out["message"]
    return out


def pool(
    *conditions: Condition, generation: int = 3, observed: int | None = 3, **status: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "cloudpilot.io/v1alpha1",
        "kind": "CloudPilotPool",
        "metadata": {"name": "lhcb", "namespace": "grid", "generation": generation},
        "spec": {"ce": "cloud.example.org", "replicas": 4},
    }
    if observed is not None or conditions or status:
        body["status"] = {
            **({"observedGeneration": observed} if observed is not None else {}),
            "replicas": 4,
            "conditions": merge_conditions(
                None, list(conditions), generation=observed or 0, now=NOW
            ),
            **status,
        }
    return body


READY = Condition("Ready", "True", "PilotsProvisioned", "4 of 4 desired VMs exist")
SCALING = Condition("Reconciling", "True", "ScalingUp", "3 VM(s) still to create")
NOT_READY_SCALING = Condition("Ready", "False", "ScalingUp", "3 VM(s) still to create")
STALLED = Condition("Stalled", "True", "BadCredentials", "the cloud rejected the credentials")
NOT_READY_STALLED = Condition(
    "Ready", "False", "BadCredentials", "the cloud rejected the credentials"
)


def test_healthy_when_ready() -> None:
    assert health(pool(READY)) == {
        "status": "Healthy",
        "message": "PilotsProvisioned: 4 of 4 desired VMs exist",
    }


def test_progressing_while_reconciling() -> None:
    assert health(pool(NOT_READY_SCALING, SCALING)) == {
        "status": "Progressing",
        "message": "ScalingUp: 3 VM(s) still to create",
    }


def test_degraded_when_stalled() -> None:
    assert health(pool(NOT_READY_STALLED, STALLED)) == {
        "status": "Degraded",
        "message": "BadCredentials: the cloud rejected the credentials",
    }


def test_stalled_wins_over_reconciling() -> None:
    both = pool(NOT_READY_STALLED, SCALING, STALLED)
    assert health(both)["status"] == "Degraded"


def test_no_status_yet_is_progressing() -> None:
    assert health(pool(observed=None)) == {
        "status": "Progressing",
        "message": "Waiting for the operator to report status",
    }


@pytest.mark.parametrize("observed", [2, None])
def test_a_spec_the_operator_has_not_seen_is_progressing(observed: int | None) -> None:
    """Even with a Ready=True left from the previous generation (kstatus' rule)."""
    stale = pool(READY, generation=3, observed=observed, running=4)
    assert health(stale) == {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 3",
    }


def test_ready_false_without_reconciling_or_stalled_is_progressing() -> None:
    odd = pool(Condition("Ready", "False", "Unknown", "starting up"))
    assert health(odd) == {"status": "Progressing", "message": "Unknown: starting up"}


def test_no_conditions_is_progressing() -> None:
    assert health(pool()) == {
        "status": "Progressing",
        "message": "Waiting for the Ready condition",
    }


def test_false_reconciling_and_stalled_are_ignored() -> None:
    """kstatus says they are absent when false, but a stale False must not confuse it."""
    tolerant = pool(
        READY,
        Condition("Reconciling", "False", "Done", "nothing to do"),
        Condition("Stalled", "False", "Fine", "ok"),
    )
    assert health(tolerant)["status"] == "Healthy"


def test_a_pool_being_deleted_is_progressing() -> None:
    deleting = pool(READY)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-21T12:00:00Z"
    assert health(deleting)["status"] == "Progressing"


def test_a_condition_without_message_or_reason_still_explains() -> None:
    bare = pool()
    bare["status"]["conditions"] = [{"type": "Stalled", "status": "True"}]
    assert health(bare) == {"status": "Degraded", "message": "Stalled"}


def test_a_pool_without_generation_uses_observed_generation_only() -> None:
    body = pool(READY)
    del body["metadata"]["generation"]
    assert health(body)["status"] == "Healthy"


def test_the_real_status_builder_output_is_read_correctly() -> None:
    """Conditions exactly as cloudpilot.status.conditions_for returns them."""
    from cloudpilot.memory import PoolMemory
    from cloudpilot.planner import Plan, QueueSummary
    from cloudpilot.status import StatusInputs, conditions_for

    plan = Plan(queues=(QueueSummary(name="default", desired=2, running=2),))
    inputs = StatusInputs(generation=5, plan=plan, observed=[], memory=PoolMemory(), now=NOW)
    conditions = conditions_for(inputs)
    body = pool(*conditions, generation=5, observed=5)
    assert health(body)["status"] == "Healthy"


EXPIRING = Condition(
    "ProxyExpiring",
    "True",
    "ProxyExpiring",
    "the pilot proxy of /DC=ch/CN=pilot expires at 2026-11-21T16:00:00Z, within the 6h "
    "warning margin: renew it",
)


def test_an_expiring_proxy_is_degraded_although_the_pool_is_ready() -> None:
    """Only a human renewing the proxy's Secret helps, before a deadline: Degraded is what
    Argo CD notifies on (Progressing would claim it resolves itself)."""
    assert health(pool(READY, EXPIRING)) == {
        "status": "Degraded",
        "message": f"ProxyExpiring: {EXPIRING.message}",
    }
    assert health(pool(NOT_READY_SCALING, SCALING, EXPIRING))["status"] == "Degraded"
    # Stalled (the proxy expired: ProxyExpired) keeps its own, more urgent, message.
    assert health(pool(NOT_READY_STALLED, STALLED, EXPIRING))["message"].startswith(
        "BadCredentials"
    )


def test_a_proxy_that_is_not_expiring_leaves_the_pool_healthy() -> None:
    fine = Condition("ProxyExpiring", "False", "ProxyValid", "the pilot proxy expires at 2027")
    assert health(pool(READY, fine))["status"] == "Healthy"
