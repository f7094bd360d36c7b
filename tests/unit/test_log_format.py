"""The operator's log lines as a log collector reads them (``--log-format json``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from cloudpilot import audit, redaction
from cloudpilot.runtime import JsonFormatter, configure_logging


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "cloudpilot.audit", "levelno": logging.INFO, "levelname": "INFO"}
    )
    record.msg, record.args = "created %s", ("i-1",)
    record.created = datetime(2026, 11, 21, 12, 0, 5, 250000, tzinfo=UTC).timestamp()
    record.__dict__.update(extra)
    return record


def test_time_is_iso_8601_utc_with_a_z_zone() -> None:
    entry = json.loads(JsonFormatter().format(_record()))

    assert entry["time"] == "2026-11-21T12:00:05.250Z"
    assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "INFO",
        "cloudpilot.audit",
        "created i-1",
    )


def test_extra_fields_are_json_keys_and_standard_attributes_are_not() -> None:
    entry = json.loads(
        JsonFormatter().format(
            _record(namespace="grid", pool="lhcb", queue="q1", vm_ids=["i-1"], reason="Created")
        )
    )

    assert {k: entry[k] for k in ("namespace", "pool", "queue", "vm_ids", "reason")} == {
        "namespace": "grid",
        "pool": "lhcb",
        "queue": "q1",
        "vm_ids": ["i-1"],
        "reason": "Created",
    }
    assert not {"args", "msg", "levelno", "created", "thread", "pathname"} & entry.keys()


def test_a_kopf_record_about_a_pool_carries_the_pool_not_kopfs_settings() -> None:
    ref = {"kind": "CloudPilotPool", "namespace": "grid", "name": "lhcb", "uid": "u-1"}
    entry = json.loads(
        JsonFormatter().format(_record(k8s_ref=ref, k8s_skip=False, settings=object()))
    )
    assert (entry["namespace"], entry["pool"]) == ("grid", "lhcb")
    assert not {"settings", "k8s_skip", "k8s_ref"} & entry.keys()


def test_a_secret_in_an_extra_field_is_masked() -> None:
    redaction.register("test-log-format", ["s3cr3t-access-key-value"])
    try:
        entry = json.loads(JsonFormatter().format(_record(reason="s3cr3t-access-key-value")))
    finally:
        redaction.forget("test-log-format")
    assert "s3cr3t-access-key-value" not in json.dumps(entry)


def test_an_audit_record_carries_the_pool_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cloudpilot.audit"):
        audit.record("grid", "lhcb", "Created", "Created VM x (i-1)", queue="q1", vm_ids=["i-1"])
    [record] = caplog.records
    assert record.levelno == logging.INFO
    fields = {k: getattr(record, k) for k in audit.FIELDS}
    assert fields == {
        "namespace": "grid",
        "pool": "lhcb",
        "queue": "q1",
        "vm_ids": ["i-1"],
        "reason": "Created",
        "event_type": "Normal",
    }


def test_an_unknown_log_format_is_refused_not_plain() -> None:
    with pytest.raises(ValueError, match="JSON"):
        configure_logging(logging.INFO, "JSON")
