"""The operator's Kubernetes client (cloudpilot.kube.client) against a scripted HTTP server
on 127.0.0.1: what it sends, what it retries, its deadline, its re-login, and that its
errors carry no secret. The real API server's side is in tests/integration."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
from aiohttp import web

from cloudpilot import redaction
from cloudpilot.kube import client, secrets
from cloudpilot.kube.client import ApiError, KubeClient, KubeUnavailable

TOKEN = "bearer-token-that-must-stay-private"
SECRET_VALUE = "s3cr3t-value-from-a-secret"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str
    body: Any


@dataclass
class Server:
    """Answers each request with the next scripted answer (the last one repeats)."""

    answers: list[Callable[[], Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    hang: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                request.content_type,
                request.headers.get("Authorization", ""),
                json.loads(raw) if raw else None,
            )
        )
        answer = self.answers[min(len(self.seen), len(self.answers)) - 1]()
        return await answer if inspect.isawaitable(answer) else answer


def status(code: int, reason: str = "", message: str = "") -> Callable[[], web.Response]:
    body = {"kind": "Status", "code": code, "reason": reason, "message": message}
    return lambda: web.json_response(body, status=code)


def ok(body: dict[str, Any]) -> Callable[[], web.Response]:
    return lambda: web.json_response(body)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    scripted = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scripted.url = f"http://127.0.0.1:{port}"
    try:
        yield scripted
    finally:
        scripted.hang.set()
        await runner.cleanup()


def login_to(server: Server, tokens: list[str] | None = None) -> Callable[[], kopf.ConnectionInfo]:
    """A login that hands out ``tokens`` in turn (a rotated service-account token)."""
    issued = list(tokens or [TOKEN])

    def login() -> kopf.ConnectionInfo:
        token = issued.pop(0) if len(issued) > 1 else issued[0]
        return kopf.ConnectionInfo(server=server.url, token=token)

    return login


@pytest.fixture
async def kube(server: Server) -> AsyncIterator[KubeClient]:
    async with KubeClient(login_to(server)) as api:
        yield api


async def test_a_status_patch_is_a_strict_merge_patch_of_the_status_subresource(
    server: Server, kube: KubeClient
) -> None:
    server.answers = [ok({"kind": "CloudPilotPool"})]
    await kube.patch_status("grid", "lhcb", {"replicas": 3})

    [seen] = server.seen
    assert (seen.method, seen.path) == (
        "PATCH",
        "/apis/cloudpilot.io/v1alpha1/namespaces/grid/cloudpilotpools/lhcb/status",
    )
    assert seen.content_type == "application/merge-patch+json"
    assert seen.query == {"fieldValidation": "Strict"}
    assert seen.body == {"status": {"replicas": 3}}
    assert seen.authorization == f"Bearer {TOKEN}"


async def test_429_is_waited_out_with_retry_after(server: Server, kube: KubeClient) -> None:
    def throttled() -> web.Response:
        return web.json_response(
            {"kind": "Status", "code": 429, "reason": "TooManyRequests"},
            status=429,
            headers={"Retry-After": "0"},
        )

    server.answers = [throttled, throttled, ok({"metadata": {"name": "cloudpilot-event-x"}})]
    created = await kube.create_event("grid", {"reason": "Created"})

    assert created["metadata"]["name"] == "cloudpilot-event-x"
    assert [s.method for s in server.seen] == ["POST"] * 3


async def test_a_5xx_is_retried_for_a_read_but_a_post_is_sent_once(
    server: Server, kube: KubeClient
) -> None:
    server.answers = [status(503, "ServiceUnavailable"), ok({"data": {"k": "dg=="}})]
    assert await kube.read_configmap("grid", "context") == {"k": "dg=="}
    assert len(server.seen) == 2

    server.seen.clear()
    server.answers = [status(500, "InternalError", "etcd timed out")]
    with pytest.raises(ApiError) as failed:
        await kube.create_event("grid", {"reason": "Created"})
    assert failed.value.status == 500
    assert len(server.seen) == 1


async def test_every_call_has_a_deadline_retries_included(server: Server) -> None:
    async def hung() -> web.StreamResponse:
        await server.hang.wait()  # a connection that never answers
        return web.Response()

    server.answers = [hung]
    async with KubeClient(login_to(server), timeout=0.3) as kube:
        with pytest.raises(KubeUnavailable, match=r"no answer within 0\.3s"):
            await kube.read_lease("grid", "cloudpilot-operator")
        with pytest.raises(KubeUnavailable, match=r"no answer within 0\.1s"):
            await kube.read_lease("grid", "cloudpilot-operator", limit=0.1)


async def test_a_401_logs_in_again_once(server: Server) -> None:
    """A projected service-account token is rotated: the next login reads the new one."""
    server.answers = [status(401, "Unauthorized"), ok({"data": {}})]
    async with KubeClient(login_to(server, ["expired-token", "fresh-token"])) as kube:
        await kube.read_secret("grid", "creds")
    assert [s.authorization for s in server.seen] == ["Bearer expired-token", "Bearer fresh-token"]

    server.seen.clear()
    server.answers = [status(401, "Unauthorized")]
    async with KubeClient(login_to(server)) as kube:
        with pytest.raises(ApiError) as failed:
            await kube.read_secret("grid", "creds")
    assert failed.value.status == 401
    assert len(server.seen) == 2  # one fresh login, then it is the server's answer


def counted(login: Callable[[], kopf.ConnectionInfo], logins: list[str]) -> client.Login:
    """``login``, each call noted in ``logins``."""

    def counting() -> kopf.ConnectionInfo:
        info = login()
        logins.append(info.token or "")
        return info

    return counting


async def test_a_401_leaves_the_requests_in_flight_on_the_old_session_their_answers(
    server: Server,
) -> None:
    """A rotated token: one call's 401 logs in again while an Event POST is still waiting
    for its answer on the old session. The POST gets its answer (it is never resent: it
    may have been created), and the old session is closed once it has."""
    arrived = asyncio.Event()

    async def held() -> web.Response:
        arrived.set()
        await server.hang.wait()
        return web.json_response({"metadata": {"name": "cloudpilot-event-x"}})

    server.answers = [held, status(401, "Unauthorized"), ok({"data": {}})]
    async with KubeClient(login_to(server, ["old-token", "new-token"])) as kube:
        post = asyncio.ensure_future(kube.create_event("grid", {"reason": "Created"}))
        await arrived.wait()
        old = kube._session
        assert old is not None
        await kube.read_secret("grid", "creds")  # 401, a fresh login, then answered
        assert kube._session is not old
        assert not old.closed, "the old session was closed under a request in flight"
        server.hang.set()
        created = await post
        assert created["metadata"]["name"] == "cloudpilot-event-x"
        assert old.closed, "the replaced session outlived its last request"
    tokens = [s.authorization for s in server.seen]
    assert tokens == ["Bearer old-token", "Bearer old-token", "Bearer new-token"]


async def test_a_token_that_stays_refused_logs_in_again_at_most_once_per_interval(
    server: Server,
) -> None:
    now = [100.0]
    logins: list[str] = []
    server.answers = [status(401, "Unauthorized")]
    async with KubeClient(
        counted(login_to(server), logins), clock=lambda: now[0], relogin_interval=30.0
    ) as kube:
        for _ in range(3):
            with pytest.raises(ApiError) as refused:
                await kube.read_secret("grid", "creds")
            assert refused.value.status == 401
        # The first call: 401, a fresh login, 401. The next two: the 401, no login.
        assert (len(logins), len(server.seen)) == (2, 4)

        now[0] += 30.0
        with pytest.raises(ApiError):
            await kube.read_secret("grid", "creds")
        assert (len(logins), len(server.seen)) == (3, 6)


async def test_concurrent_401s_share_one_fresh_login(server: Server) -> None:
    logins: list[str] = []
    all_sent = asyncio.Event()

    async def refused_once_all_sent() -> web.Response:
        if len(server.seen) >= 3:
            all_sent.set()
        await all_sent.wait()  # all three on the old session before any 401 comes back
        return status(401, "Unauthorized")()

    server.answers = [refused_once_all_sent] * 3 + [ok({"data": {}})]
    login = counted(login_to(server, ["old-token", "new-token"]), logins)
    async with KubeClient(login) as kube:
        await asyncio.gather(*(kube.read_secret("grid", f"creds-{n}") for n in range(3)))
    assert logins == ["old-token", "new-token"]
    tokens = sorted(s.authorization for s in server.seen)
    assert tokens == ["Bearer new-token"] * 3 + ["Bearer old-token"] * 3


async def test_an_error_carries_no_secret_no_token_and_no_body(
    server: Server, kube: KubeClient
) -> None:
    redaction.register("test-kube-client", [SECRET_VALUE])
    try:
        server.answers = [
            status(422, "Invalid", f"status.message: Invalid value: {SECRET_VALUE!r}"),
        ]
        with pytest.raises(ApiError) as invalid:
            await kube.patch_status("grid", "lhcb", {"message": SECRET_VALUE})
        server.answers = [lambda: web.Response(status=400, text=f"not a Status {SECRET_VALUE}")]
        with pytest.raises(ApiError) as unparsed:
            await kube.read_secret("grid", "creds")
    finally:
        redaction.forget("test-kube-client")

    for error in (invalid.value, unparsed.value):
        text = f"{error} {error!r} {error.args}"
        assert SECRET_VALUE not in text and TOKEN not in text
        # Not chained to aiohttp's exceptions, which hold the request's headers.
        assert error.__cause__ is None and error.__context__ is None
    assert "Invalid" in str(invalid.value) and "HTTP 422" in str(invalid.value)
    assert "not a Status" not in str(unparsed.value)


async def test_the_secret_helpers_read_through_the_current_client(
    server: Server, kube: KubeClient
) -> None:
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    server.answers = [ok({"kind": "Secret", "data": {"secret": encoded}})]
    with client.using(kube):
        assert await secrets.read_secret("grid", "creds") == {"secret": SECRET_VALUE.encode()}
        server.answers = [status(404, "NotFound", 'secrets "gone" not found')]
        with pytest.raises(secrets.MissingReferenceError, match="Secret grid/gone not found"):
            await secrets.read_secret("grid", "gone")
        server.answers = [status(403, "Forbidden")]
        with pytest.raises(secrets.MissingReferenceError, match="forbidden"):
            await secrets.read_configmap("grid", "context")
    assert server.seen[0].path == "/api/v1/namespaces/grid/secrets/creds"


async def test_without_an_operator_run_there_is_no_current_client() -> None:
    with pytest.raises(RuntimeError, match="no Kubernetes client"):
        client.current()


async def test_a_server_that_refuses_connections_is_unavailable(server: Server) -> None:
    url = server.url
    async with KubeClient(
        lambda: kopf.ConnectionInfo(server=url.rsplit(":", 1)[0] + ":1"), timeout=2.0
    ) as kube:
        with pytest.raises(KubeUnavailable, match="ClientConnectorError"):
            await kube.read_lease("grid", "cloudpilot-operator")


async def test_a_failed_login_says_what_failed_but_never_what_it_read(server: Server) -> None:
    """A malformed kubeconfig makes its YAML parser quote the line it stopped at: the
    token's line, as often as not. That text must reach no log line through the client."""

    def broken_kubeconfig() -> kopf.ConnectionInfo:
        raise ValueError(f"expected the node content\n  ... : {{token: {TOKEN}, x: [}}")

    async with KubeClient(broken_kubeconfig) as kube:
        with pytest.raises(KubeUnavailable) as failed:
            await kube.read_lease("grid", "cloudpilot-operator")

    error = failed.value
    assert "ValueError" in str(error)
    assert TOKEN not in f"{error} {error!r} {error.args}"
    assert error.__cause__ is None and error.__context__ is None
    assert server.seen == []


async def test_a_closed_client_sends_nothing_and_opens_no_session(server: Server) -> None:
    server.answers = [ok({"kind": "Lease"})]
    kube = KubeClient(login_to(server))
    await kube.read_lease("grid", "cloudpilot-operator")
    await kube.close()

    with pytest.raises(KubeUnavailable, match="closed"):
        await kube.read_lease("grid", "cloudpilot-operator")
    assert len(server.seen) == 1
    assert kube._session is None, "a session was opened after close(): nobody closes it"


async def test_closing_while_a_call_logs_in_leaves_no_session_open(server: Server) -> None:
    """close() during a login (it reads files in a worker thread): the session that login
    would have opened is never made, so nothing is left for the garbage collector."""
    logging_in, may_finish = threading.Event(), threading.Event()
    login = login_to(server)

    def slow_login() -> kopf.ConnectionInfo:
        logging_in.set()
        may_finish.wait(10)
        return login()

    server.answers = [ok({"kind": "Lease"})]
    kube = KubeClient(slow_login)
    call = asyncio.ensure_future(kube.read_lease("grid", "cloudpilot-operator"))
    try:
        assert await asyncio.to_thread(logging_in.wait, 10)
        await kube.close()
    finally:
        may_finish.set()
    with pytest.raises(KubeUnavailable, match="closed"):
        await call
    assert server.seen == []
    assert kube._session is None, "the login's session outlived close()"
