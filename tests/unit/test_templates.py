"""The built-in templates, the Jinja2 environment, and the shell rules the VM runs.

The shell pieces (stamp, key pinning) are run for real with bash and dash against fakes:
a ``cloud-init`` and ``curl`` on PATH, files, and a metadata server on loopback.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudpilot.context import (
    UserDataError,
    builtin,
    builtin_for,
    prepare_user_data,
    render,
    template_variables,
)
from cloudpilot.context.templating import builtin_names, environment, yaml_block, yaml_str
from cloudpilot.context.userdata import clear_cache
from cloudpilot.context.variables import DOCUMENTED, PILOT_STAMP_LENGTH, PILOT_STAMP_PREFIX
from cloudpilot.models.queues import CloudAccount, Lookup, QueueConfig
from cloudpilot.models.spec import TemplateFamily
from cloudpilot.naming import pilot_stamp
from tests.support.pilot import FAKE_PROXY_PEM, PILOT_WRAPPER

REPO = Path(__file__).resolve().parents[2]
SHELLS = [s for s in ("bash", "dash") if shutil.which(s)]


def make_queue(**changes: Any) -> QueueConfig:
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
    return replace(queue, **changes)


def variables(queue: QueueConfig | None = None, **changes: Any) -> dict[str, Any]:
    values = template_variables(
        queue or make_queue(),
        namespace="grid",
        pool="pilots",
        pilot_executable=PILOT_WRAPPER,
        pilot_proxy=None,
    )
    values.update(changes)
    return values


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def rendered_config(queue: QueueConfig, proxy: str | None = None) -> dict[str, Any]:
    result = prepare_user_data(
        queue,
        builtin_for(queue),
        namespace="grid",
        pool="pilots",
        pilot_executable=PILOT_WRAPPER,
        pilot_proxy=proxy,
    )
    assert result.text.startswith("#cloud-config\n")
    config = yaml.safe_load(result.text)
    assert isinstance(config, dict)
    return config


def files_of(config: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in config["write_files"]}


# -- the built-in templates -------------------------------------------------------------------


def test_both_families_and_their_shared_parts_are_shipped() -> None:
    names = builtin_names()
    for name in (
        "el9.yaml.j2",
        "centos7.yaml.j2",
        "pilot-vm.yaml.j2",
        "boot.sh.j2",
        "startup.sh.j2",
        "pilot-stamp.sh.j2",
        "cvmfs-keys.sh.j2",
    ):
        assert name in names
    assert builtin_for(make_queue()).name == "el9.yaml.j2"
    assert builtin_for(make_queue(template_family=TemplateFamily.CENTOS7)).name == (
        "centos7.yaml.j2"
    )


@pytest.mark.parametrize("family", list(TemplateFamily))
@pytest.mark.parametrize("packages", [(), ("htop", "python3-gfal2-util")])
@pytest.mark.parametrize("proxy", [None, FAKE_PROXY_PEM])
def test_default_templates_do_what_the_seed_does(
    family: TemplateFamily, packages: tuple[str, ...], proxy: str | None
) -> None:
    config = rendered_config(make_queue(template_family=family, ext_packages=packages), proxy)
    files = files_of(config)

    # The pilot wrapper (and proxy) arrive byte for byte.
    assert files["/var/lib/cloudpilot/run_pilot.sh"] == PILOT_WRAPPER
    if proxy:
        assert files["/var/lib/cloudpilot/proxy.pem"] == proxy
    else:
        assert "/var/lib/cloudpilot/proxy.pem" not in files
    # Ephemeral disk, CVMFS from the CernVM repository with a pinned key, WPAD, cache in /mnt.
    assert config["fs_setup"][0]["device"] == "ephemeral0"
    assert "cvmfs" in config["packages"]
    repo = config["yum_repos"]["cernvm"]
    assert repo["gpgcheck"] is True and "RPM-GPG-KEY-CernVM" in repo["gpgkey"]
    assert "FD80468D49B3B24C341741FC8CE0A76C497EA957" in config["bootcmd"][-1]
    local = files["/etc/cvmfs/default.local"]
    assert "CVMFS_CACHE_BASE=/mnt/cvmfs" in local and "wpad" in local
    assert "CVMFS_HTTP_PROXY='auto;DIRECT'" in local
    # The dirac user with its home on /mnt.
    dirac = next(u for u in config["users"] if isinstance(u, dict) and u["name"] == "dirac")
    assert dirac["homedir"] == "/mnt/dirac"
    assert "default" in config["users"]
    # Apptainer, extra packages, the pilot as dirac, then warn, wait and power off.
    runcmd = config["runcmd"]
    manager = "dnf" if family is TemplateFamily.EL9 else "yum"
    assert [manager, "install", "-y", "apptainer"] in runcmd
    if packages:
        assert [manager, "install", "-y", *packages] in runcmd
    else:
        assert not any(c[:3] == [manager, "install", "-y"] and len(c) > 4 for c in runcmd)
    boot = runcmd.index(["bash", "/var/lib/cloudpilot/boot.sh"])
    assert runcmd[boot + 1][0] == "wall"
    assert runcmd[boot + 2] == ["sleep", "300"]
    assert runcmd[-1] == ["poweroff"]
    boot_script = files["/var/lib/cloudpilot/boot.sh"]
    assert "/mnt/startup.sh" in boot_script and "runuser -u dirac" in boot_script
    assert 'export PILOT_UUID=%q\\n\' "cloud://$instance_id"' in boot_script
    assert "DIRAC_PILOT_STAMP" in boot_script
    assert ("X509_USER_PROXY" in boot_script) == bool(proxy)
    assert "/mnt/dirac/run_pilot.sh" in files["/var/lib/cloudpilot/startup.sh"]


def test_centos7_points_its_dead_mirrors_at_the_vault_and_archive() -> None:
    config = rendered_config(make_queue(template_family=TemplateFamily.CENTOS7))
    assert "vault.centos.org" in json.dumps(config["bootcmd"][0])
    assert "archive/epel/7" in config["yum_repos"]["epel"]["baseurl"]
    assert "70B9890488208E315ED45208230D389D8AE45CE7" in config["bootcmd"][-1]


def test_grace_period_and_lifetime_are_the_queues() -> None:
    config = rendered_config(make_queue(halt_grace_period=0, max_lifetime=86_400))
    assert not any(c[0] in ("wall", "sleep") for c in config["runcmd"])
    assert config["runcmd"][-1] == ["poweroff"]
    startup = files_of(config)["/var/lib/cloudpilot/startup.sh"]
    assert "timeout --kill-after=60 85500 " in startup  # 86,400 - 0 - 900 s for booting


@pytest.mark.parametrize("name", ["boot.sh.j2", "startup.sh.j2", "pilot-stamp.sh.j2"])
def test_shell_parts_are_valid_shell(name: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text(environment().get_template(name).render(variables()))
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_bootcmd_key_script_is_valid_posix_shell(tmp_path: Path) -> None:
    for family in TemplateFamily:
        config = rendered_config(make_queue(template_family=family))
        script = tmp_path / "bootcmd.sh"
        script.write_text("\n".join(c for c in config["bootcmd"] if isinstance(c, str)))
        for shell in SHELLS:
            subprocess.run([shell, "-n", str(script)], check=True)


def test_every_variable_is_documented() -> None:
    assert set(variables()) == set(DOCUMENTED)
    docs = (REPO / "docs" / "contextualisation.md").read_text()
    missing = [name for name in DOCUMENTED if f"`{name}`" not in docs]
    assert not missing, f"undocumented in docs/contextualisation.md: {missing}"


def test_no_executable_gives_a_pilot_that_fails_loudly() -> None:
    values = template_variables(
        make_queue(), namespace="grid", pool="pilots", pilot_executable=None
    )
    assert "executableSecret is not set" in values["pilot_executable"]


@pytest.mark.parametrize("bad", ["cloud\nexample", "tab\there", "bell\x07"])
def test_names_with_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(UserDataError, match="control character"):
        variables(make_queue(ce=bad))


# -- filters ----------------------------------------------------------------------------------

TRICKY = [
    "#!/bin/bash\necho hi\n",
    "no newline at the end",
    "two trailing newlines\n\n",
    "three\n\n\n",
    "\nleading blank line\n",
    "  leading spaces on the first line\n",
    "\tleading tab\n",
    "trailing spaces   \nand more  \n",
    "line\n   \n  whitespace-only line above\n",
    "tabs\tinside\n\tand at the start of a later line\n",
    "quotes ' \" and backslashes \\ \\n and ${shell} and {{ jinja }}\n",
    "unicode: héllo wörld ✓ 🚀\n",
    "controls: \x00 \x07 \x1b[0m \x7f \x85\n",
    "separators: \u2028 \u2029 \ufeff\n",
    "crlf\r\nline\r\n",
    "- looks like a list\n: and a key\n# and a comment\n",
    "%YAML 1.1\n--- \n...\n",
    "",
    "\n",
]


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("indent", [2, 6])
def test_yaml_block_round_trips(text: str, indent: int) -> None:
    doc = f"outer:\n  - path: /x\n    content: {yaml_block(text, indent + 0)}\n    after: 1\n"
    if indent < 6:  # under a list item the block must be deeper than the item's keys
        doc = f"content: {yaml_block(text, indent)}\nafter: 1\n"
        assert yaml.safe_load(doc) == {"content": text, "after": 1}
    else:
        assert yaml.safe_load(doc)["outer"][0] == {"path": "/x", "content": text, "after": 1}


def test_yaml_block_round_trips_random_text() -> None:
    rng = random.Random(42)
    alphabet = "ab \t\n\"'\\:#-{}%é\u2028\x00\x7f🚀\r"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        doc = f"k:\n  content: {yaml_block(text, 4)}\n  after: 1\n"
        assert yaml.safe_load(doc)["k"] == {"content": text, "after": 1}, repr(text)
        assert yaml.safe_load(f"v: {yaml_str(text)}\n") == {"v": text}, repr(text)


def test_readable_text_stays_a_literal_block() -> None:
    assert yaml_block("#!/bin/bash\necho hi\n", 6) == "|\n      #!/bin/bash\n      echo hi"
    assert yaml_block(PILOT_WRAPPER, 6).startswith("|\n      #!/bin/bash\n")


def test_sh_filter_quotes_and_refuses_line_breaks() -> None:
    assert render("{{ v | sh }}", {"v": "a b;c"}) == b"'a b;c'"
    with pytest.raises(UserDataError, match="control character"):
        render("{{ v | sh }}", {"v": "a\nb"}, name="t.j2")


def test_gzip_b64_filter_feeds_write_files_gz_b64() -> None:
    import base64
    import gzip

    out = render("{{ v | gzip_b64 }}", {"v": "hello"}).decode()
    assert gzip.decompress(base64.b64decode(out)) == b"hello"


# -- site templates and errors ----------------------------------------------------------------


def test_site_template_can_extend_the_default_and_fill_its_blocks() -> None:
    site = (
        '{% set cvmfs = dict(cvmfs, http_proxy="http://squid.example.org:3128") %}\n'
        '{% extends "el9.yaml.j2" %}\n'
        "{% block before_pilot %}\n"
        "  - [echo, {{ queue | yaml_str }}]\n"
        "{% endblock %}\n"
        "{% block extra_write_files %}\n"
        "  - path: /etc/site.conf\n"
        "    content: {{ ce | yaml_str }}\n"
        "{% endblock %}\n"
    )
    text = render(site, variables(), name="site.j2").decode()
    config = yaml.safe_load(text)
    assert (
        "CVMFS_HTTP_PROXY=http://squid.example.org:3128"
        in files_of(config)["/etc/cvmfs/default.local"]
    )
    assert files_of(config)["/etc/site.conf"] == "cloud.example.org"
    runcmd = config["runcmd"]
    boot = runcmd.index(["bash", "/var/lib/cloudpilot/boot.sh"])
    assert runcmd.index(["echo", "main"]) == boot - 1


def test_syntax_error_names_the_template_and_line() -> None:
    site = "#cloud-config\nruncmd:\n  - [echo, {{ queue }]\n"
    with pytest.raises(UserDataError) as info:
        render(
            site,
            variables(),
            name="configmap:grid/site:user-data",
            description="ConfigMap grid/site key user-data",
        )
    message = str(info.value)
    assert message.startswith("ConfigMap grid/site key user-data, line 3: syntax error")


def test_undefined_variable_names_the_template_and_line() -> None:
    site = "#cloud-config\nruncmd:\n  - [echo, ok]\n  - [echo, {{ queue_name }}]\n"
    with pytest.raises(UserDataError) as info:
        render(
            site, variables(), name="configmap:grid/site:k", description="ConfigMap grid/site key k"
        )
    assert str(info.value) == (
        "ConfigMap grid/site key k, line 4: undefined: 'queue_name' is undefined"
    )


def test_error_inside_an_included_template_names_that_template() -> None:
    values = variables()
    del values["pilot_timeout"]  # used by startup.sh.j2, included by pilot-vm.yaml.j2
    with pytest.raises(UserDataError) as info:
        render(
            '{% extends "el9.yaml.j2" %}',
            values,
            name="configmap:grid/site:k",
            description="ConfigMap grid/site key k",
        )
    message = str(info.value)
    assert "built-in template startup.sh.j2" in message
    assert "line 9" in message and "'pilot_timeout' is undefined" in message


def test_missing_include_is_reported() -> None:
    with pytest.raises(UserDataError, match=r"no template named 'nope\.j2'"):
        render('{% include "nope.j2" %}', variables(), description="ConfigMap a/b key c")


def test_sandbox_refuses_python_internals() -> None:
    with pytest.raises(UserDataError, match="unsafe"):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", variables(), name="t.j2")


@pytest.mark.parametrize(
    "template",
    [
        "{{ {}[pilot_executable] }}",
        "{{ {}[pilot_proxy] }}",
        "{{ pilot_executable.nope }}",
        "{{ pilot_proxy | attr(pilot_executable) }}",
        "{{ pilot_executable ~ {}[pilot_executable.splitlines()[40]] }}",
    ],
)
def test_errors_never_quote_secrets(template: str) -> None:
    values = variables(pilot_proxy=FAKE_PROXY_PEM)
    with pytest.raises(UserDataError) as info:
        render(
            template,
            values,
            name="t.j2",
            secrets=[values["pilot_executable"], values["pilot_proxy"]],
        )
    message = str(info.value)
    assert len(message) <= 300
    for secret in (PILOT_WRAPPER, FAKE_PROXY_PEM):
        for line in secret.splitlines():
            if len(line.strip()) >= 16:
                assert line.strip() not in message
                assert repr(line.strip())[1:-1] not in message


# -- the pilot stamp, on the VM -----------------------------------------------------------------


def test_stamp_rule_is_the_operators() -> None:
    assert PILOT_STAMP_PREFIX == "cloudpilot:" and PILOT_STAMP_LENGTH == 32
    import hashlib

    for instance_id in ("i-0123456789abcdef0", "3f2b-uuid", "1234567890123456789"):
        expected = hashlib.sha256(f"{PILOT_STAMP_PREFIX}{instance_id}".encode()).hexdigest()
        assert pilot_stamp(instance_id) == expected[:PILOT_STAMP_LENGTH]


@pytest.fixture
def stamp_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a controllable fake cloud-init first; nothing found anywhere by default."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "cloud-init"
    fake.write_text(
        '#!/bin/sh\n[ -n "$FAKE_INSTANCE_ID" ] || exit 1\n'
        '[ "$1 $2" = "query v1.instance_id" ] || exit 2\n'
        'printf "%s\\n" "$FAKE_INSTANCE_ID"\n'
    )
    fake.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CLOUDPILOT_INSTANCE_DATA": str(tmp_path / "no-instance-data.json"),
        "CLOUDPILOT_INSTANCE_ID_FILE": str(tmp_path / "no-instance-id"),
        "CLOUDPILOT_METADATA_URL": "http://127.0.0.1:9",  # discard port: refused at once
    }


def run_stamp(shell: str, env: dict[str, str], command: str) -> str:
    script = variables()["pilot_stamp_script"]
    result = subprocess.run(
        [shell, "-c", f"{script}\n{command}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "instance_id", ["i-0abc1234def567890", "8a3e6f1c-2b7d-4c9e-9f10-1a2b3c4d5e6f", "4521578"]
)
def test_shell_stamp_matches_naming_pilot_stamp(
    shell: str, instance_id: str, stamp_env: dict[str, str]
) -> None:
    env = {**stamp_env, "FAKE_INSTANCE_ID": instance_id}
    assert run_stamp(shell, env, "cloudpilot_instance_id") == instance_id
    out = run_stamp(shell, env, 'cloudpilot_pilot_stamp "$(cloudpilot_instance_id)"')
    assert out.strip() == pilot_stamp(instance_id)


@pytest.mark.parametrize("shell", SHELLS)
def test_instance_id_from_instance_data_then_cloud_dir(
    shell: str, stamp_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "instance-data.json"
    data.write_text(
        json.dumps(
            {
                "ds": {"meta_data": {"instance-id": "i-from-ds"}},
                "v1": {"instance-id": "i-from-json", "instance_id": "i-from-json"},
            },
            indent=1,
            sort_keys=True,
        )
    )
    env = {**stamp_env, "CLOUDPILOT_INSTANCE_DATA": str(data)}
    assert run_stamp(shell, env, "cloudpilot_instance_id") == "i-from-json"

    id_file = tmp_path / "instance-id"
    id_file.write_text("i-from-cloud-dir\n")
    env = {**stamp_env, "CLOUDPILOT_INSTANCE_ID_FILE": str(id_file)}
    assert run_stamp(shell, env, "cloudpilot_instance_id") == "i-from-cloud-dir"
    id_file.write_text("iid-datasource-none\n")
    assert run_stamp(shell, env, "cloudpilot_instance_id") == ""


class _Metadata(BaseHTTPRequestHandler):
    """EC2 IMDSv2 (token required) or OpenStack metadata, as the class attributes say."""

    openstack_uuid: str | None = None
    ec2_id = "i-0fromimds00000000"
    token = "tok-123"

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.openstack_uuid is None:
            self._reply(200, self.token)
        else:
            self._reply(404, "")

    def do_GET(self) -> None:
        if self.path == "/openstack/latest/meta_data.json" and self.openstack_uuid:
            self._reply(200, json.dumps({"uuid": self.openstack_uuid, "name": "vm"}))
        elif self.path == "/latest/meta-data/instance-id":
            if self.openstack_uuid:
                self._reply(200, "i-0000abcd")  # OpenStack's EC2-style id: the wrong one
            elif self.headers.get("X-aws-ec2-metadata-token") == self.token:
                self._reply(200, self.ec2_id)
            else:
                self._reply(401, "")
        else:
            self._reply(404, "")

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metadata_server() -> Iterator[tuple[str, type[_Metadata]]]:
    handler = type("Handler", (_Metadata,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
@pytest.mark.parametrize("shell", SHELLS)
def test_instance_id_from_the_metadata_service(
    shell: str, stamp_env: dict[str, str], metadata_server: tuple[str, type[_Metadata]]
) -> None:
    url, handler = metadata_server
    env = {**stamp_env, "CLOUDPILOT_METADATA_URL": url}
    assert run_stamp(shell, env, "cloudpilot_instance_id") == "i-0fromimds00000000"
    handler.openstack_uuid = "8a3e6f1c-2b7d-4c9e-9f10-1a2b3c4d5e6f"
    assert run_stamp(shell, env, "cloudpilot_instance_id") == handler.openstack_uuid


# -- the CernVM key pinning, on the VM ----------------------------------------------------------


@pytest.mark.skipif(not shutil.which("gpg"), reason="gpg is not installed")
@pytest.mark.parametrize("shell", SHELLS)
def test_cernvm_key_is_installed_only_with_the_pinned_fingerprint(
    shell: str, tmp_path: Path
) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--quiet"]
    subprocess.run(
        [
            *gpg,
            "--passphrase",
            "",
            "--quick-gen-key",
            "Test <t@example.org>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    key = tmp_path / "served-key.asc"
    key.write_bytes(
        subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True).stdout
    )
    listing = subprocess.run(
        [*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True
    ).stdout
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"  # "downloads" the served key: copies it to the -o target
    curl.write_text(
        f'#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done\ncp {key} "$out"\n'
    )
    curl.chmod(0o755)
    keys_dir = tmp_path / "rpm-gpg"

    def run(pinned: str) -> subprocess.CompletedProcess[str]:
        keys_dir.mkdir(exist_ok=True)
        values = variables(
            cernvm_gpg_keys=[
                {
                    "name": "RPM-GPG-KEY-Test",
                    "url": "https://keys.example.org/k",
                    "fingerprint": pinned,
                }
            ]
        )
        script = environment().get_template("cvmfs-keys.sh.j2").render(values)
        return subprocess.run(
            [shell, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CLOUDPILOT_RPM_GPG_DIR": str(keys_dir)},
        )

    wrong = run("0" * 40)
    assert not (keys_dir / "RPM-GPG-KEY-Test").exists()
    assert "fingerprint check failed" in wrong.stderr
    run(fingerprint)
    assert (keys_dir / "RPM-GPG-KEY-Test").read_bytes() == key.read_bytes()


def test_builtin_source_description() -> None:
    assert builtin("el9.yaml.j2").description == "built-in template el9.yaml.j2"


def test_end_to_end_helper_runs_the_stamp_the_payload_carries() -> None:
    from tests.support.pilot import stamp_on_vm

    queue = make_queue()
    payload = prepare_user_data(
        queue,
        builtin_for(queue),
        namespace="grid",
        pool="pilots",
        pilot_executable=PILOT_WRAPPER,
    ).payload
    assert payload[:2] == b"\x1f\x8b"  # EC2: gzip
    for instance_id in ("i-0abc1234def567890", "i-0fedcba9876543210"):
        assert stamp_on_vm(payload, instance_id) == (
            f"cloud://{instance_id}",
            pilot_stamp(instance_id),
        )
