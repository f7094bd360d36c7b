"""The chart's alert rules, checked and evaluated by Prometheus's own promtool.

tests/unit/test_metrics.py checks that the rules query only series the operator exports;
this runs them: ``promtool check rules`` parses every expression with Prometheus's PromQL
parser, and ``promtool test rules`` evaluates them over synthetic series
(alert_cases/prometheus-rules.test.yaml), so an alert that can never fire (the old
``max(cloudpilot_leader) == 0`` with nothing scraped) or fires on a healthy pool fails here.
promtool is built from Prometheus's Go module by .ci/build-promtool.sh (run by the README's
test command); without it these tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "cloudpilot-operator" / "files" / "prometheus-rules.yaml"
CASES = Path(__file__).resolve().parent / "alert_cases" / "prometheus-rules.test.yaml"
CACHED = (
    Path(os.environ.get("CLOUDPILOT_E2E_CACHE", Path.home() / ".cache" / "cloudpilot-e2e"))
    / "bin"
    / "promtool"
)


@pytest.fixture(scope="module")
def promtool() -> Path:
    found = shutil.which("promtool")
    binary = Path(found) if found else CACHED
    if not binary.is_file():
        reason = f"promtool is not built ({binary}): run bash .ci/build-promtool.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return binary


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_prometheus_parses_every_rule(promtool: Path) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_alerts_fire_when_they_should_and_only_then(promtool: Path) -> None:
    result = run(promtool, "test", "rules", str(CASES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_an_evaluated_case() -> None:
    """A new alert without a promtool case would be parsed but never shown to fire."""
    import yaml

    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load(CASES.read_text())
    fired = {
        check["alertname"]
        for case in cases["tests"]
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    assert alerts == fired, f"alerts without a case that fires them: {alerts - fired}"


def test_a_broken_rule_is_refused(promtool: Path, tmp_path: Path) -> None:
    """The check itself can fail: a rule with a PromQL syntax error is reported."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: max(cloudpilot_leader ==\n"
    )
    result = run(promtool, "check", "rules", str(broken))
    assert result.returncode != 0
