"""The operator's Prometheus metrics: names, labels, bounded cardinality and the endpoint.

Each test makes its own :class:`OperatorMetrics` (its own private registry), so no state
leaks between tests; values are read back through the registry as Prometheus would.
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from libcloud.compute.base import NodeDriver
from prometheus_client.parser import text_string_to_metric_families

from cloudpilot import metrics as metrics_module
from cloudpilot.memory import CloudError, ErrorKind
from cloudpilot.metrics import MAX_LABEL_VALUES, OperatorMetrics
from cloudpilot.planner import DeleteReason, Hold, QueueSummary

POOL = "grid/lhcb-cern"


@pytest.fixture
def m() -> OperatorMetrics:
    return OperatorMetrics(version="1.2.3")


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def series(m: OperatorMetrics, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in m.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def test_registry_is_private_and_holds_only_cloudpilot_series(m: OperatorMetrics) -> None:
    names = {family.name for family in m.registry.collect()}
    assert names and all(name.startswith("cloudpilot_") for name in names)
    # no process_/python_ collectors, and nothing on the global registry
    from prometheus_client import REGISTRY

    assert not any(f.name.startswith("cloudpilot_") for f in REGISTRY.collect())
    assert value(m, "cloudpilot_build_info", version="1.2.3") == 1


def test_cloud_calls_errors_and_latency(m: OperatorMetrics) -> None:
    m.observe_cloud_call("list", 0.2, None)
    m.observe_cloud_call("create", 3.0, CloudError(ErrorKind.QUOTA, "quota", "create"))
    m.observe_cloud_call("create", 1.0, None)
    assert value(m, "cloudpilot_cloud_api_calls_total", operation="list") == 1
    assert value(m, "cloudpilot_cloud_api_calls_total", operation="create") == 2
    assert (
        value(m, "cloudpilot_cloud_api_errors_total", operation="create", reason="QuotaExceeded")
        == 1
    )
    assert (
        value(m, "cloudpilot_cloud_api_errors_total", operation="list", reason="QuotaExceeded")
        is None
    )
    assert value(m, "cloudpilot_cloud_api_call_duration_seconds_count", operation="create") == 2
    assert value(m, "cloudpilot_cloud_api_call_duration_seconds_sum", operation="create") == 4.0
    assert (
        value(m, "cloudpilot_cloud_api_call_duration_seconds_bucket", operation="create", le="1.0")
        == 1
    )


class ScriptedDriver(NodeDriver):
    """A libcloud driver whose ``list_nodes`` answers with :data:`LISTINGS` in turn (raising
    the exceptions there), so the gateway calls its hook as it does for a real cloud."""

    name = "scripted"

    def __init__(self, key: str, secret: str | None = None, **options: object) -> None:
        self.key, self.secret = key, secret

    def list_nodes(self) -> list[object]:
        outcome = LISTINGS.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


LISTINGS: list[list[object] | Exception] = []


@pytest.mark.parametrize("hook", ["instance", "module"])
async def test_the_reconcilers_cloud_calls_reach_the_metrics_hook(
    m: OperatorMetrics, monkeypatch: pytest.MonkeyPatch, hook: str
) -> None:
    """The hook is handed to the Reconciler (as runtime.build_reconciler does with the
    module-level one) and called by its gateway with (operation, seconds, CloudError|None)."""
    from cloudpilot.cloud.gateway import Credentials
    from cloudpilot.reconciler import Reconciler, ReconcilerSettings
    from tests.support.builders import account

    monkeypatch.setattr(metrics_module, "_default", m)  # the module-level hook's registry
    on_cloud_call = {
        "instance": m.observe_cloud_call,
        "module": metrics_module.observe_cloud_call,
    }[hook]
    LISTINGS[:] = [[], ConnectionError("connection reset")]
    driver = f"{__name__}.ScriptedDriver"
    reconciler = Reconciler(
        ReconcilerSettings(allowed_driver_classes=frozenset({driver})), on_cloud_call=on_cloud_call
    )
    gateway = reconciler.caches.gateway(
        account(cloud_type=driver, driver_options=()),
        Credentials("key", "secret"),
    )
    assert await gateway.list_nodes() == []
    with pytest.raises(ConnectionError):
        await gateway.list_nodes()
    assert value(m, "cloudpilot_cloud_api_calls_total", operation="list") == 2
    assert value(m, "cloudpilot_cloud_api_call_duration_seconds_count", operation="list") == 2
    assert value(m, "cloudpilot_cloud_api_errors_total", operation="list", reason="Transient") == 1


def test_pilots_by_queue_and_phase_from_planner_summaries(m: OperatorMetrics) -> None:
    m.set_pool_phases(
        POOL,
        [
            QueueSummary(name="short", desired=5, starting=2, running=3, done=1),
            QueueSummary(name="long", desired=2, failed=1, held=Hold.BACKOFF),
        ],
    )
    labels = {"namespace": "grid", "pool": "lhcb-cern"}
    assert value(m, "cloudpilot_pilots", **labels, queue="short", phase="Running") == 3
    assert value(m, "cloudpilot_pilots", **labels, queue="short", phase="Starting") == 2
    assert value(m, "cloudpilot_pilots", **labels, queue="short", phase="Done") == 1
    # every phase is published, zeros included, so sums never have gaps
    assert value(m, "cloudpilot_pilots", **labels, queue="short", phase="Unknown") == 0
    assert value(m, "cloudpilot_pilots", **labels, queue="long", phase="Failed") == 1
    assert value(m, "cloudpilot_pilots_desired", **labels, queue="short") == 5
    assert value(m, "cloudpilot_queue_backoff", **labels, queue="long") == 1
    assert value(m, "cloudpilot_queue_backoff", **labels, queue="short") == 0
    assert value(m, "cloudpilot_queues_in_backoff", **labels) == 1


def test_pilots_from_status_queue_dicts_and_removed_queues_vanish(m: OperatorMetrics) -> None:
    m.set_pool_phases(
        POOL,
        [
            {"name": "a", "desired": 1, "running": 1},
            {"name": "b", "desired": 1, "starting": 1, "held": "BackOff"},
        ],
    )
    m.set_pool_phases(POOL, [{"name": "a", "desired": 2, "running": 2}])
    labels = {"namespace": "grid", "pool": "lhcb-cern"}
    assert value(m, "cloudpilot_pilots", **labels, queue="a", phase="Running") == 2
    assert value(m, "cloudpilot_pilots", **labels, queue="b", phase="Starting") is None
    assert value(m, "cloudpilot_pilots_desired", **labels, queue="b") is None
    assert value(m, "cloudpilot_queues_in_backoff", **labels) == 0


def test_conditions_always_publish_all_three(m: OperatorMetrics) -> None:
    m.set_pool_conditions(
        POOL,
        [
            {"type": "Ready", "status": "False"},
            {"type": "Stalled", "status": "True"},
        ],
    )
    labels = {"namespace": "grid", "pool": "lhcb-cern"}
    assert value(m, "cloudpilot_pool_condition", **labels, type="Ready") == 0
    assert value(m, "cloudpilot_pool_condition", **labels, type="Stalled") == 1
    assert value(m, "cloudpilot_pool_condition", **labels, type="Reconciling") == 0


def test_vm_counters_by_reason(m: OperatorMetrics) -> None:
    m.count_vms_created(POOL, "short", 3)
    m.count_vms_created(POOL, "short", 0)  # nothing: no empty series either
    m.count_vms_deleted(POOL, "short", DeleteReason.PILOT_DONE, 2)
    m.count_vm_failures(POOL, "short", "create", ErrorKind.QUOTA)
    m.count_vm_failures(POOL, "short", "create", CloudError(ErrorKind.TRANSIENT, "x"))
    labels = {"namespace": "grid", "pool": "lhcb-cern", "queue": "short"}
    assert value(m, "cloudpilot_vms_created_total", **labels) == 3
    assert value(m, "cloudpilot_vms_deleted_total", **labels, reason="PilotDone") == 2
    assert (
        value(
            m, "cloudpilot_vm_failures_total", **labels, operation="create", reason="QuotaExceeded"
        )
        == 1
    )
    assert (
        value(m, "cloudpilot_vm_failures_total", **labels, operation="create", reason="Transient")
        == 1
    )


def test_reconcile_duration_and_errors(m: OperatorMetrics) -> None:
    m.observe_reconcile(POOL, 0.3)
    m.observe_reconcile(POOL, 12.0, failed=True)
    labels = {"namespace": "grid", "pool": "lhcb-cern"}
    assert value(m, "cloudpilot_reconcile_duration_seconds_count") == 2
    assert value(m, "cloudpilot_reconcile_duration_seconds_bucket", le="0.5") == 1
    assert value(m, "cloudpilot_reconcile_errors_total", **labels) == 1


def test_forget_pool_removes_all_its_series_and_no_other(m: OperatorMetrics) -> None:
    for pool in (POOL, "grid/other"):
        m.set_pool_phases(pool, [QueueSummary(name="q", desired=1, running=1)])
        m.count_vms_created(pool, "q")
        m.observe_reconcile(pool, 1.0)
        m.set_pool_conditions(pool, [{"type": "Ready", "status": "True"}])
    m.forget_pool(POOL)
    text = m.render()
    assert 'pool="lhcb-cern"' not in text
    assert 'pool="other"' in text


def test_label_cardinality_is_capped(m: OperatorMetrics) -> None:
    """A bug feeding unbounded values (say, VM ids as reasons) cannot grow the series."""
    for i in range(MAX_LABEL_VALUES * 3):
        m.observe_cloud_call("create", 0.1, f"Reason{i}")
        m.set_pool_phases(POOL, [QueueSummary(name=f"queue-{i}", desired=1)])
    reasons = {s["reason"] for s in series(m, "cloudpilot_cloud_api_errors_total")}
    assert len(reasons) == MAX_LABEL_VALUES + 1 and "Other" in reasons
    queues = {s["queue"] for s in series(m, "cloudpilot_pilots_desired")}
    assert len(queues) <= 1  # the latest call replaces the picture; gone queues are dropped
    # No label anywhere carries a VM id or a message
    for family in m.registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= {
                "namespace",
                "pool",
                "queue",
                "phase",
                "operation",
                "reason",
                "type",
                "version",
                "le",
            }


def test_leader_gauge(m: OperatorMetrics) -> None:
    m.set_leader(True)
    assert value(m, "cloudpilot_leader") == 1
    m.set_leader(False)
    assert value(m, "cloudpilot_leader") == 0


def test_http_endpoint_serves_the_text_format_and_stops(m: OperatorMetrics) -> None:
    m.count_vms_created(POOL, "short", 4)
    server = m.serve(0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode()
    finally:
        server.stop()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    created = families["cloudpilot_vms_created"]
    assert [s.value for s in created.samples if s.name.endswith("_total")] == [4]
    assert not any(name.startswith(("process_", "python_")) for name in families)
    with pytest.raises(OSError):  # the port is closed after stop()
        urllib.request.urlopen(url, timeout=2)


def test_module_functions_use_one_default_instance() -> None:
    metrics_module.count_vms_created("ns/module-test", "q", 2)
    metrics_module.observe_cloud_call("list", 0.01, None)
    metrics_module.set_leader(True)
    text = metrics_module.render()
    assert 'cloudpilot_vms_created_total{namespace="ns",pool="module-test",queue="q"} 2.0' in text
    metrics_module.forget_pool("ns/module-test")
    assert 'pool="module-test"' not in metrics_module.render()
    assert metrics_module.default() is metrics_module.default()


@dataclass
class _Odd:
    name: str = "odd"


def test_odd_input_never_raises(m: OperatorMetrics) -> None:
    m.set_pool_phases("bare-name", [_Odd()])  # missing counts read as zero
    m.observe_cloud_call("", -1.0, "")
    assert (
        value(m, "cloudpilot_pilots", namespace="", pool="bare-name", queue="odd", phase="Running")
        == 0
    )


def test_a_whole_status_sets_phases_and_conditions(m: OperatorMetrics) -> None:
    m.set_pool_status(
        POOL,
        {
            "observedGeneration": 2,
            "queues": [{"name": "default", "desired": 3, "running": 2, "starting": 1}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "PilotsProvisioned"}],
        },
    )
    labels = {"namespace": "grid", "pool": "lhcb-cern"}
    assert value(m, "cloudpilot_pilots", **labels, queue="default", phase="Starting") == 1
    assert value(m, "cloudpilot_pool_condition", **labels, type="Ready") == 1
    m.set_pool_status(POOL, {"conditions": [{"type": "Stalled", "status": "True"}]})
    assert value(m, "cloudpilot_pilots_desired", **labels, queue="default") == 3  # kept
    assert value(m, "cloudpilot_pool_condition", **labels, type="Ready") == 0


def test_proxy_expiry_gauge_follows_status_proxy(m: OperatorMetrics) -> None:
    """The first-expiring proxy's notAfter as Unix seconds; gone when the pool has no proxy
    (or forgotten), so an expiry alert cannot keep firing for a proxy nobody uses."""
    labels = {"namespace": "grid", "pool": "lhcb-cern"}
    name = "cloudpilot_proxy_expiry_timestamp_seconds"
    m.set_pool_status(POOL, {"proxy": {"notAfter": "2026-01-02T03:04:05Z", "secondsLeft": 9}})
    m.set_pool_status("grid/other", {"proxy": {"notAfter": "2026-01-02T00:00:00Z"}})
    assert value(m, name, **labels) == 1767323045.0
    m.set_pool_status(POOL, {"queues": [], "conditions": []})  # the proxy left the spec
    assert value(m, name, **labels) is None
    m.set_pool_status(POOL, {"proxy": {"valid": False, "reason": "Invalid"}})  # no notAfter
    assert value(m, name, **labels) is None
    m.set_pool_status(POOL, {"proxy": {"notAfter": "not a time"}})
    assert value(m, name, **labels) is None
    m.set_pool_status(POOL, {"proxy": {"notAfter": "2026-01-02T03:04:05+00:00"}})
    m.forget_pool(POOL)
    assert value(m, name, **labels) is None
    assert value(m, name, namespace="grid", pool="other") == 1767312000.0


# -- the dashboard and the alert rules query only what the operator exports ---------------------

CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "cloudpilot-operator" / "files"
DEPLOYMENT_DOC = CHART_FILES.parents[2] / "docs" / "deployment.md"
METRIC_NAME = re.compile(r"\bcloudpilot_[a-z_]+")


def exported_series() -> set[str]:
    """Every name a query may use: families, their samples (``_total``, ``_bucket``, ...)."""
    names: set[str] = set()
    for family in OperatorMetrics().registry.collect():
        names |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
        names |= {sample.name for sample in family.samples}
    return names


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((CHART_FILES / "prometheus-rules.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_grafana_dashboard_and_alerts_query_only_exported_series() -> None:
    dashboard = json.loads((CHART_FILES / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in METRIC_NAME.findall(target["expr"])
    }
    queried |= set(METRIC_NAME.findall(json.dumps(dashboard["templating"])))
    alerted = {name for rule in alert_rules() for name in METRIC_NAME.findall(rule["expr"])}
    exported = exported_series()
    assert "cloudpilot_pilots" in queried and "cloudpilot_leader" in alerted
    assert queried <= exported, queried - exported
    assert alerted <= exported, alerted - exported
    assert "cloudpilot_proxy_expiry_timestamp_seconds" in alerted & queried


DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def test_alert_rules_are_complete_and_documented() -> None:
    """The structure, without a PromQL engine (balanced brackets, durations, annotations),
    and the alerts are the ones docs/deployment.md lists. Prometheus's own promtool parses
    and evaluates them in tests/integration/test_alert_rules.py."""
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        expr = rule["expr"]
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), rule["alert"]
        assert DURATION.match(rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    by_name = {rule["alert"]: rule for rule in rules}
    # With nothing scraped, max() is empty and "== 0" alone would never fire.
    assert "absent(cloudpilot_leader)" in by_name["CloudPilotNoLeader"]["expr"]
    assert "6 * 3600" in by_name["CloudPilotProxyExpiring"]["expr"]
    documented = set(re.findall(r"\| `(CloudPilot\w+)` \|", DEPLOYMENT_DOC.read_text()))
    assert documented == set(names)
