"""When the operator's Kubernetes client tries a request again, and after how long.

Pure (plain values in, a number out), so that every case is a unit test and the client
(:mod:`cloudpilot.kube.client`) only carries the answer out. The rules follow what an API
server promises:

* **429** (priority and fairness, or a client-side rate limit answered by the server) is
  sent *before* the request is executed: any request may be sent again, a POST too.
* **5xx** and a connection lost after the request left may or may not have been executed:
  only requests that can be repeated safely are sent again. GET reads; PATCH here is a
  JSON merge patch (the same patch twice gives the same object); PUT carries the
  ``resourceVersion`` it read (a repeat of a write that went through gets 409, which the
  caller handles). A POST (an Event) is not repeated: a duplicate Event is worse than a
  missing one, which the next cycle posts again.
* A connection that could not be opened sent nothing: any request may be sent again.
* The server's ``Retry-After`` is honoured, capped; otherwise the back-off doubles.
* Nothing is retried past the call's deadline: the caller's timeout is strict.
"""

from __future__ import annotations

from cloudpilot.constants import KUBE_RETRY_ATTEMPTS, KUBE_RETRY_BACKOFF, KUBE_RETRY_BACKOFF_MAX

REPEATABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
"""Methods whose repetition leaves the object as one execution would (see above)."""

NOT_SENT = -1
"""The ``status`` of an attempt whose connection could not be opened (nothing was sent)."""

LOST = 0
"""The ``status`` of an attempt whose connection failed after the request was sent."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the API server sends whole seconds); ``None``
    when absent or in a form not worth parsing (an HTTP date: the back-off applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def retry_delay(
    method: str,
    status: int,
    attempt: int,
    *,
    remaining: float,
    retry_after: float | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or ``None`` to give up now.

    ``status`` is the HTTP status of attempt ``attempt`` (counted from 1), or
    :data:`NOT_SENT` / :data:`LOST`; ``remaining`` is what is left of the call's deadline.
    """
    if attempt >= KUBE_RETRY_ATTEMPTS:
        return None
    if status == NOT_SENT or status == 429:
        pass
    elif status == LOST or status >= 500:
        if method.upper() not in REPEATABLE_METHODS:
            return None
    else:
        return None
    backoff = KUBE_RETRY_BACKOFF * 2 ** (attempt - 1)
    delay = min(backoff if retry_after is None else retry_after, KUBE_RETRY_BACKOFF_MAX)
    if delay >= remaining:
        return None  # the answer could not come in time anyway: fail now, not at the deadline
    return delay
