"""cloudpilot.dirac.client against a small HTTP server on 127.0.0.1: what it makes of
answers DiracX should not give, and what its errors carry.

The real DiracX is exercised end to end (tests/integration/test_diracx_e2e.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from cloudpilot.dirac.client import DiracClient, DiracError

TOKEN = "eyJ.secret-bearer-token.sig"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "answer", [{"detail": "not a list"}, ["Waiting"], [{"Status": "Waiting", "count": "3"}]]
)
def test_an_answer_of_another_shape_is_a_dirac_error(answer: object) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(answer)

    async def scenario() -> None:
        async with server(handler) as url:
            client = DiracClient(url, TOKEN)
            try:
                with pytest.raises(DiracError, match="jobs/summary"):
                    await client.job_summary([])
            finally:
                await client.close()

    asyncio.run(scenario())


def test_a_redirect_is_not_followed_with_the_token() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path == "/elsewhere":
            return web.json_response([])
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def scenario() -> None:
        async with server(handler) as url:
            client = DiracClient(url, TOKEN)
            try:
                with pytest.raises(DiracError, match="HTTP 307"):
                    await client.job_summary([])
            finally:
                await client.close()

    asyncio.run(scenario())
    assert seen == ["/api/jobs/summary"]


def test_a_network_error_does_not_carry_aiohttps_exception_and_its_headers() -> None:
    async def scenario() -> DiracError:
        client = DiracClient(f"http://127.0.0.1:{closed_port()}", TOKEN)
        try:
            await client.update_pilots({"stamp": {"Status": "Done"}})
        except DiracError as exc:
            return exc
        finally:
            await client.close()
        raise AssertionError("no error")

    error = asyncio.run(scenario())
    assert "ClientConnectorError" in str(error) and TOKEN not in str(error)
    # aiohttp's exceptions hold request_info (with the Authorization header): none is kept.
    assert error.__context__ is None and error.__cause__ is None


def diracx_like_search(total: int, pages: list[dict[str, str]]) -> Handler:
    """``POST /api/pilots/search`` paged as diracx-routers 0.7.0 pages it: 206 with a
    Content-Range while rows remain, 200 on the last page, 416 past the end."""

    async def handler(request: web.Request) -> web.StreamResponse:
        pages.append({**request.query, "body": await request.text()})
        page, per_page = int(request.query["page"]), int(request.query["per_page"])
        first = per_page * (page - 1)
        rows = [{"PilotID": k} for k in range(first, min(first + per_page, total))]
        if not rows and total:
            return web.json_response(status=416, headers={"Content-Range": f"pilots */{total}"})
        if len(rows) < total:
            last = first + len(rows) - 1
            headers = {"Content-Range": f"pilots {first}-{last}/{total}"}
            return web.json_response(rows, status=206, headers=headers)
        return web.json_response(rows)

    return handler


@pytest.mark.parametrize(("total", "requests"), [(0, 1), (5, 1), (2500, 3), (2000, 3)])
def test_a_pilot_search_reads_every_page(total: int, requests: int) -> None:
    pages: list[dict[str, str]] = []

    async def scenario() -> list[dict[str, object]]:
        async with server(diracx_like_search(total, pages)) as url:
            client = DiracClient(url, TOKEN)
            try:
                return await client.search_pilots(
                    [{"parameter": "VO", "operator": "eq", "value": "v"}],
                    parameters=["PilotID"],
                    per_page=1000,
                )
            finally:
                await client.close()

    rows = asyncio.run(scenario())
    assert [r["PilotID"] for r in rows] == list(range(total))
    # 2,000 rows: the second page is full and 206, the third is 416 (past the end).
    assert [p["page"] for p in pages] == [str(k + 1) for k in range(requests)]
    assert all(p["per_page"] == "1000" for p in pages)
    # Sorted by PilotID: a page boundary does not move while the table grows at its end.
    assert '"sort": [{"parameter": "PilotID", "direction": "asc"}]' in pages[0]["body"]
    assert '"parameters": ["PilotID"]' in pages[0]["body"]


def test_a_pilot_search_is_bounded_and_takes_the_slot_per_page() -> None:
    pages: list[dict[str, str]] = []
    slot = asyncio.Semaphore(1)
    held: list[bool] = []

    async def scenario() -> list[dict[str, object]]:
        handler = diracx_like_search(10_000, pages)

        async def watched(request: web.Request) -> web.StreamResponse:
            held.append(slot.locked())
            return await handler(request)

        async with server(watched) as url:
            client = DiracClient(url, TOKEN)
            try:
                return await client.search_pilots([], per_page=100, max_rows=250, slot=slot)
            finally:
                await client.close()

    rows = asyncio.run(scenario())
    assert len(rows) == 250 and len(pages) == 3
    assert held == [True, True, True] and not slot.locked()
