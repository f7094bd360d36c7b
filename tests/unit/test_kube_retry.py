"""When the operator's Kubernetes client sends a request again (cloudpilot.kube.retry)."""

from __future__ import annotations

import pytest

from cloudpilot.constants import KUBE_RETRY_ATTEMPTS, KUBE_RETRY_BACKOFF, KUBE_RETRY_BACKOFF_MAX
from cloudpilot.kube.retry import LOST, NOT_SENT, parse_retry_after, retry_delay

PLENTY = 60.0


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "POST", "DELETE"])
def test_429_is_retried_for_every_method_because_nothing_was_executed(method: str) -> None:
    assert retry_delay(method, 429, 1, remaining=PLENTY) == KUBE_RETRY_BACKOFF


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "POST"])
def test_a_connection_that_never_opened_is_retried_for_every_method(method: str) -> None:
    assert retry_delay(method, NOT_SENT, 1, remaining=PLENTY) == KUBE_RETRY_BACKOFF


@pytest.mark.parametrize("status", [500, 502, 503, 504, LOST])
def test_5xx_or_a_lost_answer_is_retried_only_when_repeating_is_safe(status: int) -> None:
    for method in ("GET", "PATCH", "PUT"):
        assert retry_delay(method, status, 1, remaining=PLENTY) == KUBE_RETRY_BACKOFF
    # An Event created twice is worse than one missing (the next cycle posts it again).
    assert retry_delay("POST", status, 1, remaining=PLENTY) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_a_client_error_is_never_retried(status: int) -> None:
    assert retry_delay("GET", status, 1, remaining=PLENTY) is None


def test_the_backoff_doubles_and_is_capped_and_attempts_are_bounded() -> None:
    delays = [retry_delay("GET", 503, n, remaining=PLENTY) for n in range(1, 10)]
    expected = [
        min(KUBE_RETRY_BACKOFF * 2 ** (n - 1), KUBE_RETRY_BACKOFF_MAX)
        for n in range(1, KUBE_RETRY_ATTEMPTS)
    ]
    assert delays[: KUBE_RETRY_ATTEMPTS - 1] == expected
    assert delays[KUBE_RETRY_ATTEMPTS - 1 :] == [None] * (10 - KUBE_RETRY_ATTEMPTS)


def test_retry_after_is_honoured_and_capped() -> None:
    assert retry_delay("GET", 429, 1, remaining=PLENTY, retry_after=2.0) == 2.0
    assert retry_delay("GET", 429, 1, remaining=PLENTY, retry_after=0.0) == 0.0
    assert retry_delay("GET", 429, 1, remaining=PLENTY, retry_after=3600) == KUBE_RETRY_BACKOFF_MAX


def test_no_retry_that_cannot_end_before_the_deadline() -> None:
    assert retry_delay("GET", 429, 1, remaining=KUBE_RETRY_BACKOFF) is None
    assert retry_delay("GET", 429, 1, remaining=3.0, retry_after=5.0) is None  # capped: 4 s
    assert retry_delay("GET", 429, 1, remaining=5.0, retry_after=1.0) == 1.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("1", 1.0), (" 3 ", 3.0), ("0.5", 0.5), ("-1", None), ("soon", None)],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None
