"""The operator's one asynchronous Kubernetes client: every request CloudPilot itself sends
(status patches, Events, Secret and ConfigMap reads, the leader Lease). kopf keeps its own
connection for watching pools and for its finalizer and annotation patches.

Why a thin aiohttp client of its own, and neither the official synchronous ``kubernetes``
package (used until now, in worker threads) nor ``kubernetes-asyncio``:

* **The same login as kopf.** It logs in with kopf's own login functions (the in-cluster
  service account, then ``KUBECONFIG`` / ``~/.kube/config``: what
  :func:`cloudpilot.kube.handlers.register` gives kopf) and builds its session from kopf's
  :class:`kopf.ConnectionInfo` (``as_ssl_context``, ``as_http_headers``). The two clients
  cannot disagree about which cluster they talk to or as whom; another library would bring
  a kubeconfig loader of its own, with its own precedence and its own bugs.
* **Nothing new to install.** aiohttp is kopf's; ``kubernetes-asyncio`` is a large
  generated package, untyped (``mypy --strict`` would need an ignore at each call), and
  the official one needs a thread per call. The operator needs eight calls: each is one
  typed method here, and :class:`KubeApi` names them (the RBAC rules follow from it).
* **Its rules in one place:** a strict timeout on every call (retries included), retries on
  429 / 5xx decided by the pure :mod:`cloudpilot.kube.retry`, a fresh login on 401 (a
  rotated service-account token; at most one per
  :data:`~cloudpilot.constants.KUBE_RELOGIN_INTERVAL`, shared by concurrent 401s, the old
  session closed only once the requests still on it are answered), and errors that never
  carry a body or a header.

Secrets: a response body is parsed and handed to the caller, never logged or put into an
exception; :class:`ApiError` holds the status, the API's ``reason`` and its ``message``
passed through redaction, and every exception is raised ``from None`` (aiohttp's own carry
the request's headers, the bearer token among them).

One client per event loop and per operator run: :func:`using` makes it the current one for
every task started inside (a context variable, as :mod:`cloudpilot.leader` does for the
elector), so the module-level helpers (:mod:`cloudpilot.kube.status`, ``.events``,
``.secrets``) and the reconciler's defaults find it without it being threaded through.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import kopf

from cloudpilot import constants, redaction
from cloudpilot.kube import retry
from cloudpilot.kube.sessions import SessionUsers

logger = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
MAX_ERROR_MESSAGE = 300
"""The API server's message is kept for the operator's log, cut: a Status message quotes
the object's name and the failed field, never more is needed to act on it."""

Login = Callable[[], kopf.ConnectionInfo]


class ApiError(Exception):
    """The API server answered ``status`` (a 4xx or a 5xx that was not retried away)."""

    def __init__(self, status: int, what: str, reason: str = "", message: str = "") -> None:
        self.status = status
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        text = f": {message}" if message else ""
        super().__init__(f"{what}: HTTP {status}{detail}{text}")


class KubeUnavailable(ConnectionError):
    """No answer in time, or no connection: the API server is down, restarting or far."""


class KubeApi(Protocol):
    """What the operator asks of the Kubernetes API (tests pass fakes of it). Objects are
    plain JSON dicts; every call takes an optional ``limit``: its timeout (seconds, all retries
    included; :data:`~cloudpilot.constants.KUBE_CALL_TIMEOUT` by default)."""

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, limit: float | None = None
    ) -> None:
        """Merge-patch a pool's ``/status`` (``{"status": patch}``), strict validation."""

    async def create_event(
        self, namespace: str, event: Mapping[str, Any], *, limit: float | None = None
    ) -> dict[str, Any]:
        """Create a core/v1 Event; the created object."""

    async def patch_event(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, limit: float | None = None
    ) -> None:
        """Merge-patch an Event (aggregation: ``count``, ``lastTimestamp``)."""

    async def read_secret(
        self, namespace: str, name: str, *, limit: float | None = None
    ) -> dict[str, str]:
        """A Secret's ``data`` (values base64, as the API gives them)."""

    async def read_configmap(
        self, namespace: str, name: str, *, limit: float | None = None
    ) -> dict[str, str]:
        """A ConfigMap's ``data``."""

    async def read_lease(
        self, namespace: str, name: str, *, limit: float | None = None
    ) -> dict[str, Any]:
        """A coordination.k8s.io/v1 Lease."""

    async def create_lease(
        self, namespace: str, body: Mapping[str, Any], *, limit: float | None = None
    ) -> dict[str, Any]:
        """Create a Lease; the created object."""

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any], *, limit: float | None = None
    ) -> dict[str, Any]:
        """Replace a Lease (``body`` carries the ``resourceVersion`` it was read at)."""


def default_login() -> kopf.ConnectionInfo:
    """The in-cluster service account, else ``KUBECONFIG`` / ``~/.kube/config``: kopf's own
    login functions, as the operator's kopf login handler calls them."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if info is None:
        raise KubeUnavailable("no Kubernetes credentials: no service account and no kubeconfig")
    return info


def _segment(value: str) -> str:
    return quote(value, safe="")


class KubeClient:
    """:class:`KubeApi` over one aiohttp session (opened at the first call, in the running
    event loop; close it with :meth:`close` or ``async with``)."""

    def __init__(
        self,
        login: Login = default_login,
        *,
        timeout: float = constants.KUBE_CALL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        relogin_interval: float = constants.KUBE_RELOGIN_INTERVAL,
    ) -> None:
        self._login = login
        self.timeout = timeout
        self._clock = clock
        self._relogin_interval = relogin_interval
        self._relogged_at = float("-inf")
        self._session: aiohttp.ClientSession | None = None
        self._sessions = SessionUsers()
        self._server = ""
        self._opening = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session; the client sends nothing after this (a call raises
        :class:`KubeUnavailable`) rather than open a session nobody would close."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self._sessions.close_all()

    async def _open(self) -> aiohttp.ClientSession:
        async with self._opening:
            if self._session is None:
                info, ssl_context = await self._log_in()
                if self._closed:  # closed while logging in: open nothing
                    raise KubeUnavailable("the Kubernetes client is closed")
                self._server = info.server.rstrip("/")
                self._session = aiohttp.ClientSession(
                    # No connection limit (kopf's choice too): a Lease renewal must never
                    # queue behind a burst of status writes waiting for a free connection.
                    connector=aiohttp.TCPConnector(limit=0, ssl=ssl_context),
                    headers={**info.as_http_headers(), "User-Agent": "cloudpilot"},
                    proxy=info.proxy_url,
                    trust_env=info.trust_env,
                )
            return self._session

    async def _log_in(self) -> tuple[kopf.ConnectionInfo, ssl.SSLContext]:
        """kopf's login and its TLS context, read in worker threads (files: token,
        kubeconfig, certificates). A failure is named by its class only: a kubeconfig's
        YAML parser quotes the line it stopped at, which may be the token's."""
        if self._closed:
            raise KubeUnavailable("the Kubernetes client is closed")
        failure = ""
        try:
            info = await asyncio.to_thread(self._login)
            ssl_context = await asyncio.to_thread(info.as_ssl_context)
        except KubeUnavailable:
            raise
        except Exception as exc:
            failure = type(exc).__name__
        if failure:  # raised outside the handler: no __context__ to carry the text
            raise KubeUnavailable(f"logging in to the Kubernetes API failed: {failure}")
        return info, ssl_context

    async def _relogin(self, stale: aiohttp.ClientSession) -> bool:
        """401: the token was rotated (a projected service-account token lives an hour), so
        the next request logs in again, on a new session. Whether to send the request again:
        yes when another request's 401 already replaced ``stale`` (concurrent 401s share one
        login); no when the last re-login is younger than the interval (a token that stays
        refused: each call would read the token files and connect again, for another 401).

        ``stale`` is retired, not closed: requests still in flight on it (an Event POST,
        which is never resent) get their answers, and the last of them closes it."""
        async with self._opening:
            if self._session is not stale:
                return True
            now = self._clock()
            if now - self._relogged_at < self._relogin_interval:
                return False
            self._relogged_at = now
            self._session = None
        await self._sessions.retire(stale)
        return True

    # -- the one request path -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = JSON,
        limit: float | None = None,
    ) -> dict[str, Any]:
        """Send one request (retried per :mod:`cloudpilot.kube.retry`) and return the JSON
        answer. Raises :class:`ApiError` for an error answer and :class:`KubeUnavailable`
        when no answer came within ``limit`` seconds (all attempts included)."""
        limit = self.timeout if limit is None else max(limit, 0.01)
        what = f"{method} {path}"
        started = self._clock()
        try:
            async with asyncio.timeout(limit):
                return await self._attempts(
                    method, path, body, params, content_type, what, started, limit
                )
        except TimeoutError:
            raise KubeUnavailable(f"{what}: no answer within {limit:.1f}s") from None

    async def _attempts(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        content_type: str,
        what: str,
        started: float,
        limit: float,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Accept": JSON, "Content-Type": content_type}
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            session = await self._open()
            retry_after: float | None = None
            error: Exception
            try:
                async with (
                    self._sessions.use(session),
                    session.request(
                        method, self._server + path, params=params, data=data, headers=headers
                    ) as response,
                ):
                    status = response.status
                    if status < 400:
                        answer: dict[str, Any] = await response.json(content_type=None)
                        return answer
                    error = await _error_of(response, what)
                    retry_after = retry.parse_retry_after(response.headers.get("Retry-After"))
            except aiohttp.ClientConnectorError as exc:
                status, error = retry.NOT_SENT, KubeUnavailable(f"{what}: {type(exc).__name__}")
            except (aiohttp.ClientError, ValueError) as exc:
                # A dropped connection, or an answer that is not JSON: its text is not shown.
                status, error = retry.LOST, KubeUnavailable(f"{what}: {type(exc).__name__}")
            if status == 401 and not relogged:
                relogged = True
                if await self._relogin(session):
                    continue
            delay = retry.retry_delay(
                method,
                status,
                attempt,
                remaining=limit - (self._clock() - started),
                retry_after=retry_after,
            )
            if delay is None:
                raise error
            logger.debug("%s: %s; attempt %d in %.2fs", what, error, attempt + 1, delay)
            await asyncio.sleep(delay)  # back-off between attempts, inside the deadline

    # -- KubeApi ---------------------------------------------------------------------------------

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, limit: float | None = None
    ) -> None:
        path = (
            f"/apis/{constants.API_GROUP}/{constants.API_VERSION}/namespaces/"
            f"{_segment(namespace)}/{constants.PLURAL}/{_segment(name)}/status"
        )
        # Strict: a field the CRD lacks is an error, never pruned quietly.
        await self.request(
            "PATCH",
            path,
            body={"status": dict(patch)},
            params={"fieldValidation": "Strict"},
            content_type=MERGE_PATCH,
            limit=limit,
        )

    async def create_event(
        self, namespace: str, event: Mapping[str, Any], *, limit: float | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "POST",
            f"/api/v1/namespaces/{_segment(namespace)}/events",
            body=event,
            params={"fieldValidation": "Strict"},
            limit=limit,
        )

    async def patch_event(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, limit: float | None = None
    ) -> None:
        await self.request(
            "PATCH",
            f"/api/v1/namespaces/{_segment(namespace)}/events/{_segment(name)}",
            body=patch,
            content_type=MERGE_PATCH,
            limit=limit,
        )

    async def read_secret(
        self, namespace: str, name: str, *, limit: float | None = None
    ) -> dict[str, str]:
        path = f"/api/v1/namespaces/{_segment(namespace)}/secrets/{_segment(name)}"
        return dict((await self.request("GET", path, limit=limit)).get("data") or {})

    async def read_configmap(
        self, namespace: str, name: str, *, limit: float | None = None
    ) -> dict[str, str]:
        path = f"/api/v1/namespaces/{_segment(namespace)}/configmaps/{_segment(name)}"
        return dict((await self.request("GET", path, limit=limit)).get("data") or {})

    async def read_lease(
        self, namespace: str, name: str, *, limit: float | None = None
    ) -> dict[str, Any]:
        return await self.request("GET", _lease_path(namespace, name), limit=limit)

    async def create_lease(
        self, namespace: str, body: Mapping[str, Any], *, limit: float | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "POST",
            _lease_path(namespace),
            body=body,
            params={"fieldValidation": "Strict"},
            limit=limit,
        )

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any], *, limit: float | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "PUT",
            _lease_path(namespace, name),
            body=body,
            params={"fieldValidation": "Strict"},
            limit=limit,
        )


def _lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{_segment(namespace)}/leases"
    return base if name is None else f"{base}/{_segment(name)}"


async def _error_of(response: aiohttp.ClientResponse, what: str) -> ApiError:
    """An :class:`ApiError` from a Status answer: its reason and its redacted, cut message
    (a non-Status body is not quoted at all: it might be anything)."""
    reason = message = ""
    try:
        status = json.loads(await response.read())
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        reason = str(status.get("reason") or "")
        message = redaction.redact(str(status.get("message") or ""))[:MAX_ERROR_MESSAGE]
    return ApiError(response.status, what, reason, message)


# -- the current client --------------------------------------------------------------------------

_current: contextvars.ContextVar[KubeApi | None] = contextvars.ContextVar(
    "cloudpilot_kube_client", default=None
)


def current() -> KubeApi:
    """The client of this operator run (see :func:`using`)."""
    api = _current.get()
    if api is None:
        raise RuntimeError(
            "no Kubernetes client in this context: call it inside cloudpilot.kube.client.using()"
        )
    return api


@contextlib.contextmanager
def using(api: KubeApi) -> Iterator[KubeApi]:
    """Make ``api`` the current client for this task and every task started inside."""
    token = _current.set(api)
    try:
        yield api
    finally:
        _current.reset(token)


@contextlib.contextmanager
def using_kubeconfig(path: str | os.PathLike[str]) -> Iterator[None]:
    """Point this process (kopf's login and CloudPilot's) at ``path`` for a while: the
    demo, the tests and the benchmark run against API servers they started. A client logs
    in when it first sends, so only clients opened inside see it."""
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
