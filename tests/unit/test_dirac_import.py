"""``import-dirac-cfg``: the seed's example and a multi-queue CS, to pools the operator takes."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudpilot import dirac_import, redaction
from cloudpilot.commands import import_dirac_cfg
from cloudpilot.credentials import ini
from cloudpilot.credentials.resolve import credentials_from_secret
from cloudpilot.dirac_import import Level, kube_name, restore_type, split_list
from cloudpilot.models.queues import effective_queues
from cloudpilot.models.spec import parse_spec

HERE = Path(__file__).parent / "dirac_cfg"
SEED_CFG = HERE / "seed_example.cfg"
SEED_AUTH = HERE / "seed_cloud.auth"
MULTI_CFG = HERE / "multi_queue.cfg"
CRD = Path(__file__).resolve().parents[2] / "crds" / "cloudpilotpools.cloudpilot.io.yaml"
SEED_GOLDEN = HERE / "seed_example.golden.yaml"
HAND_WRITTEN = Path(__file__).resolve().parents[2] / "examples" / "openstack-pool.yaml"
UPDATE_GOLDEN = "CLOUDPILOT_UPDATE_GOLDEN"
SECRET_VALUES = ("cloudprovuser", "01234567", "mypassword", "abcdef-token-not-for-the-spec")


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """The redaction registry is process-wide: leave it as this test found it."""
    before = set(redaction._secrets)
    yield
    for owner in set(redaction._secrets) - before:
        redaction.forget(owner)


def run_command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    import_dirac_cfg.add_parser(parser)
    code = import_dirac_cfg.run(parser.parse_args([str(a) for a in argv]))
    out, err = capsys.readouterr()
    return code, out, err


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def pools(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "CloudPilotPool"}


def secrets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}


def accepted_by_the_operator(pool: dict[str, Any]) -> list[Any]:
    spec = parse_spec(pool["spec"])
    return effective_queues(spec, namespace="grid", pool_name=pool["metadata"]["name"])


def crd_problems(pool: dict[str, Any]) -> list[str]:
    """The CRD's verdict: the shared validator (schema, list keys, CEL) where it exists,
    else the openAPIV3Schema alone with jsonschema."""
    try:
        from tests.support.crd import problems
    except ImportError:
        import jsonschema

        crd = yaml.safe_load(CRD.read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(pool)]
    return [str(p) for p in problems(pool)]


# -- the seed's own example ---------------------------------------------------------------------


def test_seed_example_becomes_a_pool_the_operator_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_command(capsys, SEED_CFG, "--auth", SEED_AUTH, "--namespace", "grid")
    assert code == 0, err
    docs = documents(out)
    assert [d["kind"] for d in docs] == ["Secret", "CloudPilotPool"]
    pool = pools(docs)["cloudprov-mysite-example"]
    assert pool["apiVersion"] == "cloudpilot.io/v1alpha1"
    assert pool["metadata"]["namespace"] == "grid"
    spec = pool["spec"]
    assert spec["ce"] == "cloudprov.mysite.example"
    assert spec["cloudType"] == "OPENSTACK"
    assert spec["driver"] == {
        "ex_force_auth_url": "https://cloudprov.mysite.example:5000",
        "ex_force_auth_version": "3.x_password",
        "ex_tenant_name": "clouduser",
    }
    assert spec["instance"] == {
        "image": "name:CentOS-7-x86_64-GenericCloud-1905",
        "flavor": "name:m1.medium",
        "networks": ["name:my_public_net", "name:my_private_net"],
        "sshKey": "mysshkey",
        "createOptions": {"ex_config_drive": True},
    }
    assert spec["context"] == {"templateFamily": "centos7"}
    assert spec["replicas"] == 0
    # The report says how to keep SiteDirector from starting pilots for the same CE.
    assert "take cloudprov.mysite.example out of SiteDirector" in err
    assert "CETypes" in err and "docs/dirac.md" in err
    (queue,) = accepted_by_the_operator(pool)
    assert queue.account.options["ex_force_auth_version"] == "3.x_password"
    assert [str(n) for n in queue.networks] == ["name:my_public_net", "name:my_private_net"]


def test_seed_example_import_matches_the_golden_file(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole output, report comments included, byte for byte. After an intended change,
    regenerate with ``CLOUDPILOT_UPDATE_GOLDEN=1`` and review the diff."""
    code, out, err = run_command(capsys, SEED_CFG, "--auth", SEED_AUTH, "--namespace", "grid")
    assert code == 0, err
    if os.environ.get(UPDATE_GOLDEN):
        SEED_GOLDEN.write_text(out, encoding="utf-8")
    assert out == SEED_GOLDEN.read_text(encoding="utf-8")


def test_seed_example_imports_into_the_hand_written_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Parity with examples/openstack-pool.yaml, the pool a site writes by hand for the
    seed's CE: the same spec except what the import cannot know (how many VMs, the pilot
    wrapper's Secret) and the names it picks."""
    _, out, _ = run_command(capsys, SEED_CFG, "--auth", SEED_AUTH)
    imported = pools(documents(out))["cloudprov-mysite-example"]["spec"]
    by_hand = pools(documents(HAND_WRITTEN.read_text()))["cloudprov"]["spec"]
    for spec in (imported, by_hand):
        spec.pop("replicas")
        spec.pop("pilot", None)
        spec.pop("credentialsSecret")
    assert imported == by_hand


def test_every_choice_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    """Each field the import wrote that no DIRAC option spelled out has a reason."""
    _, _, err = run_command(capsys, SEED_CFG, "--auth", SEED_AUTH)
    for field, because in (
        ("context.templateFamily", "is a CentOS 7 image"),
        ("instance.createOptions.ex_config_drive", "config drive on every VM"),
        ("instance.networks", "looked up by the driver"),
        ("instance.sshKey", "key pair"),
        ("replicas", "must not start VMs"),
        ("cloud.auth", "the Secret holds the [cloudprov.mysite.example] entry"),
        ("pilot", "spec.pilot.executableSecret"),
    ):
        (line,) = [x for x in err.splitlines() if f": {field}: " in x]
        assert because in line, line


def test_an_explicit_template_family_wins_over_the_image_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_command(capsys, MULTI_CFG, "--template-family", "el9")
    assert code == 0, err
    for pool in pools(documents(out)).values():
        assert pool["spec"]["context"]["templateFamily"] == "el9"
        for queue in pool["spec"].get("queues", []):
            assert "templateFamily" not in queue.get("context", {})
    assert "el9, as --template-family says" in err


def test_a_queue_with_max_waiting_jobs_0_does_not_inherit_max_starting(
    multi: list[dirac_import.Conversion],
) -> None:
    """The CE says MaxWaitingJobs = 10, gpu.queue says 0 (submit nothing): the queue keeps
    the CE's MaxTotalJobs but not its maxStarting, and the report says why."""
    spec = by_host(multi, "cloudprov.mysite.example").pool["spec"]
    gpu = next(q for q in spec["queues"] if q["name"] == "gpu-queue")
    assert gpu["limits"] == {"maxInstances": 50}
    assert gpu["replicas"] == 0
    (finding,) = [
        f
        for f in by_host(multi, "cloudprov.mysite.example").findings
        if (f.option, f.queue) == ("MaxWaitingJobs", "gpu.queue")
    ]
    assert "nor is a CE-level MaxWaitingJobs copied into it" in finding.message


@pytest.mark.skipif(not CRD.exists(), reason="the CRD is not written yet")
def test_seed_example_passes_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_command(capsys, SEED_CFG, "--auth", SEED_AUTH)
    for pool in pools(documents(out)).values():
        assert crd_problems(pool) == []


def test_seed_secret_resolves_to_the_ce_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_command(capsys, SEED_CFG, "--auth", SEED_AUTH)
    secret = secrets(documents(out))["cloudprov-mysite-example-credentials"]
    assert secret["type"] == "Opaque"
    text = secret["stringData"]["cloud.auth"]
    assert "[cloudprov.mysite.example]" in text
    assert "[DEFAULT]" not in text  # only what this CE uses
    creds = credentials_from_secret(
        {"cloud.auth": text.encode()},
        ce="cloudprov.mysite.example",
        namespace="grid",
        secret_name="cloudprov-mysite-example-credentials",
    )
    assert (creds.key, creds.secret) == ("cloudprovuser", "01234567")


def test_without_auth_the_secret_is_a_template(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_command(capsys, SEED_CFG)
    assert code == 0
    secret = secrets(documents(out))["cloudprov-mysite-example-credentials"]
    assert secret["stringData"] == {
        "key": dirac_import.PLACEHOLDER_KEY,
        "secret": dirac_import.PLACEHOLDER_SECRET,
    }
    assert "no --auth file given" in err
    assert "A template: fill in the credentials" in out


def test_output_file_is_private(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "pools.yaml"
    code, out, err = run_command(capsys, SEED_CFG, "--auth", SEED_AUTH, "-o", target)
    assert code == 0
    assert out == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(documents(target.read_text())) == 2
    assert f"written to {target}" in err


# -- a multi-queue configuration ----------------------------------------------------------------


@pytest.fixture(scope="module")
def multi() -> list[dirac_import.Conversion]:
    auth = ini.parse_cloud_auth(SEED_AUTH.read_text(), origin="seed_cloud.auth")
    cfg = dirac_import.load_cfg(MULTI_CFG.read_text())
    return dirac_import.convert(cfg, auth=auth, namespace="grid", source="multi_queue.cfg")


def by_host(conversions: list[dirac_import.Conversion], host: str) -> dirac_import.Conversion:
    return next(c for c in conversions if c.ce.host == host)


def test_only_cloud_ces_are_converted(multi: list[dirac_import.Conversion]) -> None:
    assert sorted(c.ce.host for c in multi) == [
        "cloudprov.mysite.example",
        "fedcloud.othersite.example",
    ]


def test_queues_keep_their_overrides(multi: list[dirac_import.Conversion]) -> None:
    spec = by_host(multi, "cloudprov.mysite.example").pool["spec"]
    assert spec["driver"] == {
        "ex_force_auth_url": "https://cloudprov.mysite.example:5000",
        "ex_force_auth_version": "3.x_password",
        "ex_tenant_name": "clouduser",
        "secure": False,
        "port": 5000,
        "timeout": 12.5,
    }
    assert spec["context"] == {
        "templateFamily": "centos7",
        "extPackages": ["git", "emacs-nox", "htop"],
        "maxLifetime": 86400,
    }
    queues = {q["name"]: q for q in spec["queues"]}
    assert list(queues) == ["default", "large-mem", "gpu-queue"]
    assert queues["default"] == {
        "name": "default",
        "replicas": 0,
        "limits": {"maxInstances": 50, "maxStarting": 10},
    }
    assert queues["large-mem"]["instance"] == {"flavor": "name:m1.xlarge"}
    assert queues["large-mem"]["limits"] == {"maxInstances": 5, "maxStarting": 10}
    assert queues["gpu-queue"]["driver"] == {"ex_tenant_name": "gpuproject", "timeout": 30}
    assert queues["gpu-queue"]["instance"] == {
        "image": "gpu-image-uuid-0001",
        "networks": ["name:gpu_net"],
    }


def test_multi_queue_pool_passes_the_operators_model(
    multi: list[dirac_import.Conversion],
) -> None:
    conversion = by_host(multi, "cloudprov.mysite.example")
    assert not [f for f in conversion.findings if f.level is Level.ERROR]
    queues = {q.name: q for q in accepted_by_the_operator(conversion.pool)}
    gpu = queues["gpu-queue"]
    assert gpu.account.options == {
        "ex_force_auth_url": "https://cloudprov.mysite.example:5000",
        "ex_force_auth_version": "3.x_password",
        "ex_tenant_name": "gpuproject",
        "secure": False,
        "port": 5000,
        "timeout": 30,
    }
    assert str(gpu.image) == "gpu-image-uuid-0001"
    assert str(gpu.flavor) == "name:m1.medium"  # inherited from the CE, as in DIRAC
    assert queues["large-mem"].max_instances == 5
    assert queues["default"].ext_packages == ("git", "emacs-nox", "htop")
    assert queues["default"].max_lifetime == 86400


@pytest.mark.skipif(not CRD.exists(), reason="the CRD is not written yet")
def test_multi_queue_pools_pass_the_crd(multi: list[dirac_import.Conversion]) -> None:
    for conversion in multi:
        assert crd_problems(conversion.pool) == [], conversion.ce.host


def test_everything_not_converted_is_reported(multi: list[dirac_import.Conversion]) -> None:
    findings = by_host(multi, "cloudprov.mysite.example").findings
    reported = {(f.option, f.queue) for f in findings}
    for option in (
        "CloudAuth",
        "Context_Template",
        "Context_ProxyLifetime",
        "Platform",
        "SI00",
        "Tag",
        "SomethingElse",
        "Driver_ex_force_auth_token",
    ):
        assert (option, None) in reported, option
    assert ("maxCPUTime", "default") in reported
    assert ("NumberOfProcessors", "Large_Mem") in reported
    assert ("MaxWaitingJobs", "gpu.queue") in reported
    assert ("queue name", "Large_Mem") in reported
    levels = {f.option: f.level for f in findings if f.queue is None}
    assert levels["SomethingElse"] is Level.WARNING
    assert levels["Platform"] is Level.INFO


def test_proxy_ce_keeps_proxy_in_its_secret(multi: list[dirac_import.Conversion]) -> None:
    conversion = by_host(multi, "fedcloud.othersite.example")
    text = conversion.secret["stringData"]["cloud.auth"]
    entry = ini.read_cloud_auth(text, "fedcloud.othersite.example", origin="test")
    assert entry.uses_proxy
    assert conversion.pool["spec"]["instance"]["flavor"] == "3"  # ids stay strings
    assert any("secret is PROXY" in f.message for f in conversion.findings)


def test_command_report_and_yaml_comments_agree(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_command(capsys, MULTI_CFG, "--auth", SEED_AUTH)
    assert code == 0, err
    comments = "".join(line for line in out.splitlines(True) if line.startswith("#"))
    for needle in ("Context_Template", "SomethingElse", "MaxWaitingJobs", "force_auth_token"):
        assert needle in err
        assert needle in comments
    for line in err.splitlines()[:-1]:
        assert f"# {line.removeprefix('cloudpilot import-dirac-cfg: ')}" in comments
    assert "2 pool(s) written to stdout" in err


# -- nothing leaks ------------------------------------------------------------------------------


def test_stderr_and_pool_documents_never_show_credentials(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, err = run_command(capsys, MULTI_CFG, "--auth", SEED_AUTH)
    for value in SECRET_VALUES:
        assert value not in err
    docs = documents(out)
    pool_text = yaml.safe_dump(list(pools(docs).values()))
    comments = "".join(line for line in out.splitlines(True) if line.startswith("#"))
    for value in SECRET_VALUES:
        assert value not in pool_text
        assert value not in comments
    # The Secret documents are where the credentials belong, and only there.
    assert "01234567" in yaml.safe_dump(list(secrets(docs).values()))


def test_a_broken_auth_file_is_reported_without_values(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    auth = tmp_path / "cloud.auth"
    auth.write_text("[DEFAULT]\nkey = k\nNotAnOption-Leaky-Value-0042\n")
    code, _, err = run_command(capsys, SEED_CFG, "--auth", auth)
    assert code == 2
    assert "cannot parse line(s) 3" in err
    assert "Leaky-Value-0042" not in err


def test_a_ce_missing_from_auth_gets_a_template(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    auth = tmp_path / "cloud.auth"
    auth.write_text("[other.example]\nkey = Leaky-Key-0043\nsecret = Leaky-Secret-0044\n")
    code, out, err = run_command(capsys, SEED_CFG, "--auth", auth)
    assert code == 0
    assert "no section [cloudprov.mysite.example]" in err
    assert "Leaky" not in err and "Leaky" not in out


# -- errors and helpers -------------------------------------------------------------------------


def test_unknown_ce_and_no_cloud_ce(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_command(capsys, MULTI_CFG, "--ce", "nope.example")
    assert (code, out) == (2, "")
    assert "cloud CEs: cloudprov.mysite.example, fedcloud.othersite.example" in err
    code, _, _ = run_command(capsys, MULTI_CFG, "--ce", "fedcloud.othersite.example")
    assert code == 0
    empty = tmp_path / "empty.cfg"
    empty.write_text("Resources\n{\n}\n")
    code, _, err = run_command(capsys, empty)
    assert code == 2 and "no CE with CEType = Cloud" in err
    broken = tmp_path / "broken.cfg"
    broken.write_text("Resources\n{\n")
    code, _, err = run_command(capsys, broken)
    assert code == 2 and "cannot parse" in err


def test_incomplete_ce_exits_1_but_writes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "incomplete.cfg"
    cfg.write_text(SEED_CFG.read_text().replace("Instance_Image", "# Instance_Image"))
    code, out, err = run_command(capsys, cfg)
    assert code == 1
    assert "error: cloudprov.mysite.example: pool: the pool is incomplete" in err
    assert "instance.image" in err
    assert pools(documents(out))


@pytest.mark.parametrize(
    ("value", "name", "expected"),
    [
        ("False", "secure", False),
        ("true", "secure", True),
        ("5000", "port", 5000),
        ("-3", "x", -3),
        ("12.5", "timeout", 12.5),
        ("1e3", "x", 1000.0),
        ("0123", "project_id", "0123"),
        ("2.0", "api_version", "2.0"),
        ("3.x_password", "ex_force_auth_version", "3.x_password"),
        ("https://h:5000", "ex_force_auth_url", "https://h:5000"),
        (" spaced ", "x", "spaced"),
    ],
)
def test_restore_type(value: str, name: str, expected: object) -> None:
    result = restore_type(value, name)
    assert result == expected and type(result) is type(expected)


def test_names_and_lists() -> None:
    assert kube_name("CloudProv.MySite.Example") == "cloudprov-mysite-example"
    assert kube_name("Large_Mem") == "large-mem"
    long = kube_name("a" * 100 + ".example")
    assert len(long) == 63 and long != kube_name("a" * 100 + ".other")
    assert split_list("name:a, name:b ,,c") == ["name:a", "name:b", "c"]


def test_registered_as_a_cli_command(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudpilot import cli

    try:
        parser = cli.build_parser()
    except ImportError as exc:  # another command's module is not there yet
        pytest.skip(f"cli cannot load every command: {exc}")
    args = parser.parse_args(
        ["import-dirac-cfg", str(SEED_CFG), "--ce", "cloudprov.mysite.example"]
    )
    assert args.command == "import-dirac-cfg"
    assert cli.main(["import-dirac-cfg", str(SEED_CFG)]) == 0
    assert "kind: CloudPilotPool" in capsys.readouterr().out
