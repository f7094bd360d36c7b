"""Which aiohttp sessions of the Kubernetes client still carry requests, so that a session
replaced after a 401 is closed only once its last request is answered.

Closing a session under requests in flight fails them all with a dropped connection: an
Event POST, never retried (it might have been created), was lost every time a rotated token
made one request log in again. So :class:`~cloudpilot.kube.client.KubeClient` retires the
old session instead: new requests go to the new session, and the old one is closed by the
last request that leaves it (or by the client's own close, which ends everything).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp


class SessionUsers:
    """Counts the requests on each session and closes retired sessions once unused."""

    def __init__(self) -> None:
        self._users: dict[aiohttp.ClientSession, int] = {}
        self._retired: set[aiohttp.ClientSession] = set()

    @contextlib.asynccontextmanager
    async def use(self, session: aiohttp.ClientSession) -> AsyncIterator[aiohttp.ClientSession]:
        """Hold ``session`` for one request; a retired one is closed when its last
        holder leaves (cancelled or not)."""
        self._users[session] = self._users.get(session, 0) + 1
        try:
            yield session
        finally:
            left = self._users[session] - 1
            if left:
                self._users[session] = left
            else:
                del self._users[session]
                if session in self._retired:
                    self._retired.discard(session)
                    await session.close()

    async def retire(self, session: aiohttp.ClientSession) -> None:
        """No new request goes to ``session`` (the caller stopped handing it out): close it
        now if nothing is in flight on it, else when the last request leaves it."""
        if self._users.get(session):
            self._retired.add(session)
        else:
            await session.close()

    def in_flight(self, session: aiohttp.ClientSession) -> int:
        """Requests now on ``session`` (for tests and debugging)."""
        return self._users.get(session, 0)

    async def close_all(self) -> None:
        """Close every retired session at once (the client is closing: nothing waits)."""
        retired, self._retired = self._retired, set()
        for session in retired:
            await session.close()
