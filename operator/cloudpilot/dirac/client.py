"""The DiracX REST adapter: four calls over aiohttp, nothing decided here.

Why not ``diracx-client``: it pins FastAPI-era libraries (httpx, azure-core, a generated
AutoREST client) that would move CloudPilot's own dependencies, for four JSON requests.
aiohttp already comes with kopf.

The token is sent in the ``Authorization`` header and nowhere else: it is never part of a
URL, and every error message is built here from the status code and DiracX's ``detail``
(masked by :func:`cloudpilot.cloud.errors.scrub`), never from the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from cloudpilot.cloud.errors import scrub

REQUEST_TIMEOUT = 10.0
"""Seconds for one DiracX request: a registration is one row insert; longer means an
overloaded or unreachable server, and the cycle must get back to the VMs."""


SEARCH_PAGE_SIZE = 1000
"""Pilots per ``/api/pilots/search`` page (DiracX allows up to 10,000): a page of a few
hundred kB, answered well within ``REQUEST_TIMEOUT`` by a loaded server."""

SEARCH_MAX_ROWS = 100_000
"""Most rows one search reads: beyond any pool's live pilots (``MAX_REPLICAS`` per queue),
while a search that matches far more than it should stays bounded work."""


class DiracError(Exception):
    """A DiracX call that failed; ``transient`` when a retry may succeed (5xx, network)."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = True):
        super().__init__(scrub(message))
        self.status = status
        self.transient = transient


class DiracClient:
    """One DiracX endpoint with one bearer token (one per pool credential)."""

    def __init__(self, endpoint: str, token: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self._base = endpoint.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        failure: str
        try:
            # No redirects: a bearer token follows nobody to another URL.
            async with self._session.request(
                method, self._base + path, json=body, allow_redirects=False
            ) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise DiracError(
                        f"DiracX {method} {path}: HTTP {resp.status}: {_detail(text)}",
                        status=resp.status,
                        transient=resp.status >= 500 or resp.status == 429,
                    )
                return resp.status, (await resp.json(content_type=None)) if text else None
        except DiracError:
            raise
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            # aiohttp's messages name the host and port, never headers.
            failure = f"DiracX {method} {path}: {type(exc).__name__}: {exc}"
        # Raised here, outside the handler: not even as __context__ does the DiracError
        # carry aiohttp's exception, whose request_info holds the Authorization header.
        raise DiracError(failure)

    async def register_pilot(
        self,
        *,
        stamp: str,
        vo: str,
        grid_type: str,
        grid_site: str,
        destination: str,
        reference: str,
    ) -> bool:
        """Register one pilot; False if DiracX already had the stamp (409: idempotent)."""
        body = {
            "pilot_stamp": stamp,
            "vo": vo,
            "grid_type": grid_type,
            "grid_site": grid_site,
            "destination_site": destination,
            "pilot_reference": reference,
        }
        try:
            await self._call("POST", "/api/pilots/", body)
        except DiracError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def update_pilots(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """``PATCH /api/pilots/metadata``: stamp -> fields (``Status``, ``Queue`` ...)."""
        await self._call("PATCH", "/api/pilots/metadata", dict(updates))

    async def search_pilots(
        self,
        search: Sequence[Mapping[str, Any]],
        *,
        parameters: Sequence[str] | None = None,
        per_page: int = SEARCH_PAGE_SIZE,
        max_rows: int = SEARCH_MAX_ROWS,
        slot: asyncio.Semaphore | None = None,
    ) -> list[dict[str, Any]]:
        """``POST /api/pilots/search``, every page (by ``PilotID``, so pages do not shift
        under a growing table), at most ``max_rows`` rows.

        DiracX answers 206 while more pages follow, 200 on the last, 416 past the end (the
        table shrank while paging). ``slot`` (a per-endpoint semaphore) is held for each
        page, not for the whole search: other pools' requests go between the pages.
        """
        body: dict[str, Any] = {
            "search": list(search),
            "sort": [{"parameter": "PilotID", "direction": "asc"}],
        }
        if parameters is not None:
            body["parameters"] = list(parameters)
        rows: list[dict[str, Any]] = []
        page = 1
        while len(rows) < max_rows:
            path = f"/api/pilots/search?page={page}&per_page={per_page}"
            try:
                async with slot or contextlib.nullcontext():
                    status, payload = await self._call("POST", path, body)
            except DiracError as exc:
                if exc.status == 416:
                    break
                raise
            found = _rows("POST /api/pilots/search", payload)
            rows.extend(found)
            if status != 206 or len(found) < per_page:
                break
            page += 1
        return rows[:max_rows]

    async def job_summary(
        self, search: Sequence[Mapping[str, Any]], grouping: Sequence[str] = ("Status",)
    ) -> list[dict[str, Any]]:
        """``POST /api/jobs/summary``: job counts per group of the jobs ``search`` matches."""
        _, rows = await self._call(
            "POST", "/api/jobs/summary", {"grouping": list(grouping), "search": list(search)}
        )
        return _rows("POST /api/jobs/summary", rows)


def _rows(call: str, payload: Any) -> list[dict[str, Any]]:
    """A JSON list of objects, or a DiracError: an answer of another shape (a proxy's
    page, another API version) must not escape as an AttributeError into the cycle."""
    rows = payload if payload is not None else []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DiracError(
            f"DiracX {call}: not a list of rows: {str(payload)[:100]}", transient=False
        )
    counts = [r["count"] for r in rows if "count" in r]
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise DiracError(f"DiracX {call}: a count that is not a number", transient=False)
    return rows


def _detail(text: str) -> str:
    """DiracX's (FastAPI's) ``{"detail": ...}`` if the body is one, else the body, short."""
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(payload, dict) and "detail" in payload:
        return str(payload["detail"])[:300]
    return text[:200]
