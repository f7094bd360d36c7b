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
