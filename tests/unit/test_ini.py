"""``cloud.auth`` parsing: the seed's cases, configparser semantics, and errors without values."""

from __future__ import annotations

import configparser

import pytest

from cloudpilot.credentials import ini
from cloudpilot.credentials.errors import CloudAuthError
from cloudpilot.models.queues import ConfigError

ORIGIN = "key 'cloud.auth' of Secret ns/cloud-auth"

SEED = """\
[DEFAULT]
key = "myusername"
secret = "mypassword"

[cloudprov.mysite.example]
key = "cloudprovuser"
secret = "01234567"

[fedcloud.othersite.example]
key = "fedclouduser"
secret = "PROXY"
"""

LEAKY = "Zz-distinctive-ini-secret-7781"


def read(text: str, ce: str) -> ini.AuthEntry:
    return ini.read_cloud_auth(text, ce, origin=ORIGIN)


def test_seed_default_only() -> None:
    entry = read("[DEFAULT]\nkey = user\nsecret = pass\n", "any.host.example")
    assert (entry.section, entry.key, entry.secret) == ("DEFAULT", "user", "pass")


def test_seed_ce_section_wins() -> None:
    entry = read(SEED, "cloudprov.mysite.example")
    assert entry.section == "cloudprov.mysite.example"
    assert (entry.key, entry.secret) == ("cloudprovuser", "01234567")
    assert (entry.key_section, entry.secret_section) == ("cloudprov.mysite.example",) * 2


def test_seed_unknown_ce_falls_back_to_default() -> None:
    entry = read(SEED, "other.host.example")
    assert (entry.section, entry.key, entry.secret) == ("DEFAULT", "myusername", "mypassword")


def test_partial_ce_section_inherits_default_secret() -> None:
    text = "[DEFAULT]\nkey = u\nsecret = inherited-pass\n\n[ce.example]\nkey = own-user\n"
    entry = read(text, "ce.example")
    assert (entry.key, entry.secret) == ("own-user", "inherited-pass")
    assert (entry.key_section, entry.secret_section) == ("ce.example", "DEFAULT")


def test_proxy_marker() -> None:
    entry = read(SEED, "fedcloud.othersite.example")
    assert entry.uses_proxy
    assert entry.key == "fedclouduser"
    assert not read(SEED, "cloudprov.mysite.example").uses_proxy


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('"quoted"', "quoted"),
        ("'single'", "single"),
        ('  "spaced"  ', "spaced"),
        ("bare", "bare"),
        ('"', '"'),
        ("\"mis'", "\"mis'"),
        ('""inner""', '"inner"'),
        ("", ""),
    ],
)
def test_unquote(raw: str, value: str) -> None:
    assert ini.unquote(raw) == value


def test_configparser_semantics_are_kept() -> None:
    text = "[DEFAULT]\nKey: upper-case-name\nsecret = a;b#c%%d\n# comment\n; comment\n"
    entry = read(text, "x")
    assert entry.key == "upper-case-name"  # option names are case-insensitive
    assert entry.secret == "a;b#c%d"  # no inline comments; %% is a literal % (as in DIRAC)


def test_section_name_case_is_forgiven_for_host_names() -> None:
    text = "[DEFAULT]\nkey = d\nsecret = d\n[CloudProv.MySite.Example]\nkey = k\nsecret = s\n"
    assert read(text, "cloudprov.mysite.example").key == "k"


def test_round_trip_of_rendered_entry() -> None:
    awkward = '"quoted" 100% ;#\''
    text = ini.render_entry("ce.example", "user", awkward)
    assert read(text, "ce.example").secret == awkward


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key = {LEAKY}\n", "line 1 comes before any [section] header"),
        (f"[DEFAULT]\nkey = k\n{LEAKY}\n", "cannot parse line(s) 3"),
        (f"[a]\nkey = {LEAKY}\n[a]\nkey = k\n", "section [a] appears twice (line 3)"),
        (f"[a]\nsecret = {LEAKY}\nsecret = x\n", "option 'secret' appears twice in section [a]"),
        (f"[DEFAULT]\nkey = k\nsecret = {LEAKY}%x\n", "has a bad '%'"),
        (f"[DEFAULT]\nkey = k\nsecret = %({LEAKY})s\n", "has a bad '%'"),
    ],
)
def test_malformed_ini_errors_name_the_place_never_the_value(text: str, expected: str) -> None:
    with pytest.raises(CloudAuthError) as caught:
        read(text, "ce.example")
    message = str(caught.value)
    assert expected in message
    assert message.startswith(ORIGIN)
    assert LEAKY not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert isinstance(caught.value, ConfigError)


def test_missing_options_name_section_and_option() -> None:
    with pytest.raises(CloudAuthError, match=r"section \[ce.example\] has no 'secret' and"):
        read(f"[ce.example]\nkey = {LEAKY}\n", "ce.example")
    with pytest.raises(CloudAuthError) as caught:
        read(f"[other.example]\nkey = {LEAKY}\nsecret = x\n", "ce.example")
    assert "no section [ce.example] and [DEFAULT] has no 'key'" in str(caught.value)
    assert "[other.example]" in str(caught.value)
    assert LEAKY not in str(caught.value)


def test_empty_values_are_errors() -> None:
    with pytest.raises(CloudAuthError, match=r"option 'secret' in section \[DEFAULT\] is empty"):
        read('[DEFAULT]\nkey = k\nsecret = ""\n[ce]\nkey = x\n', "ce")


def test_sensitive_values_cover_every_section_unquoted() -> None:
    auth = ini.parse_cloud_auth(SEED, origin=ORIGIN)
    values = set(ini.sensitive_values(auth))
    assert {"myusername", "mypassword", "cloudprovuser", "01234567", "fedclouduser"} <= values
    assert "PROXY" not in values


def test_same_choice_as_diracs_own_reader() -> None:
    """DIRAC: ConfigParser(); section = CE if present else DEFAULT; values kept quoted."""
    for ce in ("cloudprov.mysite.example", "fedcloud.othersite.example", "nowhere"):
        dirac = configparser.ConfigParser()
        dirac.read_string(SEED)
        section = ce if ce in dirac else "DEFAULT"
        ours = read(SEED, ce)
        assert ours.key == dirac[section]["key"].strip('"')
        assert ours.secret == dirac[section]["secret"].strip('"')
