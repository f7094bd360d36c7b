"""Credentials from a pool's Secret: both formats, PROXY, rotation, errors and leaks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudpilot import redaction
from cloudpilot.cloud.gateway import Credentials
from cloudpilot.credentials.errors import (
    CloudAuthError,
    CredentialsError,
    ProxyUnavailableError,
)
from cloudpilot.credentials.proxyfiles import ProxyFileStore
from cloudpilot.credentials.resolve import ResolvedCredentials, credentials_from_secret
from cloudpilot.kube.secrets import MissingReferenceError
from cloudpilot.models.queues import ConfigError

CE = "cloudprov.mysite.example"
KEY = "Kk-distinctive-access-key-4410"
SECRET = "Ss-distinctive-cloud-secret-9923"
OTHER_SECRET = "Oo-other-ce-secret-5531"
PROXY_PEM = (
    b"-----BEGIN CERTIFICATE-----\nPp-distinctive-proxy-body-1234567890\n"
    b"-----END CERTIFICATE-----\n"
)

CLOUD_AUTH = f"""\
[DEFAULT]
key = "default-user"
secret = "{OTHER_SECRET}"

[{CE}]
key = "{KEY}"
secret = "{SECRET}"

[fedcloud.othersite.example]
key = "fedclouduser"
secret = "PROXY"
""".encode()

DISTINCTIVE = (KEY, SECRET, OTHER_SECRET, "Pp-distinctive-proxy-body")


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """The redaction registry is process-wide: leave it as this test found it."""
    before = set(redaction._secrets)
    yield
    for owner in set(redaction._secrets) - before:
        redaction.forget(owner)


def resolve(data: dict[str, bytes], ce: str = CE, **kwargs: object) -> ResolvedCredentials:
    return credentials_from_secret(
        data,
        ce=ce,
        namespace="ns",
        secret_name="cloud-auth",
        **kwargs,  # type: ignore[arg-type]
    )


def assert_clean(text: str) -> None:
    for value in DISTINCTIVE:
        assert value not in text


def test_key_and_secret_format() -> None:
    creds = resolve({"key": f"{KEY}\n".encode(), "secret": f" {SECRET}\n".encode()})
    assert isinstance(creds, Credentials)
    assert (creds.key, creds.secret) == (KEY, SECRET)
    assert creds.origin == "Secret ns/cloud-auth"
    assert not creds.uses_proxy


def test_key_only_is_allowed_for_single_token_drivers() -> None:
    assert resolve({"key": b"token"}).secret is None


def test_cloud_auth_format_uses_the_ce_section() -> None:
    creds = resolve({"cloud.auth": CLOUD_AUTH})
    assert (creds.key, creds.secret) == (KEY, SECRET)
    assert creds.origin == f"Secret ns/cloud-auth, key 'cloud.auth', section [{CE}]"


def test_cloud_auth_default_for_other_ces() -> None:
    creds = resolve({"cloud.auth": CLOUD_AUTH}, ce="unknown.example")
    assert (creds.key, creds.secret) == ("default-user", OTHER_SECRET)


def test_proxy_secret_becomes_a_private_file(tmp_path: Path) -> None:
    store = ProxyFileStore(tmp_path / "proxies", remove_at_exit=False)
    provider = store.provider("ns/pool", "cloud-auth", "ns/pilot:proxy", PROXY_PEM)
    creds = resolve(
        {"cloud.auth": CLOUD_AUTH}, ce="fedcloud.othersite.example", proxy_path_provider=provider
    )
    assert creds.key == "fedclouduser"
    assert creds.uses_proxy
    assert creds.secret is not None
    assert Path(creds.secret).read_bytes() == PROXY_PEM
    assert Path(creds.secret).stat().st_mode & 0o777 == 0o600
    store.close()


def test_proxy_in_key_secret_format(tmp_path: Path) -> None:
    store = ProxyFileStore(tmp_path / "proxies", remove_at_exit=False)
    creds = resolve(
        {"key": b"fedclouduser", "secret": b"PROXY"},
        proxy_path_provider=store.provider("ns/pool", "c", "ns/pilot:proxy", PROXY_PEM),
    )
    assert creds.secret == str(store.path_of("ns/pilot:proxy"))
    store.close()


def test_provider_is_not_called_without_proxy() -> None:
    def provider() -> str:
        raise AssertionError("the proxy file must not be written")

    resolve({"cloud.auth": CLOUD_AUTH}, proxy_path_provider=provider)


def test_proxy_without_a_pilot_proxy_is_a_clear_error() -> None:
    with pytest.raises(ProxyUnavailableError) as caught:
        resolve({"cloud.auth": CLOUD_AUTH}, ce="fedcloud.othersite.example")
    message = str(caught.value)
    assert "section [fedcloud.othersite.example]" in message
    assert "spec.pilot.proxySecret" in message


def test_rotation_changes_the_fingerprint(tmp_path: Path) -> None:
    before = resolve({"key": KEY.encode(), "secret": SECRET.encode()})
    after = resolve({"key": KEY.encode(), "secret": b"rotated-secret-0001"})
    assert before.fingerprint != after.fingerprint
    same = resolve({"cloud.auth": f"[DEFAULT]\nkey={KEY}\nsecret={SECRET}\n".encode()})
    assert same.fingerprint == before.fingerprint  # format does not matter, values do

    store = ProxyFileStore(tmp_path / "p", remove_at_exit=False)
    data = {"key": b"u", "secret": b"PROXY"}
    first = resolve(data, proxy_path_provider=store.provider("o", "p", "s", PROXY_PEM))
    renewed = resolve(data, proxy_path_provider=store.provider("o", "p", "s", PROXY_PEM + b"\n"))
    assert first.secret == renewed.secret  # same path ...
    assert first.fingerprint != renewed.fingerprint  # ... but a renewed proxy is new credentials
    store.close()


# -- errors: which Secret, which key, which section; never the value --------------------------


@pytest.mark.parametrize(
    ("data", "error", "expected"),
    [
        (
            {},
            MissingReferenceError,
            "Secret ns/cloud-auth has neither key 'key' nor 'cloud.auth' (keys: none)",
        ),
        ({"secret": SECRET.encode()}, MissingReferenceError, "(keys: secret)"),
        ({"key": b"  "}, CredentialsError, "key 'key' is empty"),
        ({"key": b"\xff" + KEY.encode()}, CredentialsError, "key 'key' is not UTF-8 text"),
        ({"cloud.auth": CLOUD_AUTH, "key": KEY.encode()}, CredentialsError, "keep one format"),
        (
            {"cloud.auth": f"secret = {SECRET}".encode()},
            CloudAuthError,
            "key 'cloud.auth' of Secret ns/cloud-auth: line 1 comes before",
        ),
        (
            {"cloud.auth": f"[{CE}]\nsecret = {SECRET}\n".encode()},
            CloudAuthError,
            f"section [{CE}] has no 'key'",
        ),
    ],
)
def test_errors_are_config_errors_without_values(
    data: dict[str, bytes], error: type[Exception], expected: str
) -> None:
    with pytest.raises(error) as caught:
        resolve(data)
    assert isinstance(caught.value, ConfigError)
    assert expected in str(caught.value)
    assert_clean(str(caught.value))
    assert_clean(repr(caught.value))


# -- nothing leaks -----------------------------------------------------------------------------


def test_repr_and_str_hide_the_values() -> None:
    creds = resolve({"cloud.auth": CLOUD_AUTH})
    for text in (repr(creds), str(creds), f"{creds}", repr([creds]), repr({"c": creds})):
        assert_clean(text)
        assert "fingerprint=" in text


def test_short_values_with_a_newline_are_masked() -> None:
    resolve({"key": b"shortkey\n", "secret": b"pw-1234\n"})
    assert redaction.redact("rejected shortkey / pw-1234") == "rejected *** / ***"


def test_logs_never_show_secrets(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """What the reconciler logs around credentials, with the operator's filter installed:
    the objects themselves, failures, and a cloud error that echoes the secret back."""
    caplog.handler.addFilter(redaction.RedactingFilter())
    log = logging.getLogger("cloudpilot.test")
    with caplog.at_level(logging.DEBUG):
        creds = resolve({"cloud.auth": CLOUD_AUTH})
        log.info("resolved %s", creds)
        log.debug("credentials %r", creds)
        # libcloud-style error messages that quote what was sent
        log.warning("auth failed for user %s with password %s", creds.key, creds.secret)
        log.warning("the DEFAULT section's secret %s was rejected", OTHER_SECRET)
        for data in ({"key": b"\xff"}, {"cloud.auth": f"[x]\n{SECRET}\n".encode()}):
            try:
                resolve(data)
            except ConfigError:
                log.exception("cannot read credentials")
        store = ProxyFileStore(tmp_path / "p", remove_at_exit=False)
        store.write("ns/pool", "c", "ns/pilot:proxy", PROXY_PEM)
        log.error("proxy content was %s", PROXY_PEM.decode())
        store.close()
    assert caplog.records
    assert_clean(caplog.text)
    for record in caplog.records:
        assert_clean(record.getMessage())
