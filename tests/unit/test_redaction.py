"""Secret masking in messages and logs.

Clouds echo requests back in their errors, and a create request carries the user data,
which carries the pilot proxy. Whatever a registered secret looks like on its way out
(plain, base64 inside a base64 user data, one PEM line quoted on its own), it must come
out as ``***`` in status, events and logs.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator

import pytest

from cloudpilot import redaction
from cloudpilot.redaction import MASK, RedactingFilter, forget, redact, register

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----\n"
)


@pytest.fixture
def secrets() -> Iterator[Callable[..., None]]:
    """Register secrets under owners that are forgotten after the test, whatever happens."""
    owners: list[str] = []

    def _register(*values: str | bytes | None, owner: str = "test/pool:credentials") -> None:
        owners.append(owner)
        register(owner, values)

    yield _register
    for owner in owners:
        forget(owner)


def test_registered_secret_is_masked(secrets) -> None:
    secrets(SECRET)
    assert redact(f"SignatureDoesNotMatch for key {SECRET}.") == (
        f"SignatureDoesNotMatch for key {MASK}."
    )


def test_every_occurrence_is_masked(secrets) -> None:
    secrets(SECRET)
    assert redact(f"{SECRET} and {SECRET}") == f"{MASK} and {MASK}"


def test_text_without_secrets_is_unchanged(secrets) -> None:
    secrets(SECRET)
    text = "InstanceLimitExceeded: You have requested more instances than your limit"
    assert redact(text) == text


def test_base64_of_a_secret_is_masked(secrets) -> None:
    secrets(SECRET)
    encoded = base64.b64encode(SECRET.encode()).decode()
    assert encoded not in redact(f"UserData={encoded}")


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 5])
def test_secret_inside_base64_user_data_is_masked_at_any_position(secrets, offset: int) -> None:
    """User data travels base64-encoded as a whole, so the secret's own base64 only appears
    when it starts at a multiple of three bytes; every alignment must be caught."""
    secrets(SECRET)
    user_data = f"#cloud-config\n{'x' * offset}\nsecret: {SECRET}\nruncmd: []\n".encode()
    echoed = base64.b64encode(user_data).decode()
    masked = redact(f"InvalidParameterValue: bad user data {echoed}")
    assert MASK in masked
    assert not _leaks(masked, SECRET)


def test_pem_line_inside_base64_user_data_is_masked(secrets) -> None:
    """YAML re-flows a proxy in user data (blank lines, indentation): each PEM line still
    appears whole, and so must be masked in the base64 the cloud echoes back."""
    secrets(PEM)
    line = PEM.splitlines()[2]
    user_data = f"write_files:\n- content: '#!/bin/sh\n\n    {line}\n\n    '\n".encode()
    masked = redact(base64.b64encode(user_data).decode())
    assert not _leaks(masked, line)


def _leaks(text: str, secret: str, window: int = 8) -> bool:
    """Whether any ``window`` bytes of ``secret`` can be decoded from what was left of a
    base64 text around the masks, at any alignment."""
    pieces = [secret[i : i + window].encode() for i in range(len(secret) - window + 1)]
    for part in text.replace(MASK, " ").split():
        for shift in range(4):
            chunk = part[shift:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                decoded = base64.b64decode(chunk)
            except ValueError:
                continue
            if any(p in decoded for p in pieces):
                return True
    return False


def test_pem_lines_quoted_alone_are_masked(secrets) -> None:
    """A message may quote one line of a proxy; each long line is a secret of its own."""
    secrets(PEM)
    line = PEM.splitlines()[1]
    assert redact(f"error near '{line}'") == f"error near '{MASK}'"
    assert MASK in redact(PEM)
    assert "MIIEowIBAAKCAQEA" not in redact(PEM)


def test_short_values_are_not_registered(secrets) -> None:
    """A five-letter "secret" would mask ordinary words everywhere."""
    secrets("admin")
    assert redact("admin login failed") == "admin login failed"


def test_bytes_and_none_values_are_accepted(secrets) -> None:
    secrets(SECRET.encode(), None)
    assert redact(SECRET) == MASK


def test_registering_again_replaces_the_owners_old_secrets(secrets) -> None:
    """A rotated Secret: the old value is no longer ours to hide, the new one is."""
    secrets("old-secret-value", owner="ns/pool:credentials")
    secrets("new-secret-value", owner="ns/pool:credentials")
    assert redact("old-secret-value") == "old-secret-value"
    assert redact("new-secret-value") == MASK


def test_forget_stops_masking(secrets) -> None:
    secrets(SECRET, owner="ns/gone:credentials")
    forget("ns/gone:credentials")
    assert redact(SECRET) == SECRET


def test_owners_are_independent(secrets) -> None:
    secrets("first-secret-value", owner="ns/a:credentials")
    secrets("second-secret-value", owner="ns/b:credentials")
    forget("ns/a:credentials")
    assert redact("first-secret-value second-secret-value") == f"first-secret-value {MASK}"


def test_longer_secret_is_masked_whole_when_it_contains_a_shorter_one(secrets) -> None:
    secrets("abcdef-123456", owner="ns/a:x")
    secrets("abcdef-123456-more-secret", owner="ns/b:x")
    assert redact("abcdef-123456-more-secret") == MASK


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("libcloud", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_log_filter_masks_messages_and_their_arguments(secrets) -> None:
    """libcloud logs requests with %-arguments; the formatted text is what must be clean."""
    secrets(SECRET)
    record = _record("request failed: %s", f"key={SECRET}")
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == f"request failed: key={MASK}"


def test_log_filter_masks_tracebacks(secrets) -> None:
    secrets(SECRET)
    try:
        raise RuntimeError(f"echoed {SECRET}")
    except RuntimeError as error:
        record = _record("create failed", exc=error)
    RedactingFilter().filter(record)
    assert record.exc_info is None
    assert SECRET not in (record.exc_text or "")
    assert MASK in (record.exc_text or "")
    formatted = logging.Formatter().format(record)
    assert SECRET not in formatted


def test_log_filter_leaves_clean_records_alone(secrets) -> None:
    secrets(SECRET)
    record = _record("listed %d nodes", 3)
    RedactingFilter().filter(record)
    assert (record.msg, record.args) == ("listed %d nodes", (3,))


def test_install_log_filter_adds_one_filter_per_root_handler() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        redaction.install_log_filter()
        redaction.install_log_filter()
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


def test_kopfs_own_event_poster_only_sees_redacted_records(secrets) -> None:
    """kopf turns ``kopf.objects`` warnings into Events through a handler on that logger,
    which runs before the root's handlers: the record must be masked before it gets there."""
    secrets(SECRET)

    class Poster(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    kopf_objects = logging.getLogger("kopf.objects")
    poster = Poster()
    kopf_objects.addHandler(poster)
    try:
        redaction.install_log_filter()
        kopf_objects.warning("Handler failed temporarily: cloud said %s", SECRET)
    finally:
        kopf_objects.removeHandler(poster)
    assert poster.messages and SECRET not in poster.messages[0]
