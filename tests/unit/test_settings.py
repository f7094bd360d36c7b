"""One typed settings object: every ``CLOUDPILOT_*`` variable checked at start-up, a bad
value named with what was expected, ``cloudpilot operator`` exiting 2 without a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import kopf
import pytest

from cloudpilot import constants
from cloudpilot.kube.handlers import configure_kopf
from cloudpilot.leader import ElectionSettings as ReExported
from cloudpilot.settings import ElectionSettings, OperatorSettings, SettingsError, is_class_path

BAD_VALUES = [
    # (variable, value, what the message says is expected)
    ("CLOUDPILOT_PARALLELISM", "eight", "a whole number of at least 1"),
    ("CLOUDPILOT_PARALLELISM", "2.5", "a whole number of at least 1"),
    ("CLOUDPILOT_PARALLELISM", "0", "a whole number of at least 1"),
    ("CLOUDPILOT_BATCH_SIZE", "-3", "a whole number of at least 1"),
    ("CLOUDPILOT_RATE_BURST", "lots", "a whole number of at least 1"),
    ("CLOUDPILOT_MAX_CONCURRENT_RECONCILES", "0", "a whole number of at least 1"),
    ("CLOUDPILOT_RECONCILE_INTERVAL", "1m", "a number greater than 0 and at most 300"),
    ("CLOUDPILOT_RECONCILE_INTERVAL", "0", "a number greater than 0 and at most 300"),
    # Longer than half the pending-create memory: a shared listing could outlive it.
    ("CLOUDPILOT_RECONCILE_INTERVAL", "600", "a number greater than 0 and at most 300"),
    ("CLOUDPILOT_CONVERGING_INTERVAL", "nan", "a number greater than 0"),
    ("CLOUDPILOT_RATE_LIMIT", "inf", "a number greater than 0"),
    ("CLOUDPILOT_PROXY_WARN_MARGIN", "-1", "a number of at least 0"),
    ("CLOUDPILOT_DIRAC_VANISHED_GRACE", "10m", "a number of at least 0"),
    ("CLOUDPILOT_LOG_FORMAT", "xml", "plain or json"),
    ("CLOUDPILOT_METRICS_PORT", "70000", "a whole number from 0 to 65535"),
    ("CLOUDPILOT_METRICS_PORT", "http", "a whole number from 0 to 65535"),
    ("CLOUDPILOT_CLUSTER_DISCOVERY", "nope", "true or false"),
    ("CLOUDPILOT_LEADER_ELECTION", "ture", "true or false"),
    ("CLOUDPILOT_LEADER_ELECTION_LEASE_SECONDS", "30.5", "a whole number of at least 1"),
    ("CLOUDPILOT_LEADER_ELECTION_RENEW_DEADLINE", "soon", "a number greater than 0"),
    ("CLOUDPILOT_LEADER_ELECTION_RETRY_PERIOD", "-4", "a number greater than 0"),
    ("CLOUDPILOT_ALLOWED_DRIVER_CLASSES", "Driver", "pkg.module.Class paths"),
    ("CLOUDPILOT_ALLOWED_DRIVER_CLASSES", "a.B, c.d;rm -rf", "not valid: c.d;rm -rf"),
    ("CLOUDPILOT_ALLOWED_DRIVER_CLASSES", "pkg..Driver", "pkg.module.Class paths"),
    ("CLOUDPILOT_ALLOWED_DRIVER_CLASSES", "class.Driver", "pkg.module.Class paths"),
]


@pytest.mark.parametrize(("variable", "value", "expected"), BAD_VALUES)
def test_a_bad_value_is_named_with_what_is_expected(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as bad:
        OperatorSettings.from_env({variable: value})
    message = str(bad.value)
    assert message.startswith("invalid setting ")
    assert f"{variable}={value!r}" in message
    assert expected in message
    assert [p.variable for p in bad.value.problems] == [variable]


def test_every_bad_variable_is_reported_at_once() -> None:
    env = {
        "CLOUDPILOT_PARALLELISM": "eight",
        "CLOUDPILOT_LOG_FORMAT": "xml",
        "CLOUDPILOT_LEADER_ELECTION": "maybe",
    }
    with pytest.raises(SettingsError) as bad:
        OperatorSettings.from_env(env)
    assert {p.variable for p in bad.value.problems} == set(env)
    assert str(bad.value).startswith("invalid settings:\n")
    assert all(name in str(bad.value) for name in env)


def test_leader_election_timings_are_checked_together() -> None:
    env = {"CLOUDPILOT_LEADER_ELECTION_RENEW_DEADLINE": "40"}  # past the 30 s lease
    with pytest.raises(SettingsError, match="renew_deadline < lease_seconds") as bad:
        OperatorSettings.from_env(env)
    assert "CLOUDPILOT_LEADER_ELECTION_LEASE_SECONDS" in str(bad.value)
    with pytest.raises(SettingsError):
        ElectionSettings.from_env(env)


def test_a_very_long_value_is_shortened_in_the_message() -> None:
    with pytest.raises(SettingsError) as bad:
        OperatorSettings.from_env({"CLOUDPILOT_LOG_FORMAT": "x" * 500})
    assert len(str(bad.value)) < 200


def test_unset_or_empty_variables_mean_the_defaults() -> None:
    blank = {name: "" for name, _, _ in BAD_VALUES}
    for env in ({}, blank, {k: "  " for k in blank}):
        settings = OperatorSettings.from_env(env)
        assert settings == OperatorSettings(election=settings.election)
        assert settings.election == ElectionSettings(namespace=settings.election.namespace)
    assert OperatorSettings().allowed_driver_classes == frozenset()  # libcloud's own only


def test_good_values_are_typed() -> None:
    settings = OperatorSettings.from_env(
        {
            "CLOUDPILOT_RECONCILE_INTERVAL": "120",
            "CLOUDPILOT_CONVERGING_INTERVAL": " 5.5 ",
            "CLOUDPILOT_PARALLELISM": "16",
            "CLOUDPILOT_BATCH_SIZE": "250",
            "CLOUDPILOT_RATE_LIMIT": "7.5",
            "CLOUDPILOT_RATE_BURST": "15",
            "CLOUDPILOT_MAX_CONCURRENT_RECONCILES": "200",
            "CLOUDPILOT_LOG_FORMAT": "json",
            "CLOUDPILOT_METRICS_PORT": "9090",
            "CLOUDPILOT_PROXY_WARN_MARGIN": "0",
            "CLOUDPILOT_DIRAC_VANISHED_GRACE": "90",
            "CLOUDPILOT_CLUSTER_DISCOVERY": "false",
            "CLOUDPILOT_ALLOWED_DRIVER_CLASSES": " site.drivers.Cloud ,other.Driver,",
            "CLOUDPILOT_LEADER_ELECTION": "TRUE",
            "CLOUDPILOT_LEADER_ELECTION_NAMESPACE": "ops",
            "CLOUDPILOT_LEADER_ELECTION_NAME": "leader",
            "CLOUDPILOT_LEADER_ELECTION_LEASE_SECONDS": "60",
            "CLOUDPILOT_LEADER_ELECTION_RENEW_DEADLINE": "40",
            "CLOUDPILOT_LEADER_ELECTION_RETRY_PERIOD": "5",
        }
    )
    assert settings == OperatorSettings(
        reconcile_interval=120.0,
        converging_interval=5.5,
        parallelism=16,
        batch_size=250,
        rate_limit=7.5,
        rate_burst=15,
        max_concurrent_reconciles=200,
        log_format="json",
        metrics_port=9090,
        proxy_warn_margin=0.0,
        dirac_vanished_grace=90.0,
        cluster_discovery=False,
        allowed_driver_classes=frozenset({"site.drivers.Cloud", "other.Driver"}),
        election=ElectionSettings(
            enabled=True,
            namespace="ops",
            name="leader",
            lease_seconds=60,
            renew_deadline=40.0,
            retry_period=5.0,
        ),
    )
    assert OperatorSettings.from_env({"CLOUDPILOT_METRICS_PORT": "0"}).metrics_port is None


@pytest.mark.parametrize(("word", "value"), [("1", True), ("on", True), ("No", False)])
def test_booleans_take_the_usual_spellings(word: str, value: bool) -> None:
    assert ElectionSettings.from_env({"CLOUDPILOT_LEADER_ELECTION": word}).enabled is value


def test_the_leader_module_re_exports_the_election_settings() -> None:
    assert ReExported is ElectionSettings


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("pkg.module.Class", True),
        ("mod.Class", True),
        ("_private._Mod.C1", True),
        ("Class", False),
        ("pkg.module.", False),
        (".module.Class", False),
        ("pkg.mo-dule.Class", False),
        ("pkg.module:Class", False),
        ("pkg.module.Class ", False),
        ("pkg.lambda.Class", False),
        ("", False),
    ],
)
def test_class_paths_are_plain_dotted_identifiers(text: str, ok: bool) -> None:
    assert is_class_path(text) is ok


def test_cluster_discovery_reaches_kopf() -> None:
    """The setting, not the environment, decides (configure_kopf read os.environ before)."""
    on, off = kopf.OperatorSettings(), kopf.OperatorSettings()
    configure_kopf(on, cluster_discovery=True)
    configure_kopf(off, cluster_discovery=False)
    assert on.scanning.disabled is False and off.scanning.disabled is True


def test_kopf_workers_are_bounded() -> None:
    """kopf's default (no limit, a worker per pool of the start-up listing, each with its
    own API connection) was the operator's memory peak at start-up."""
    settings = kopf.OperatorSettings()
    assert settings.queueing.worker_limit is None  # kopf's default, which must be replaced
    configure_kopf(settings)
    assert settings.queueing.worker_limit == constants.KOPF_WORKER_LIMIT
    assert 0 < settings.queueing.worker_limit <= 256
    assert settings.queueing.idle_timeout == constants.KOPF_IDLE_TIMEOUT < 5.0


def _run_operator(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPILOT_")}
    return subprocess.run(
        [sys.executable, "-m", "cloudpilot", "operator", *args],
        env={**clean, **env, "KUBECONFIG": os.devnull},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cloudpilot_operator_stops_with_the_message_and_status_2() -> None:
    result = _run_operator(CLOUDPILOT_PARALLELISM="eight")
    assert result.returncode == 2, result.stderr
    assert (
        "cloudpilot operator: error: invalid setting CLOUDPILOT_PARALLELISM='eight': "
        "expected a whole number of at least 1"
    ) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_command_line_value_is_refused_by_argparse_with_status_2() -> None:
    result = _run_operator("--parallelism", "0")
    assert result.returncode == 2
    assert "argument --parallelism: expected a whole number of at least 1, got '0'" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def _operator_args(*argv: str) -> argparse.Namespace:
    from cloudpilot.cli import build_parser

    return build_parser().parse_args(["operator", *argv])


def test_log_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudpilot.commands.run_operator import settings_from_args

    monkeypatch.setenv("CLOUDPILOT_LOG_FORMAT", "plain")
    monkeypatch.setenv("CLOUDPILOT_LOG_LEVEL", "warning")
    from_env = settings_from_args(_operator_args())
    assert (from_env.log_format, from_env.log_level) == ("plain", "warning")
    flagged = settings_from_args(_operator_args("--log-format", "json", "--log-level", "debug"))
    assert (flagged.log_format, flagged.log_level) == ("json", "debug")


@pytest.mark.parametrize(
    ("args", "env", "complaint"),
    [
        (("--log-format", "JSON"), {}, "argument --log-format: invalid choice: 'JSON'"),
        (("--log-level", "verbose"), {}, "argument --log-level: invalid choice: 'verbose'"),
        ((), {"CLOUDPILOT_LOG_FORMAT": "JSON"}, "CLOUDPILOT_LOG_FORMAT='JSON'"),
        ((), {"CLOUDPILOT_LOG_LEVEL": "trace"}, "CLOUDPILOT_LOG_LEVEL='trace'"),
    ],
)
def test_an_unknown_log_format_or_level_is_status_2_never_plain(
    args: tuple[str, ...], env: dict[str, str], complaint: str
) -> None:
    result = _run_operator(*args, **env)
    assert result.returncode == 2, result.stderr
    assert complaint in result.stderr
    assert "cloudpilot operator: error: " in result.stderr
    assert "Traceback" not in result.stderr
