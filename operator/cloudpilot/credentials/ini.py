"""``cloud.auth``, DIRAC's credentials ini, read the way DIRAC reads it, but safely.

DIRAC reads the file with a plain :class:`configparser.ConfigParser`: the section named
after the CE host if there is one, else ``DEFAULT``; a CE section that lacks ``key`` or
``secret`` inherits DEFAULT's (configparser's own fallback). The same parser is used here,
with the same interpolation (a site's working file may contain ``%%``), so every file that
worked for DIRAC means the same thing here. Two things differ on purpose:

* quotes around a value, as in the seed's own example (``secret = "01234567"``), are taken
  off: DIRAC kept them and sent ``"01234567"``, quotes included, to the cloud;
* every error names the Secret key, the section and the option, and never the value:
  configparser's own messages quote the offending line, which is the password.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from dataclasses import dataclass, field

from cloudpilot.credentials.errors import CloudAuthError

DEFAULT_SECTION = "DEFAULT"
PROXY_MARKER = "PROXY"
"""The special secret that stands for the path of the pilot proxy file (FedCloud VOMS)."""

_NAMED_OPTIONS = frozenset({"key", "secret"})
"""Option names safe to quote in errors; any other "name" may be a mistyped value."""


@dataclass(frozen=True)
class AuthEntry:
    """The ``key`` and ``secret`` one CE uses, and where each came from."""

    section: str
    """The section chosen: the CE host's own, or ``DEFAULT``."""
    key: str = field(repr=False)
    secret: str = field(repr=False)
    key_section: str = DEFAULT_SECTION
    """Where ``key`` was actually found (a CE section may inherit it from DEFAULT)."""
    secret_section: str = DEFAULT_SECTION

    @property
    def uses_proxy(self) -> bool:
        return self.secret == PROXY_MARKER


def unquote(value: str) -> str:
    """Strip whitespace and one pair of matching surrounding quotes (``"x"`` or ``'x'``)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


@dataclass(frozen=True)
class CloudAuthFile:
    """A parsed ``cloud.auth``, with each section's own options (configparser's view merges
    DEFAULT in, which would hide where an inherited value came from)."""

    parser: configparser.ConfigParser
    own_options: Mapping[str, frozenset[str]]
    origin: str
    """Where the text came from, for messages: ``key 'cloud.auth' of Secret ns/name``."""

    def sections(self) -> list[str]:
        return self.parser.sections()


def _option_label(option: str | None) -> str:
    return f"option {option!r}" if option in _NAMED_OPTIONS else "an option"


def parse_cloud_auth(text: str, *, origin: str) -> CloudAuthFile:
    """Parse the ini; ``origin`` says where it came from (``key 'cloud.auth' of Secret ns/x``).

    Raises :class:`CloudAuthError` with line numbers and section names only.
    """
    text = text.lstrip("\ufeff")
    parser = configparser.ConfigParser(default_section=DEFAULT_SECTION, strict=True)
    # The same text again with DEFAULT as a plain section: each section's own options.
    plain = configparser.ConfigParser(default_section="\0", interpolation=None, strict=True)
    try:
        parser.read_string(text, source=origin)
        plain.read_string(text, source=origin)
    except configparser.MissingSectionHeaderError as exc:
        raise CloudAuthError(
            f"{origin}: line {exc.lineno} comes before any [section] header "
            "(start with [DEFAULT] or [<CE host>])"
        ) from None
    except configparser.ParsingError as exc:
        lines = ", ".join(str(lineno) for lineno, _ in exc.errors) or "?"
        raise CloudAuthError(
            f"{origin}: cannot parse line(s) {lines} (expected 'name = value' or '[section]')"
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise CloudAuthError(
            f"{origin}: section [{exc.section}] appears twice (line {exc.lineno})"
        ) from None
    except configparser.DuplicateOptionError as exc:
        raise CloudAuthError(
            f"{origin}: {_option_label(exc.option)} appears twice in section [{exc.section}] "
            f"(line {exc.lineno})"
        ) from None
    except configparser.Error as exc:
        raise CloudAuthError(f"{origin}: malformed ini ({type(exc).__name__})") from None
    own = {name: frozenset(plain[name]) for name in plain.sections()}
    return CloudAuthFile(parser, own, origin)


def _get(parser: configparser.ConfigParser, section: str, option: str, origin: str) -> str | None:
    try:
        raw = parser.get(section, option, fallback=None)
    except configparser.InterpolationError as exc:
        raise CloudAuthError(
            f"{origin}: {_option_label(option)} in section [{exc.section}] has a bad '%' "
            "(configparser interpolation, as in DIRAC: write a literal '%' as '%%')"
        ) from None
    return None if raw is None else unquote(raw)


def _found_in(auth: CloudAuthFile, section: str, option: str) -> str:
    return section if option in auth.own_options.get(section, ()) else DEFAULT_SECTION


def pick_section(parser: configparser.ConfigParser, ce: str) -> str:
    """The CE host's own section if present (exact name, else the one differing only in
    case: host names are case-insensitive), otherwise ``DEFAULT``."""
    if parser.has_section(ce):
        return ce
    folded = [s for s in parser.sections() if s.lower() == ce.lower()]
    return folded[0] if len(folded) == 1 else DEFAULT_SECTION


def select_entry(auth: CloudAuthFile, ce: str) -> AuthEntry:
    """The CE's ``key``/``secret``, with DIRAC's section choice and DEFAULT inheritance."""
    origin = auth.origin
    section = pick_section(auth.parser, ce)
    values: dict[str, str] = {}
    for option in ("key", "secret"):
        value = _get(auth.parser, section, option, origin)
        if value is None:
            raise CloudAuthError(_missing_message(auth.parser, ce, section, option, origin))
        if not value:
            where = _found_in(auth, section, option)
            raise CloudAuthError(f"{origin}: option {option!r} in section [{where}] is empty")
        values[option] = value
    return AuthEntry(
        section=section,
        key=values["key"],
        secret=values["secret"],
        key_section=_found_in(auth, section, "key"),
        secret_section=_found_in(auth, section, "secret"),
    )


def _missing_message(
    parser: configparser.ConfigParser, ce: str, section: str, option: str, origin: str
) -> str:
    sections = ", ".join(f"[{s}]" for s in parser.sections()) or "none besides [DEFAULT]"
    if section == DEFAULT_SECTION:
        return f"{origin}: no section [{ce}] and [DEFAULT] has no {option!r} (sections: {sections})"
    return f"{origin}: section [{section}] has no {option!r} and [DEFAULT] has none to inherit"


def read_cloud_auth(text: str, ce: str, *, origin: str) -> AuthEntry:
    """Parse and select in one step (what the operator does on every reconcile)."""
    return select_entry(parse_cloud_auth(text, origin=origin), ce)


def sensitive_values(auth: CloudAuthFile) -> list[str]:
    """Every value of every section, unquoted: all of them are someone's credentials, so
    all are registered for redaction, not only the ones this CE uses."""
    parser = auth.parser
    values: list[str] = []
    for section in [DEFAULT_SECTION, *parser.sections()]:
        for option in parser[section]:
            try:
                value = parser.get(section, option, raw=True)
            except configparser.Error:
                continue
            values += [value, unquote(value)]
    return [v for v in dict.fromkeys(values) if v and v != PROXY_MARKER]


def render_entry(section: str, key: str, secret: str) -> str:
    """One section of a ``cloud.auth`` that reads back to exactly ``key`` and ``secret``.

    Values are quoted (so a value that itself starts and ends with a quote survives the
    unquoting) and ``%`` is doubled (interpolation, as DIRAC reads the file).
    """

    def quoted(value: str) -> str:
        return '"' + value.replace("%", "%%").replace("\n", "\n    ") + '"'

    return f"[{section}]\nkey = {quoted(key)}\nsecret = {quoted(secret)}\n"
