"""What the operator keeps of each pool, and what a watch event means for its schedule."""

from __future__ import annotations

import copy
from typing import Any

from cloudpilot.pool_bodies import Change, PoolBodies, merge_patch


def _pool(generation: int = 1, **extra_meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cloudpilot.io/v1alpha1",
        "kind": "CloudPilotPool",
        "metadata": {
            "name": "lhcb",
            "namespace": "grid",
            "uid": "u-1",
            "generation": generation,
            "resourceVersion": "7",
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}" * 500},
            **extra_meta,
        },
        "spec": {"ce": {"host": "ce.example.org"}, "queues": [{"name": "q", "instances": 2}]},
        "status": {"observedGeneration": 1, "running": 1},
    }


def test_the_slim_body_keeps_what_a_reconcile_reads_and_drops_the_bulk() -> None:
    raw = _pool()
    bodies = PoolBodies()
    bodies.observe("ADDED", raw)
    body = bodies.get("u-1")
    assert body is not None

    assert body["spec"] == raw["spec"] and body["status"] == raw["status"]
    assert body["metadata"] == {
        "name": "lhcb",
        "namespace": "grid",
        "uid": "u-1",
        "generation": 1,
        "resourceVersion": "7",
    }
    assert body["apiVersion"] == raw["apiVersion"] and body["kind"] == raw["kind"]
    raw["spec"]["queues"][0]["instances"] = 99  # nothing shared with kopf's copy
    assert body["spec"]["queues"][0]["instances"] == 2


def test_events_say_whether_the_pool_must_be_reconciled_now() -> None:
    bodies = PoolBodies()

    assert bodies.observe(None, _pool()) is Change.NEW  # start-up listing
    assert bodies.observe("MODIFIED", _pool()) is Change.OTHER  # e.g. our own status write
    assert bodies.observe("MODIFIED", _pool(generation=2)) is Change.SPEC_CHANGED
    deleting = _pool(generation=3, deletionTimestamp="2026-11-21T10:00:00Z")
    assert bodies.observe("MODIFIED", deleting) is Change.DELETING
    assert bodies.observe("DELETED", deleting) is Change.GONE
    assert bodies.get("u-1") is None and len(bodies) == 0


def test_a_pool_first_seen_while_being_deleted_is_not_scheduled() -> None:
    bodies = PoolBodies()
    change = bodies.observe(None, _pool(deletionTimestamp="2026-11-21T10:00:00Z"))
    assert change is Change.DELETING


def test_bodies_are_updated_in_place_so_a_waiting_reconcile_sees_the_deletion() -> None:
    bodies = PoolBodies()
    bodies.observe("ADDED", _pool())
    held = bodies.get("u-1")  # what a reconcile waiting for the pool's lock holds
    assert held is not None

    bodies.observe("MODIFIED", _pool(deletionTimestamp="2026-11-21T10:00:00Z"))

    assert held["metadata"]["deletionTimestamp"] == "2026-11-21T10:00:00Z"


def test_a_written_status_is_what_the_next_reconcile_compares_against() -> None:
    bodies = PoolBodies()
    bodies.observe("ADDED", _pool())

    bodies.record_status("u-1", {"running": 3, "lastError": None, "queues": {"q": {"up": 1}}})
    bodies.record_status("unknown", {"running": 1})  # a pool deleted meanwhile: ignored

    body = bodies.get("u-1")
    assert body is not None
    assert body["status"] == {"observedGeneration": 1, "running": 3, "queues": {"q": {"up": 1}}}


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    patch = {"a": None, "b": {"c": None, "f": 4}, "e": [3], "g": {"h": None}}
    original = copy.deepcopy(patch)

    merge_patch(target, patch)

    assert target == {"b": {"d": 3, "f": 4}, "e": [3], "g": {}}
    assert patch == original


def test_a_new_generation_brings_the_new_spec_and_any_event_the_new_status() -> None:
    bodies = PoolBodies()
    bodies.observe("ADDED", _pool())
    echo = _pool()
    echo["status"] = {"observedGeneration": 1, "running": 2}
    bodies.observe("MODIFIED", echo)
    scaled = _pool(generation=2)
    scaled["spec"]["queues"][0]["instances"] = 5

    assert bodies.get("u-1")["status"]["running"] == 2  # type: ignore[index]
    assert bodies.observe("MODIFIED", scaled) is Change.SPEC_CHANGED
    assert bodies.get("u-1")["spec"]["queues"][0]["instances"] == 5  # type: ignore[index]
