"""The user data CloudPilot sends, checked by cloud-init itself (Debian's cloud-init 22.4).

Each payload goes through cloud-init's own user-data processing (gunzip, MIME), exactly as a
VM would read it, and every cloud-config part must pass ``cloud-init schema``. Both run
offline and touch nothing on this machine. Without cloud-init the tests are skipped, except
in CI (``CI=true``), where a missing cloud-init is a failure: ``.ci/install-cloud-init.sh``
installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cloudpilot.context import RenderedUserData, prepare_user_data, site_template
from cloudpilot.context.userdata import builtin_for, clear_cache
from cloudpilot.models.queues import CloudAccount, Lookup, QueueConfig
from cloudpilot.models.spec import TemplateFamily
from tests.support.pilot import FAKE_PROXY_PEM, PILOT_WRAPPER


def _cloud_init() -> str:
    path = shutil.which("cloud-init")
    if path is None:
        reason = "cloud-init is not installed (.ci/install-cloud-init.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run these tests", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def cloud_init() -> str:
    return _cloud_init()


@pytest.fixture(scope="module")
def cloud_init_python(cloud_init: str) -> str:
    """The interpreter cloud-init runs on (its own modules are importable there)."""
    first = Path(cloud_init).read_text(errors="replace").splitlines()[0]
    return first[2:].strip().split()[0] if first.startswith("#!") else "python3"


PARTS = r"""
import json, sys
from cloudinit import helpers
from cloudinit.user_data import UserDataProcessor
work = sys.argv[2]
paths = helpers.Paths({"cloud_dir": work + "/cloud", "run_dir": work + "/run"})
message = UserDataProcessor(paths).process(open(sys.argv[1], "rb").read())
print(json.dumps([
    [part.get_content_type(), part.get_payload(decode=True).decode()]
    for part in message.walk() if not part.is_multipart()
]))
"""


def schema_check(
    rendered: RenderedUserData, cloud_init: str, python: str, tmp_path: Path
) -> list[str]:
    """The cloud-config parts cloud-init finds in the payload, each validated."""
    payload = tmp_path / "user-data"
    payload.write_bytes(rendered.payload)
    found = subprocess.run(
        [python, "-c", PARTS, str(payload), str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    parts = json.loads(found.stdout)
    configs = [text for kind, text in parts if kind == "text/cloud-config"]
    assert configs, f"cloud-init found no cloud-config in the payload: {[k for k, _ in parts]}"
    for index, text in enumerate(configs):
        path = tmp_path / f"part-{index}.yaml"
        path.write_text(text if text.startswith("#cloud-config") else "#cloud-config\n" + text)
        result = subprocess.run(
            [cloud_init, "schema", "--config-file", str(path), "--annotate"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Valid cloud-config" in output and "deprecat" not in output.lower(), output
    return configs


def make_queue(**changes: object) -> QueueConfig:
    queue = QueueConfig(
        pool_namespace="grid",
        pool_name="pilots",
        name="main",
        replicas=1,
        ce="cloud.example.org",
        account=CloudAccount("ec2", (), "creds", "grid"),
        image=Lookup(False, "ami-1"),
        flavor=Lookup(False, "t3.large"),
    )
    return replace(queue, **changes)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


@pytest.mark.parametrize("family", list(TemplateFamily))
@pytest.mark.parametrize("packages", [(), ("htop", "python3-gfal2-util")])
@pytest.mark.parametrize("proxy", [None, FAKE_PROXY_PEM], ids=["bundled-proxy", "proxy-secret"])
@pytest.mark.parametrize("cloud_type", ["ec2", "OPENSTACK"])
def test_default_templates_pass_cloud_init_schema(
    family: TemplateFamily,
    packages: tuple[str, ...],
    proxy: str | None,
    cloud_type: str,
    cloud_init: str,
    cloud_init_python: str,
    tmp_path: Path,
) -> None:
    queue = make_queue(
        template_family=family,
        ext_packages=packages,
        account=CloudAccount(cloud_type, (), "creds", "grid"),
    )
    rendered = prepare_user_data(
        queue,
        builtin_for(queue),
        namespace="grid",
        pool="pilots",
        pilot_executable=PILOT_WRAPPER,
        pilot_proxy=proxy,
    )
    assert rendered.compressed == (cloud_type == "ec2")
    (config,) = schema_check(rendered, cloud_init, cloud_init_python, tmp_path)
    assert "/var/lib/cloudpilot/run_pilot.sh" in config


def test_site_template_extending_the_default_passes(
    cloud_init: str, cloud_init_python: str, tmp_path: Path
) -> None:
    text = (
        '{% set cvmfs = dict(cvmfs, http_proxy="http://squid.example.org:3128", '
        'quota_limit=20000, repositories=["grid.cern.ch", "lhcb.cern.ch"]) %}\n'
        '{% extends "el9.yaml.j2" %}\n'
        "{% block extra_write_files %}\n"
        "  - path: /etc/motd\n    content: {{ ('pilot VM of ' ~ queue) | yaml_str }}\n"
        "{% endblock %}\n"
        "{% block before_pilot %}\n  - [systemctl, disable, --now, dnf-makecache.timer]\n"
        "{% endblock %}\n"
    )
    queue = make_queue()
    rendered = prepare_user_data(
        queue,
        site_template("grid", "site", "user-data", text),
        namespace="grid",
        pool="pilots",
        pilot_executable=PILOT_WRAPPER,
    )
    (config,) = schema_check(rendered, cloud_init, cloud_init_python, tmp_path)
    assert "CVMFS_QUOTA_LIMIT=20000" in config


def test_site_mime_multipart_passes(
    cloud_init: str, cloud_init_python: str, tmp_path: Path
) -> None:
    text = (
        'Content-Type: multipart/mixed; boundary="==B=="\nMIME-Version: 1.0\n\n'
        '--==B==\nContent-Type: text/cloud-config; charset="utf-8"\n\n'
        "write_files:\n  - path: /var/lib/site/run_pilot.sh\n"
        "    content: {{ pilot_executable | yaml_block(6) }}\n"
        "runcmd:\n  - [bash, /var/lib/site/run_pilot.sh]\n"
        '--==B==\nContent-Type: text/x-shellscript; charset="utf-8"\n\n'
        "#!/bin/sh\necho {{ queue | sh }}\n--==B==--\n"
    )
    rendered = prepare_user_data(
        make_queue(),
        site_template("grid", "site", "k", text),
        namespace="grid",
        pool="pilots",
        pilot_executable=PILOT_WRAPPER,
    )
    schema_check(rendered, cloud_init, cloud_init_python, tmp_path)


def test_the_check_is_real(cloud_init: str, tmp_path: Path) -> None:
    """cloud-init does reject what it should: a runcmd that is not a list."""
    path = tmp_path / "bad.yaml"
    path.write_text("#cloud-config\nruncmd: 3\n")
    result = subprocess.run(
        [cloud_init, "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "runcmd" in result.stdout + result.stderr
