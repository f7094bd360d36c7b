"""Classifying what libcloud raised, and making its message safe to show.

The kind decides what the user sees (Stalled for quota and credentials, Reconciling for a
hiccup) and how the operator retries, so each shape of failure that real drivers produce
is checked: libcloud's typed errors, HTTP codes, EC2 error codes inside messages (libcloud's
EC2 driver raises them as ``BaseHTTPError`` with the code text), OpenStack messages, and
socket-level failures.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator

import pytest
import requests
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import (
    InvalidCredsError,
    LibcloudError,
    MalformedResponseError,
    ProviderError,
)

from cloudpilot import constants
from cloudpilot.cloud.errors import classify, scrub
from cloudpilot.credentials.errors import InvalidProxyError
from cloudpilot.memory import ErrorKind
from cloudpilot.models.queues import ConfigError
from cloudpilot.redaction import MASK, forget, register

TRANSIENT, QUOTA = ErrorKind.TRANSIENT, ErrorKind.QUOTA
BAD_CREDENTIALS, NOT_FOUND = ErrorKind.BAD_CREDENTIALS, ErrorKind.NOT_FOUND
INVALID_REQUEST, CONFIG = ErrorKind.INVALID_REQUEST, ErrorKind.CONFIG


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (InvalidCredsError(), BAD_CREDENTIALS),
        (
            InvalidCredsError("AuthFailure: AWS was not able to validate the credentials"),
            BAD_CREDENTIALS,
        ),
        (BaseHTTPError(401, "Unauthorized"), BAD_CREDENTIALS),
        (BaseHTTPError(403, "Forbidden"), BAD_CREDENTIALS),
        (BaseHTTPError(404, "Not Found"), NOT_FOUND),
        (BaseHTTPError(413, "Request Entity Too Large"), QUOTA),
        (BaseHTTPError(429, "Too Many Requests"), TRANSIENT),
        (RateLimitReachedError(), TRANSIENT),
        (BaseHTTPError(500, "Internal Server Error"), TRANSIENT),
        (BaseHTTPError(502, "Bad Gateway"), TRANSIENT),
        (BaseHTTPError(503, "Service Unavailable"), TRANSIENT),
        (ProviderError("server exploded", 500), TRANSIENT),
        (ProviderError("no such thing", 404), NOT_FOUND),
    ],
    ids=lambda v: getattr(v, "code", None) or type(v).__name__,
)
def test_typed_errors_and_http_codes(exc: BaseException, kind: ErrorKind) -> None:
    assert classify(exc).kind is kind


@pytest.mark.parametrize(
    ("message", "code", "kind"),
    [
        (
            "AuthFailure: AWS was not able to validate the provided access credentials",
            401,
            BAD_CREDENTIALS,
        ),
        (
            "InvalidClientTokenId: The security token included in the request is invalid",
            400,
            BAD_CREDENTIALS,
        ),
        (
            "SignatureDoesNotMatch: The request signature we calculated does not match",
            400,
            BAD_CREDENTIALS,
        ),
        (
            "UnauthorizedOperation: You are not authorized to perform this operation",
            400,
            BAD_CREDENTIALS,
        ),
        (
            "InstanceLimitExceeded: You have requested more instances (21) than your limit",
            400,
            QUOTA,
        ),
        ("VcpuLimitExceeded: You have requested more vCPU capacity than your limit", 400, QUOTA),
        (
            "InsufficientInstanceCapacity: We currently do not have sufficient m5.large capacity",
            500,
            QUOTA,
        ),
        ("RequestLimitExceeded: Request limit exceeded.", 503, TRANSIENT),
        ("RequestLimitExceeded: Request limit exceeded.", 400, TRANSIENT),
        ("Unavailable: The server is overloaded", 503, TRANSIENT),
        ("InternalError: An internal error has occurred", 500, TRANSIENT),
        ("InvalidAMIID.NotFound: The image id '[ami-0123]' does not exist", 400, NOT_FOUND),
        ("InvalidSubnetID.NotFound: The subnet ID 'subnet-1' does not exist", 400, NOT_FOUND),
        ("InvalidKeyPair.NotFound: The key pair 'ops' does not exist", 400, NOT_FOUND),
        ("InvalidParameterValue: User data is limited to 16384 bytes", 400, INVALID_REQUEST),
        ("InvalidInstanceType: The instance type 'm9.huge' does not exist", 400, NOT_FOUND),
        ("MissingParameter: The request must contain the parameter ImageId", 400, INVALID_REQUEST),
    ],
)
def test_ec2_error_codes(message: str, code: int, kind: ErrorKind) -> None:
    """libcloud's EC2 driver raises BaseHTTPError(status, "Code: message")."""
    assert classify(BaseHTTPError(code, message)).kind is kind


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("InstanceLimitExceeded: You have requested more instances than your limit", QUOTA),
        ("InsufficientInstanceCapacity: We currently do not have sufficient capacity", QUOTA),
        ("RequestLimitExceeded: Request limit exceeded.", TRANSIENT),
        ("InvalidAMIID.NotFound: The image id '[ami-0123]' does not exist", NOT_FOUND),
        (
            "AuthFailure: AWS was not able to validate the provided access credentials",
            BAD_CREDENTIALS,
        ),
    ],
)
def test_error_codes_in_bare_exceptions(message: str, kind: ErrorKind) -> None:
    """Some drivers and older libcloud paths raise plain Exception with the code as text."""
    assert classify(Exception(message)).kind is kind


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            BaseHTTPError(
                403,
                "403 Forbidden Quota exceeded for instances: Requested 1, but already used 10 "
                "of 10 instances",
            ),
            QUOTA,
        ),
        (
            BaseHTTPError(413, "413 Request Entity Too Large OverLimit: Maximum number of ports"),
            QUOTA,
        ),
        (BaseHTTPError(500, "500 Internal Server Error No valid host was found."), QUOTA),
        (InvalidCredsError("The request you have made requires authentication."), BAD_CREDENTIALS),
        (BaseHTTPError(400, "400 Bad Request Invalid imageRef provided."), INVALID_REQUEST),
        (BaseHTTPError(404, "404 Not Found Flavor m1.huge could not be found."), NOT_FOUND),
        (LibcloudError("Could not find specified flavor"), NOT_FOUND),
    ],
)
def test_openstack_errors(exc: BaseException, kind: ErrorKind) -> None:
    """Nova says "Quota exceeded" with 403: that is a quota, not rejected credentials."""
    assert classify(exc).kind is kind


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("read timed out"),
        ConnectionResetError(104, "Connection reset by peer"),
        ssl.SSLError("EOF occurred in violation of protocol"),
        requests.exceptions.ReadTimeout("HTTPConnectionPool(host='x', port=1): Read timed out."),
    ],
    ids=lambda e: type(e).__name__,
)
def test_network_failures_after_connecting_are_transient(exc: BaseException) -> None:
    """A connection was made (or may have been): a hiccup, retried as Reconciling."""
    assert classify(exc).kind is TRANSIENT


def _requests_refused() -> BaseException:
    """What libcloud lets through for a closed port: requests' ConnectionError, whose
    socket error is only in the message (urllib3 wraps it instead of chaining it)."""
    return requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: / "
        '(Caused by NewConnectionError("Failed to establish a new connection: [Errno 111] '
        'Connection refused"))'
    )


def _chained_refusal() -> BaseException:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("listing failed") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        socket.gaierror(-2, "Name or service not known"),
        socket.gaierror(-3, "Temporary failure in name resolution"),
        OSError(113, "No route to host"),
        _requests_refused(),
        _chained_refusal(),
    ],
    ids=["refused", "no-such-host", "dns-down", "no-route", "requests-refused", "chained"],
)
def test_endpoints_that_take_no_connection_are_unreachable(exc: BaseException) -> None:
    """Its own kind: retried with back-off, then Stalled after a bounded time (status)."""
    assert classify(exc).kind is ErrorKind.UNREACHABLE


def test_a_refusal_quoted_by_a_non_network_error_is_not_unreachable() -> None:
    """Only network errors are read for the words: a cloud's message may quote anything."""
    assert classify(RuntimeError("Connection refused")).kind is TRANSIENT


def test_construction_errors_wrapped_as_config_are_config() -> None:
    """``build_driver`` turns EC2's "Invalid region" into a ConfigError: stalls at once."""
    from cloudpilot.cloud.drivers import build_driver
    from cloudpilot_devtools.moto_ec2 import CLASS_PATH

    with pytest.raises(ConfigError) as caught:
        build_driver(CLASS_PATH, "k", "s", {"region": "mars-1"}, frozenset({CLASS_PATH}))
    assert "Invalid region: mars-1" in str(caught.value)
    assert classify(caught.value).kind is CONFIG


def test_an_unusable_proxy_is_its_own_kind() -> None:
    assert classify(InvalidProxyError("secret = PROXY, but ...")).kind is ErrorKind.INVALID_PROXY


def test_garbled_response_from_the_cloud_is_transient() -> None:
    """A load balancer's HTML error page instead of XML is a hiccup, not a bad request:
    the pool must retry, not report Stalled until a human looks."""
    exc = MalformedResponseError("Failed to parse XML", body="<html>502 Bad Gateway</html>")
    assert classify(exc).kind is TRANSIENT


def test_config_error_is_invalid_config() -> None:
    assert classify(ConfigError("queue 'a': instance.image must be set")).kind is CONFIG


def test_unrecognised_libcloud_error_is_an_invalid_request() -> None:
    """libcloud refused it outright: retrying the same call will not help."""
    assert classify(LibcloudError("driver does not support ex_foo")).kind is INVALID_REQUEST


def test_unrecognised_plain_exception_is_transient() -> None:
    """Nothing says it is permanent, so it is retried with back-off rather than stalling."""
    assert classify(RuntimeError("something odd")).kind is TRANSIENT


def test_classification_keeps_operation_and_names_the_exception_type() -> None:
    error = classify(BaseHTTPError(503, "Unavailable"), "create")
    assert error.operation == "create"
    assert error.message.startswith("BaseHTTPError: ")


# --- scrub ---------------------------------------------------------------------------------


@pytest.fixture
def registered() -> Iterator[str]:
    secret = "AKIAabcdefSECRETvalue0123"
    register("test/cloud-errors:credentials", [secret])
    yield secret
    forget("test/cloud-errors:credentials")


def test_scrub_cuts_long_messages() -> None:
    """Clouds echo whole requests (user data included) back in their errors."""
    text = scrub("InvalidParameterValue: " + "A long echo. " * 10_000)
    assert len(text) == constants.MAX_MESSAGE_LENGTH
    assert text.endswith("…")


def test_scrub_masks_an_echoed_base64_request_body() -> None:
    """User data travels as base64: an echo of it is masked whatever it encodes."""
    text = scrub("InvalidParameterValue: UserData=" + "QUJD" * 200 + " is too long")
    assert text == "InvalidParameterValue: UserData=*** is too long"


def test_scrub_leaves_short_messages_whole() -> None:
    assert scrub("InstanceLimitExceeded: no more") == "InstanceLimitExceeded: no more"


def test_scrub_collapses_whitespace() -> None:
    """Multi-line XML bodies become one line fit for a condition message or an event."""
    assert scrub("<Error>\n  <Code>X</Code>\n\t</Error>") == "<Error> <Code>X</Code> </Error>"


def test_scrub_masks_registered_secrets(registered: str) -> None:
    assert scrub(f"bad key {registered}") == f"bad key {MASK}"


def test_scrub_masks_base64_of_registered_secrets(registered: str) -> None:
    encoded = base64.b64encode(registered.encode()).decode()
    assert scrub(f"UserData: {encoded}") == f"UserData: {MASK}"


def test_scrub_masks_before_cutting(registered: str) -> None:
    """A secret straddling the cut must not leave its first half behind."""
    cut = constants.MAX_MESSAGE_LENGTH
    text = "x" * (cut - 10) + registered
    assert registered[:10] not in scrub(text)


def test_classified_message_is_scrubbed(registered: str) -> None:
    error = classify(BaseHTTPError(400, f"InvalidParameterValue: {registered}" + " y" * 1000))
    assert registered not in error.message
    assert MASK in error.message
    assert len(error.message) <= constants.MAX_MESSAGE_LENGTH


def test_an_untrusted_tls_certificate_stalls_instead_of_retrying_forever() -> None:
    import ssl

    from cloudpilot.cloud.errors import classify
    from cloudpilot.memory import ErrorKind

    error = classify(ssl.SSLCertVerificationError("certificate verify failed: self-signed"))
    assert error.kind is ErrorKind.CONFIG


@pytest.mark.parametrize(
    ("exc", "uncertain"),
    [
        (requests.exceptions.ReadTimeout("Read timed out."), True),
        (requests.exceptions.ConnectionError("Connection aborted."), True),
        (TimeoutError("timed out"), True),
        (ConnectionResetError("reset"), True),
        (BaseHTTPError(503, "RequestLimitExceeded: Request limit exceeded."), False),
        (InvalidCredsError("AuthFailure"), False),
    ],
)
def test_an_error_after_which_the_cloud_may_have_acted_is_uncertain(
    exc: BaseException, uncertain: bool
) -> None:
    """A timeout or a lost connection leaves the outcome unknown: the reconciler looks at
    the cloud again soon instead of waiting out the back-off. A refusal is certain."""
    assert classify(exc, "create").uncertain is uncertain


def test_an_unreachable_endpoint_is_summarised_not_the_request_url() -> None:
    error = classify(_requests_refused(), "list")
    assert error.message == "ConnectionError: cannot connect to 127.0.0.1:1: Connection refused"
