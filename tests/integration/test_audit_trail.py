"""The audit trail on the real API server: a created VM is one structured INFO line, and a
repeated Event is one Event object whose count grows (as ``kubectl get events`` shows it)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudpilot import audit
from cloudpilot.kube import client
from cloudpilot.kube.events import EventRecorder, build_event
from tests.support.kube import wait_for
from tests.support.official_client import operator_client_for
from tests.support.stack import Stack


def _post(stack: Stack, recorder: EventRecorder, events: list[dict[str, Any]]) -> None:
    """Post ``events`` in turn through the operator's own client, as a reconcile does."""

    async def post() -> None:
        async with operator_client_for(stack.kubeconfig) as kube:
            with client.using(kube):
                for event in events:
                    await recorder.post(stack.namespace, event)

    asyncio.run(post())


def test_a_created_vm_is_one_info_audit_record_with_the_pool_fields(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudpilot.audit")
    stack.apply_pool("audited", replicas=1)
    [vm] = stack.wait_vms("audited", 1)

    def created() -> list[logging.LogRecord] | None:
        found = [
            r
            for r in caplog.records
            if r.name == "cloudpilot.audit" and getattr(r, "reason", None) == "Created"
        ]
        return found or None

    records = wait_for(created, timeout=30, message="the Created audit record")
    [record] = records
    assert record.levelno == logging.INFO
    assert {k: getattr(record, k) for k in audit.FIELDS} == {
        "namespace": stack.namespace,
        "pool": "audited",
        "queue": "default",
        "vm_ids": [vm.id],
        "reason": "Created",
        "event_type": "Normal",
    }
    planned = [r for r in caplog.records if getattr(r, "reason", None) == "ScaleUpPlanned"]
    assert [(r.pool, r.queue) for r in planned] == [("audited", "default")]  # type: ignore[attr-defined]


def test_a_repeated_event_is_one_event_object_with_a_count(
    stack_without_operator: Stack,
) -> None:
    stack = stack_without_operator
    pool = stack.apply_pool("repeated", replicas=0)
    recorder = EventRecorder()  # its own cache: what the operator's does across cycles
    start = datetime.now(UTC).replace(microsecond=0)
    events = [
        build_event(
            pool,
            "Warning",
            "QuotaExceeded",
            "queue default: quota",
            start + timedelta(seconds=second),
        )
        for second in range(3)
    ]
    _post(stack, recorder, events)

    ours = [e for e in stack.events() if e.reason == "QuotaExceeded"]
    assert len(ours) == 1, [(e.metadata.name, e.count) for e in ours]
    assert ours[0].count == 3
    assert ours[0].last_timestamp - ours[0].first_timestamp == timedelta(seconds=2)

    # Expired (or deleted) on the server: the next repeat is a new Event, not an error.
    stack.core.delete_namespaced_event(ours[0].metadata.name, stack.namespace)
    _post(stack, recorder, events[-1:])
    again = [e for e in stack.events() if e.reason == "QuotaExceeded"]
    assert [e.count for e in again] == [1]
