"""Closing a libcloud driver's HTTP connections when CloudPilot lets the driver go.

libcloud has no ``close`` on a driver: its ``Connection`` holds a ``LibcloudConnection``
whose ``requests.Session`` keeps sockets to the cloud's endpoint (keep-alive) until the
garbage collector finds it. A gateway dropped from the shared caches (a rotated Secret,
edited driver options, a deleted pool) would leave up to ``parallelism`` of those open per
cycle's worth of churn; closing the session releases them at once. A closed
``requests.Session`` still works if used again (it opens new connections), so a driver a
late caller still holds is not broken by this.
"""

from __future__ import annotations

from typing import Any


def close_connections(driver: Any) -> None:
    """Close ``driver``'s HTTP session, if it has one (duck-typed: libcloud is untyped and
    a custom driver class may keep no connection at all)."""
    http = getattr(getattr(driver, "connection", None), "connection", None)
    close = getattr(getattr(http, "session", None), "close", None)
    if callable(close):
        close()
