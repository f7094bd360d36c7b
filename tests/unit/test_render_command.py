"""``cloudpilot render``: offline, masked by default, with the size decision per cloud."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import pytest
import yaml

from cloudpilot.commands import render as command
from cloudpilot.context.userdata import clear_cache
from tests.support.pilot import FAKE_PROXY_PEM, PILOT_WRAPPER

POOL = """\
apiVersion: cloudpilot.io/v1alpha1
kind: CloudPilotPool
metadata:
  name: pilots
  namespace: grid
spec:
  ce: cloud.example.org
  cloudType: ec2
  credentialsSecret: {name: creds}
  instance: {image: ami-123, flavor: t3.large}
  pilot:
    executableSecret: {name: pilot, key: wrapper.sh}
  queues:
    - name: main
      replicas: 2
      context:
        extPackages: [htop]
    - name: big
      replicas: 1
      cloudType: OPENSTACK
"""


def secret_doc(name: str, data: dict[str, str], namespace: str = "grid") -> str:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": encoded,
        }
    )


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    clear_cache()
    parser = argparse.ArgumentParser(prog="cloudpilot render")
    command.add_parser(parser)
    status = command.run(parser.parse_args(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(POOL + "---\n" + secret_doc("pilot", {"wrapper.sh": PILOT_WRAPPER}))
    return path


def test_masks_the_wrapper_by_default(manifests: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["-f", str(manifests), "--queue", "main"], capsys)
    assert status == 0
    assert out.startswith("#cloud-config\n")
    config = yaml.safe_load(out)
    files = {f["path"]: f["content"] for f in config["write_files"]}
    assert files["/var/lib/cloudpilot/run_pilot.sh"].startswith(
        "<masked: Secret grid/pilot key wrapper.sh, 12,"
    )
    assert ["dnf", "install", "-y", "htop"] in config["runcmd"]
    for line in PILOT_WRAPPER.splitlines():
        if len(line.strip()) >= 16:
            assert line.strip() not in out + err
    # The decision is made on the real data, and shown for every cloud.
    assert "pool grid/pilots, queue main (built-in template el9.yaml.j2)" in err
    assert "gzip: 11," in err and "EC2 accepts 16,384 bytes" in err
    table = {line.split()[0]: line.split()[-1] for line in err.splitlines()[2:] if line.strip()}
    assert table["ec2"] == "gzip" and table["openstack"] == "plain" and table["gce"] == "plain"


def test_show_secrets_prints_what_the_vm_gets(
    manifests: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["-f", str(manifests), "-q", "main", "--show-secrets"], capsys)
    assert status == 0
    files = {f["path"]: f["content"] for f in yaml.safe_load(out)["write_files"]}
    assert files["/var/lib/cloudpilot/run_pilot.sh"] == PILOT_WRAPPER


def test_every_queue_with_a_header_each(
    manifests: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["-f", str(manifests)], capsys)
    assert status == 0
    assert out.count("# ---- cloudpilot render: pool grid/pilots, queue ") == 2
    assert "queue big (built-in template el9.yaml.j2): plain: " in err
    assert "OpenStack accepts 65,535 bytes after base64" in err


def test_secret_files_and_separate_secret_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        POOL.replace(
            "executableSecret: {name: pilot, key: wrapper.sh}",
            "executableSecret: {name: pilot, key: wrapper.sh}\n"
            "    proxySecret: {name: proxy, key: proxy.pem}",
        )
    )
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(PILOT_WRAPPER)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(secret_doc("proxy", {"proxy.pem": FAKE_PROXY_PEM}))
    status, out, err = run(
        [
            "-f",
            str(pool),
            "-f",
            str(secrets),
            "-q",
            "main",
            "--secret-file",
            f"pilot={wrapper}",
            "--show-secrets",
        ],
        capsys,
    )
    assert status == 0, err
    files = {f["path"]: f["content"] for f in yaml.safe_load(out)["write_files"]}
    assert files["/var/lib/cloudpilot/run_pilot.sh"] == PILOT_WRAPPER
    assert files["/var/lib/cloudpilot/proxy.pem"] == FAKE_PROXY_PEM

    status, out, _ = run(
        [
            "-f",
            str(pool),
            "-f",
            str(secrets),
            "-q",
            "main",
            "--secret-file",
            f"pilot/wrapper.sh={wrapper}",
        ],
        capsys,
    )
    assert status == 0
    assert "-----BEGIN" not in out
    assert "<masked: Secret grid/proxy key proxy.pem, 4,267 bytes" in out


def test_missing_secret_is_a_warning_and_missing_template_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    status, out, err = run(["-f", str(pool), "-q", "main"], capsys)
    assert status == 0
    assert "queue main: Secret grid/pilot key wrapper.sh not given" in err
    assert "executableSecret is not set" in out

    pool.write_text(
        POOL.replace(
            "  pilot:\n", "  context:\n    template: {name: site, key: user-data}\n  pilot:\n"
        )
    )
    status, _, err = run(["-f", str(pool), "-q", "main"], capsys)
    assert status == 1
    assert "ConfigMap grid/site key user-data not given (add it with -f)" in err


def test_site_template_errors_exit_1_with_template_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configmap = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "site", "namespace": "grid"},
            "data": {"user-data": "#cloud-config\nruncmd:\n  - [echo, {{ nope }}]\n"},
        }
    )
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        POOL.replace(
            "  pilot:\n", "  context:\n    template: {name: site, key: user-data}\n  pilot:\n"
        )
        + "---\n"
        + configmap
    )
    status, out, err = run(["-f", str(pool), "-q", "main"], capsys)
    assert status == 1 and out == ""
    assert "ConfigMap grid/site key user-data, line 3: undefined: 'nope' is undefined" in err


def test_too_big_exits_1_naming_size_and_limit(
    manifests: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = manifests.read_text().replace(
        "cloudType: ec2", "cloudType: ec2\n  context:\n    userDataLimit: 4096"
    )
    manifests.write_text(text)
    status, out, err = run(["-f", str(manifests), "-q", "main"], capsys)
    assert status == 1 and out == ""
    assert "after gzip" in err and "EC2 accepts 4,096 bytes (context.userDataLimit)" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--queue", "nope"], "no queue named nope"),
        (["--pool", "other"], "no CloudPilotPool named other"),
        (["--secret-file", "broken"], "expected NAME[/KEY]=PATH"),
    ],
)
def test_unusable_input_exits_2(
    manifests: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    status, _, err = run(["-f", str(manifests), *argv], capsys)
    assert status == 2
    assert expected in err


def test_invalid_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL.replace("ce: cloud.example.org", "ce: cloud.example.org\n  bogus: 1"))
    status, _, err = run(["-f", str(pool)], capsys)
    assert status == 2 and "spec.bogus" in err


def test_registered_in_the_cli() -> None:
    from cloudpilot.cli import COMMANDS

    assert COMMANDS["render"][0] == "cloudpilot.commands.render"
