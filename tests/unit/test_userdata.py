"""The user-data pipeline: reading, checking, size limits and gzip, caching, secrecy."""

from __future__ import annotations

import base64
import gzip
import random
from dataclasses import replace
from typing import Any

import pytest
import yaml

from cloudpilot.context import (
    LIMITS,
    Provider,
    RenderedUserData,
    UserDataError,
    build_user_data,
    check_user_data,
    fit,
    prepare_user_data,
    provider_for,
    size_limit,
    templating,
    userdata,
)
from cloudpilot.context.errors import MissingPilotExecutableError
from cloudpilot.context.limits import base64_length, decode_payload, gzip_bytes
from cloudpilot.context.userdata import clear_cache
from cloudpilot.kube.secrets import MissingReferenceError
from cloudpilot.models.queues import CloudAccount, ConfigError, Lookup, QueueConfig
from cloudpilot.models.spec import ConfigMapKeyRef, SecretKeyRef, TemplateFamily
from tests.support.pilot import FAKE_PROXY_PEM, PILOT_WRAPPER

EXECUTABLE = SecretKeyRef(name="pilot", key="wrapper.sh")
PROXY = SecretKeyRef(name="pilot", key="proxy.pem")


def make_queue(cloud_type: str = "ec2", **changes: Any) -> QueueConfig:
    queue = QueueConfig(
        pool_namespace="grid",
        pool_name="pilots",
        name="main",
        replicas=3,
        ce="cloud.example.org",
        account=CloudAccount(cloud_type, (), "creds", "grid"),
        image=Lookup(False, "ami-1"),
        flavor=Lookup(False, "t3.large"),
        executable_secret=EXECUTABLE,
    )
    return replace(queue, **changes)


class FakeCluster:
    """The two readers build_user_data takes, over in-memory Secrets and ConfigMaps."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {
            ("grid", "pilot"): {
                "wrapper.sh": PILOT_WRAPPER.encode(),
                "proxy.pem": FAKE_PROXY_PEM.encode(),
            }
        }
        self.configmaps: dict[tuple[str, str], dict[str, str]] = {}
        self.reads = 0

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        self.reads += 1
        if (namespace, name) not in self.secrets:
            raise MissingReferenceError(f"Secret {namespace}/{name} not found")
        return self.secrets[(namespace, name)]

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        if (namespace, name) not in self.configmaps:
            raise MissingReferenceError(f"ConfigMap {namespace}/{name} not found")
        return self.configmaps[(namespace, name)]

    async def build(self, queue: QueueConfig) -> RenderedUserData:
        return await build_user_data(
            queue,
            namespace="grid",
            pool="pilots",
            read_secret=self.read_secret,
            read_configmap=self.read_configmap,
        )


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


# -- providers and limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cloud_type", "provider"),
    [
        ("ec2", Provider.EC2),
        ("EC2", Provider.EC2),
        ("mysite.drivers.PatchedEC2NodeDriver", Provider.EC2),
        ("cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver", Provider.EC2),
        ("OPENSTACK", Provider.OPENSTACK),
        ("libcloud.compute.drivers.openstack.OpenStack_2_NodeDriver", Provider.OPENSTACK),
        ("gce", Provider.GCE),
        ("AZURE_ARM", Provider.AZURE),
        ("CLOUDSTACK", Provider.OTHER),
    ],
)
def test_provider_from_cloud_type(cloud_type: str, provider: Provider) -> None:
    assert provider_for(cloud_type) is provider


def test_known_limits() -> None:
    assert (LIMITS[Provider.EC2].limit, LIMITS[Provider.EC2].after_base64) == (16_384, False)
    assert (LIMITS[Provider.OPENSTACK].limit, LIMITS[Provider.OPENSTACK].after_base64) == (
        65_535,
        True,
    )
    assert (LIMITS[Provider.GCE].limit, LIMITS[Provider.GCE].gzip_allowed) == (262_144, False)
    assert LIMITS[Provider.AZURE].limit == base64_length(65_535) == 87_380


def test_user_data_limit_overrides_keeping_the_providers_measure() -> None:
    limit = size_limit("OPENSTACK", 32_768)
    assert (limit.limit, limit.after_base64, limit.overridden) == (32_768, True, True)
    assert "(context.userDataLimit)" in limit.describe()
    assert size_limit("CLOUDSTACK", 32_768).limit == 32_768
    assert size_limit("CLOUDSTACK").limit == 16_384


def _incompressible(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _compressible(size: int) -> bytes:
    return (b"#cloud-config\n" + b"runcmd: []\n" * size)[:size]


def _raw_size_for(limit: int, after_base64: bool) -> int:
    """The largest raw size whose measure is still within the limit."""
    if not after_base64:
        return limit
    return max(
        n for n in range(limit * 3 // 4 - 3, limit * 3 // 4 + 3) if base64_length(n) <= limit
    )


@pytest.mark.parametrize("provider", list(Provider))
def test_plain_data_just_under_and_just_over_each_limit(provider: Provider) -> None:
    limit = LIMITS[provider]
    largest = _raw_size_for(limit.limit, limit.after_base64)

    at = fit(_compressible(largest), limit, template="t")
    assert not at.compressed and at.payload == _compressible(largest)
    assert limit.measure(at.payload) <= limit.limit

    over = _compressible(largest + 1)
    assert limit.measure(over) > limit.limit
    if limit.gzip_allowed:
        packed = fit(over, limit, template="t")
        assert packed.compressed and gzip.decompress(packed.payload) == over
        assert packed.raw_size == largest + 1 and packed.sent_size == len(packed.payload)
    else:
        with pytest.raises(UserDataError, match=r"cannot take gzip"):
            fit(over, limit, template="t")


def _gzip_to(target: int, after_base64: bool) -> bytes:
    """Data too big to send plain whose gzip measures as close to ``target`` as the
    measure allows: random bytes (they do not compress) followed by zeros (they vanish)."""
    measure = base64_length if after_base64 else (lambda n: n)

    def data(random_part: int) -> bytes:
        return _incompressible(random_part) + bytes(target)

    size = target * 3 // 4 if after_base64 else target
    while measure(len(gzip_bytes(data(size)))) > target:
        size -= 1
    return data(size)


@pytest.mark.parametrize("provider", [p for p in Provider if LIMITS[p].gzip_allowed])
def test_gzip_just_under_and_just_over_each_limit(provider: Provider) -> None:
    limit = LIMITS[provider]
    fitting = _gzip_to(limit.limit, limit.after_base64)
    assert limit.measure(fitting) > limit.limit
    result = fit(fitting, limit, template="built-in template el9.yaml.j2")
    assert result.compressed and limit.measure(result.payload) <= limit.limit
    assert limit.limit - limit.measure(result.payload) < 4  # as close as the measure goes

    random_part = len(fitting) - limit.limit
    too_big = _incompressible(random_part + 3) + bytes(limit.limit)
    with pytest.raises(UserDataError) as info:
        fit(too_big, limit, template="built-in template el9.yaml.j2")
    message = str(info.value)
    packed = limit.measure(gzip_bytes(too_big))
    assert packed > limit.limit
    assert f"is {packed:,} bytes" in message and "after gzip" in message
    assert f"accepts {limit.limit:,} bytes" in message
    assert message.startswith("user data of built-in template el9.yaml.j2")


def test_size_message_reads_as_the_issue_asks() -> None:
    with pytest.raises(UserDataError) as info:
        fit(_incompressible(23_400), LIMITS[Provider.EC2], template="built-in template el9.yaml.j2")
    assert str(info.value).startswith("user data of built-in template el9.yaml.j2 is 23,4")
    assert str(info.value).endswith("after gzip (23,400 plain); EC2 accepts 16,384 bytes")


def test_gzip_is_deterministic_and_cloud_init_readable() -> None:
    data = _compressible(40_000)
    assert gzip_bytes(data) == gzip_bytes(data)
    assert decode_payload(gzip_bytes(data)) == data
    assert decode_payload(data) == data


# -- the pipeline -----------------------------------------------------------------------------


async def test_realistic_wrapper_fits_ec2_with_the_default_template(cluster: FakeCluster) -> None:
    for family in TemplateFamily:
        for proxy in (None, PROXY):
            queue = make_queue(template_family=family, proxy_secret=proxy, ext_packages=("htop",))
            result = await cluster.build(queue)
            assert result.compressed, "a 12.5 KB wrapper plus the template needs gzip on EC2"
            assert result.sent_size <= 16_384 < result.raw_size
            assert result.sent_size == len(result.payload)
            config = yaml.safe_load(gzip.decompress(result.payload))
            files = {f["path"]: f["content"] for f in config["write_files"]}
            assert files["/var/lib/cloudpilot/run_pilot.sh"] == PILOT_WRAPPER


async def test_openstack_sends_the_same_user_data_plain(cluster: FakeCluster) -> None:
    result = await cluster.build(make_queue("OPENSTACK"))
    assert not result.compressed
    assert result.payload.startswith(b"#cloud-config\n")
    assert base64_length(result.sent_size) <= 65_535
    assert result.summary.startswith("plain: ")


async def test_secret_values_cover_wrapper_and_proxy_and_redaction_masks_the_transport_form(
    cluster: FakeCluster,
) -> None:
    from cloudpilot import redaction

    result = await cluster.build(make_queue(proxy_secret=PROXY))
    assert PILOT_WRAPPER in result.secret_values
    assert FAKE_PROXY_PEM in result.secret_values
    assert PILOT_WRAPPER[:50] not in repr(result)
    # The payload as it travels (base64), whole or in part, is masked without registering.
    transport = base64.b64encode(result.payload).decode()
    assert transport not in redaction.redact(f"echo: {transport}")
    assert transport[100:400] not in redaction.redact(f"echo: {transport[100:400]}")


async def test_rendered_once_and_cached_by_inputs(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = userdata.render_source

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(userdata, "render_source", counting)
    queue = make_queue()
    first = await cluster.build(queue)
    second = await cluster.build(queue)
    assert first.payload == second.payload and len(calls) == 1
    changed = PILOT_WRAPPER.replace("DIRAC", "LHCb").encode()
    cluster.secrets[("grid", "pilot")]["wrapper.sh"] = changed
    third = await cluster.build(queue)
    assert third.payload != first.payload and len(calls) == 2
    await cluster.build(replace(queue, ext_packages=("htop",)))
    assert len(calls) == 3


async def test_site_template_from_a_configmap(cluster: FakeCluster) -> None:
    cluster.configmaps[("grid", "site")] = {
        "user-data": '{% extends "el9.yaml.j2" %}\n{% block after_pilot %}\n'
        "  - [echo, {{ queue | yaml_str }}]\n{% endblock %}\n"
    }
    queue = make_queue("OPENSTACK", template=ConfigMapKeyRef(name="site", key="user-data"))
    result = await cluster.build(queue)
    assert result.template == "ConfigMap grid/site key user-data"
    assert ["echo", "main"] in yaml.safe_load(result.payload)["runcmd"]


async def test_broken_site_template_is_refused_with_template_and_line(
    cluster: FakeCluster,
) -> None:
    cluster.configmaps[("grid", "site")] = {"k": "#cloud-config\nruncmd:\n  - {{ stamp }}\n"}
    with pytest.raises(UserDataError) as info:
        await cluster.build(make_queue(template=ConfigMapKeyRef(name="site", key="k")))
    assert str(info.value) == "ConfigMap grid/site key k, line 3: undefined: 'stamp' is undefined"
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("#!/bin/bash\necho hi\n", "must start with a '#cloud-config' line"),
        ("#cloud-config\n- a\n- b\n", "must be a YAML mapping"),
        ("#cloud-config\n", "must be a YAML mapping after '#cloud-config', not nothing"),
        ("#cloud-config\nruncmd: [echo\nwrite_files: 3\n", "is not valid YAML at line"),
        ("#cloud-config\nruncmd: echo hi\n", "runcmd must be a list"),
        ("#cloud-config\nwrite_files:\n  - content: x\n", "write_files[0] needs a path"),
    ],
)
async def test_invalid_output_is_refused(
    cluster: FakeCluster, template: str, expected: str
) -> None:
    cluster.configmaps[("grid", "site")] = {"k": template}
    with pytest.raises(UserDataError) as info:
        await cluster.build(make_queue(template=ConfigMapKeyRef(name="site", key="k")))
    assert expected in str(info.value)
    assert "ConfigMap grid/site key k" in str(info.value)


async def test_yaml_errors_do_not_quote_the_offending_line(cluster: FakeCluster) -> None:
    template = "#cloud-config\nwrite_files:\n  - path: /x\n    content: {{ pilot_executable }}\n"
    cluster.configmaps[("grid", "site")] = {"k": template}
    with pytest.raises(UserDataError) as info:
        await cluster.build(make_queue(template=ConfigMapKeyRef(name="site", key="k")))
    message = str(info.value)
    assert "not valid YAML" in message
    for line in PILOT_WRAPPER.splitlines():
        if len(line.strip()) >= 16:
            assert line.strip() not in message


MULTIPART = """Content-Type: multipart/mixed; boundary="==BOUNDARY=="
MIME-Version: 1.0

--==BOUNDARY==
Content-Type: text/cloud-config; charset="utf-8"
MIME-Version: 1.0

runcmd:
  - [bash, /var/lib/site/run.sh]
write_files:
  - path: /var/lib/site/run.sh
    content: {{ pilot_executable | yaml_block(6) }}

--==BOUNDARY==
Content-Type: text/x-shellscript; charset="utf-8"
MIME-Version: 1.0

#!/bin/sh
echo {{ queue | sh }}
--==BOUNDARY==--
"""


async def test_a_site_may_choose_mime_multipart(cluster: FakeCluster) -> None:
    cluster.configmaps[("grid", "site")] = {"k": MULTIPART}
    result = await cluster.build(make_queue(template=ConfigMapKeyRef(name="site", key="k")))
    assert result.sent_size <= 16_384
    assert check_user_data(decode_payload(result.payload), template="t") == "multipart"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("text/cloud-config", "application/json"), "type application/json"),
        (("runcmd:", "runcmd: [oops"), "MIME part 1 is not valid YAML"),
        (('boundary="==BOUNDARY=="', 'boundary="other"'), "not multipart|not a well-formed"),
    ],
)
def test_broken_multipart_is_refused(change: tuple[str, str], expected: str) -> None:
    text = MULTIPART.replace("{{ pilot_executable | yaml_block(6) }}", "x").replace(
        "{{ queue | sh }}", "q"
    )
    with pytest.raises(UserDataError, match=expected):
        check_user_data(text.replace(*change).encode(), template="t")


async def test_too_big_names_size_and_limit_but_no_secret(cluster: FakeCluster) -> None:
    queue = make_queue(user_data_limit=4_096)
    with pytest.raises(UserDataError) as info:
        await cluster.build(queue)
    message = str(info.value)
    assert "after gzip" in message
    assert message.endswith("EC2 accepts 4,096 bytes (context.userDataLimit)")
    assert "run_pilot" not in message and "BEGIN" not in message


async def test_just_around_an_override_measured_on_the_real_pipeline(
    cluster: FakeCluster,
) -> None:
    queue = make_queue()
    sent = (await cluster.build(queue)).sent_size
    exact = await cluster.build(replace(queue, user_data_limit=sent))
    assert exact.compressed and exact.sent_size == sent
    with pytest.raises(UserDataError, match=f"is {sent:,} bytes after gzip"):
        await cluster.build(replace(queue, user_data_limit=sent - 1))


async def test_missing_references_are_config_errors(cluster: FakeCluster) -> None:
    with pytest.raises(UserDataError, match=r"Secret grid/pilot has no key 'nope' \(keys: "):
        await cluster.build(make_queue(executable_secret=SecretKeyRef(name="pilot", key="nope")))
    with pytest.raises(MissingReferenceError, match="Secret grid/other not found"):
        await cluster.build(make_queue(executable_secret=SecretKeyRef(name="other", key="x")))
    with pytest.raises(MissingReferenceError, match="ConfigMap grid/site not found"):
        await cluster.build(make_queue(template=ConfigMapKeyRef(name="site", key="k")))
    cluster.configmaps[("grid", "site")] = {"other": ""}
    with pytest.raises(UserDataError, match=r"ConfigMap grid/site has no key 'k' \(keys: other\)"):
        await cluster.build(make_queue(template=ConfigMapKeyRef(name="site", key="k")))


async def test_binary_executable_is_refused_without_quoting_it(cluster: FakeCluster) -> None:
    cluster.secrets[("grid", "pilot")]["wrapper.sh"] = b"\xff\xfe binary"
    with pytest.raises(UserDataError) as info:
        await cluster.build(make_queue())
    assert str(info.value) == "Secret grid/pilot key wrapper.sh is not UTF-8 text"


def test_render_is_a_pure_function() -> None:
    assert templating.render("{{ a }}-{{ b | yaml_str }}", {"a": 1, "b": 'x"y'}) == b'1-"x\\"y"'


def test_prepare_user_data_without_executable_uses_the_failing_stub() -> None:
    queue = make_queue(executable_secret=None)
    result = prepare_user_data(
        queue, userdata.builtin_for(queue), namespace="grid", pool="pilots", pilot_executable=None
    )
    assert "executableSecret is not set" in result.text
    assert result.secret_values == []


@pytest.mark.parametrize("family", list(TemplateFamily))
async def test_no_executable_for_a_builtin_template_is_refused_before_any_vm(
    cluster: FakeCluster, family: TemplateFamily
) -> None:
    """The stub would boot, fail and be replaced for ever: the operator refuses instead."""
    queue = make_queue(executable_secret=None, template_family=family)
    with pytest.raises(MissingPilotExecutableError) as info:
        await cluster.build(queue)
    assert "spec.pilot.executableSecret is not set" in str(info.value)
    assert f"built-in template {family.value}.yaml.j2" in str(info.value)
    assert isinstance(info.value, ConfigError)


async def test_a_site_template_that_includes_the_builtin_needs_an_executable(
    cluster: FakeCluster,
) -> None:
    cluster.configmaps[("grid", "site")] = {"k": '{% extends "el9.yaml.j2" %}\n'}
    queue = make_queue(executable_secret=None, template=ConfigMapKeyRef(name="site", key="k"))
    with pytest.raises(MissingPilotExecutableError, match="ConfigMap grid/site key k"):
        await cluster.build(queue)


async def test_a_site_template_that_starts_its_own_pilot_needs_no_executable(
    cluster: FakeCluster,
) -> None:
    cluster.configmaps[("grid", "site")] = {
        "k": "#cloud-config\nruncmd:\n  - [curl, -o, /p.sh, https://pilots.example/p.sh]\n"
    }
    queue = make_queue(executable_secret=None, template=ConfigMapKeyRef(name="site", key="k"))
    assert (await cluster.build(queue)).payload


@pytest.mark.parametrize(
    ("text", "uses"),
    [
        ("{{ pilot_executable }}", True),
        ('{% include "el9.yaml.j2" %}', True),
        ("{% include name_from_a_variable %}", True),
        ("{% set pilot_executable = 'x' %}{{ pilot_executable }}", False),
        ("#cloud-config\n{{ queue }}", False),
        ("{% if %}", True),
    ],
    ids=["direct", "included", "dynamic-include", "set-locally", "unused", "syntax-error"],
)
def test_uses_variable_follows_includes(text: str, uses: bool) -> None:
    source = templating.site_template("grid", "site", "k", text)
    assert templating.uses_variable(source, "pilot_executable") is uses
