"""Turn whatever a libcloud driver raised into a :class:`CloudError` of a known kind.

Drivers report failures in many shapes (``InvalidCredsError``, ``BaseHTTPError`` with a
status code, a bare ``Exception`` whose text holds an EC2 error code, socket errors), so
classification looks at the type first, then the HTTP code, then well-known error codes in
the message. The message is cut and scrubbed of registered secrets before anything else
sees it: clouds echo the request, user data included, back in their errors.
"""

from __future__ import annotations

import re
import socket
import ssl

import requests
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import (
    InvalidCredsError,
    LibcloudError,
    MalformedResponseError,
    ProviderError,
)

from cloudpilot import constants
from cloudpilot.credentials.errors import InvalidProxyError
from cloudpilot.memory import CloudError, ErrorKind
from cloudpilot.models.queues import ConfigError
from cloudpilot.redaction import redact

_CODES: tuple[tuple[ErrorKind, re.Pattern[str]], ...] = (
    (
        ErrorKind.BAD_CREDENTIALS,
        re.compile(
            r"AuthFailure|InvalidClientTokenId|SignatureDoesNotMatch|UnauthorizedOperation|"
            r"InvalidAccessKeyId|Unauthorized|invalid credentials|authentication failed|"
            r"The request you have made requires authentication",
            re.IGNORECASE,
        ),
    ),
    (
        ErrorKind.QUOTA,
        re.compile(
            r"InstanceLimitExceeded|InsufficientInstanceCapacity|VcpuLimitExceeded|"
            r"quota exceeded|QuotaExceeded|OverLimit|insufficient capacity|"
            r"No valid host was found",
            re.IGNORECASE,
        ),
    ),
    (
        ErrorKind.TRANSIENT,
        re.compile(
            r"RequestLimitExceeded|Throttling|ServiceUnavailable|InternalError|"
            r"Unavailable|timed out|temporarily|Rate exceeded",
            re.IGNORECASE,
        ),
    ),
    (
        ErrorKind.NOT_FOUND,
        re.compile(
            r"InvalidAMIID|InvalidSubnetID|InvalidKeyPair\.NotFound|NotFound|not found|"
            r"could not find|does not exist",
            re.IGNORECASE,
        ),
    ),
    (
        ErrorKind.INVALID_REQUEST,
        re.compile(
            r"InvalidParameter|InvalidUserData|Malformed|MissingParameter|"
            r"InvalidInstanceType|Unsupported|Bad Request",
            re.IGNORECASE,
        ),
    ),
)


_UNREACHABLE = re.compile(
    r"Connection refused|No route to host|Network is unreachable|"
    r"Name or service not known|nodename nor servname|Temporary failure in name resolution|"
    r"getaddrinfo failed|No address associated with hostname",
    re.IGNORECASE,
)
"""What requests/urllib3 say (in the message of a ``requests.ConnectionError``, which
wraps the socket error instead of chaining it) when no connection could be made at all."""


def scrub(message: str) -> str:
    """Mask secrets, collapse whitespace and cut: safe for status, events and logs."""
    text = " ".join(redact(message).split())
    if len(text) > constants.MAX_MESSAGE_LENGTH:
        text = text[: constants.MAX_MESSAGE_LENGTH - 1] + "…"
    return text


_POOL_HOST = re.compile(r"host='([^']+)', port=(\d+)")


def classify(exc: BaseException, operation: str = "") -> CloudError:
    message = scrub(f"{type(exc).__name__}: {exc}")
    kind = _kind(exc, message)
    if kind is ErrorKind.UNREACHABLE:
        message = _unreachable_summary(exc, message, str(exc))
    return CloudError(
        kind=kind,
        message=message,
        operation=operation,
        uncertain=kind is not ErrorKind.UNREACHABLE and _uncertain(exc),
    )


def _unreachable_summary(exc: BaseException, message: str, full: str) -> str:
    """``cannot connect to host:port: Connection refused`` instead of urllib3's retry
    report, whose request URL fills the cut message before it says what happened (so the
    whole text is searched; only the host, port and a fixed phrase are kept from it)."""
    cause = _UNREACHABLE.search(full)
    where = _POOL_HOST.search(full)
    if cause is None:
        return message
    target = f" to {where.group(1)}:{where.group(2)}" if where else ""
    return scrub(f"{type(exc).__name__}: cannot connect{target}: {cause.group(0)}")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the endpoint took no connection (refused, no route, no such
    host), as opposed to one that was made and then failed or timed out."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError | socket.gaierror):
            return True
        if isinstance(current, OSError) and _UNREACHABLE.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _uncertain(exc: BaseException) -> bool:
    """A timeout or a lost connection: the cloud may have acted on the request. (A refused
    connection is not: :func:`unreachable` tells it apart first.)"""
    return isinstance(
        exc,
        socket.timeout
        | TimeoutError
        | ConnectionError
        | requests.exceptions.Timeout
        | requests.exceptions.ConnectionError,
    )


def _kind(exc: BaseException, message: str) -> ErrorKind:
    if isinstance(exc, InvalidProxyError):
        return ErrorKind.INVALID_PROXY
    if isinstance(exc, ConfigError):
        return ErrorKind.CONFIG
    if isinstance(exc, InvalidCredsError):
        return ErrorKind.BAD_CREDENTIALS
    if isinstance(exc, RateLimitReachedError):
        return ErrorKind.TRANSIENT
    if isinstance(exc, MalformedResponseError):
        # A proxy's HTML error page instead of XML/JSON: a hiccup, whatever words it holds.
        return ErrorKind.TRANSIENT
    if isinstance(exc, ssl.SSLCertVerificationError):
        # A certificate the operator does not trust will not become trusted by retrying:
        # the driver options (secure, CA) need fixing.
        return ErrorKind.CONFIG
    if unreachable(exc):
        return ErrorKind.UNREACHABLE
    if isinstance(exc, socket.timeout | TimeoutError | ConnectionError | ssl.SSLError):
        return ErrorKind.TRANSIENT
    code = getattr(exc, "code", None) or getattr(exc, "http_code", None)
    if isinstance(exc, BaseHTTPError | ProviderError) and isinstance(code, int):
        if code in (401, 403) and not _matches(ErrorKind.QUOTA, message):
            return ErrorKind.BAD_CREDENTIALS
        # EC2 sends InsufficientInstanceCapacity as a server error (500): the code in the
        # message says more than the status, as for 403 above.
        if code == 429 or (code >= 500 and not _matches(ErrorKind.QUOTA, message)):
            return ErrorKind.TRANSIENT
        if code == 413:
            return ErrorKind.QUOTA
        if code == 404:
            return ErrorKind.NOT_FOUND
    for kind, pattern in _CODES:
        if pattern.search(message):
            return kind
    if isinstance(exc, LibcloudError | ProviderError | BaseHTTPError):
        return ErrorKind.INVALID_REQUEST
    return ErrorKind.TRANSIENT


def _matches(kind: ErrorKind, message: str) -> bool:
    return any(k is kind and p.search(message) for k, p in _CODES)
