"""A loopback HTTP reverse proxy in front of the EC2 emulator: latency, counts, faults.

Why: moto answers in a millisecond, never throttles, has no quotas and no user-data size
limit. CloudPilot's behaviour under a real cloud (slow calls overlapping reconcile loops,
``RequestLimitExceeded`` back-off, capacity errors, oversized user data, how many API calls a
reconcile costs) can only be tested if something adds those. This proxy sits between
libcloud and moto (point the driver's host/port at :attr:`LatencyProxy.endpoint`) and:

* delays every request by a configurable time (changeable at runtime, per EC2 ``Action``
  if wanted); the delay actually applied is accumulated in :attr:`injected_delay` so tests
  can check it without measuring wall-clock time;
* counts requests by EC2 API ``Action`` (query string or form body): :attr:`counts`;
* answers the next N requests of an Action with an EC2-style error (:meth:`fail_next`);
* rejects RunInstances whose decoded ``UserData`` exceeds a limit, as EC2 does at 16 KiB
  (:attr:`user_data_limit`);
* enforces an instance quota (:attr:`instance_limit`): a RunInstances starts what fits up
  to ``MaxCount``, or is refused with ``InstanceLimitExceeded`` when not even ``MinCount``
  fits, as EC2 does;
* holds requests of an Action until released (:meth:`hold`, :meth:`wait_for_held`), so a
  test can catch calls in flight deterministically instead of racing against a delay;
* holds the *answers* of an Action after the target has acted (:meth:`hold_answers`), the
  moment a client dies knowing nothing of what the cloud did.
* hangs the next N requests of an Action for good (:meth:`hang_next`: never answered, as a
  dead connection is; the client must time out) and loses the answer of the next N after
  the target acted on them (:meth:`lose_answer_next`: the connection is cut instead).

Standard library only: ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1
keep-alive) and ``http.client`` towards the target. The Host header is forwarded unchanged,
so the SigV4 signature computed for the proxy's address reaches moto intact (moto does not
verify signatures anyway).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import logging
import socket
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Self
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.sax.saxutils import escape

from cloudpilot_devtools.background import SocketServerThread

__all__ = [
    "EC2_ERRORS",
    "EC2_USER_DATA_LIMIT",
    "InjectedFault",
    "LatencyProxy",
]

_log = logging.getLogger(__name__)

#: Requests kept in :attr:`LatencyProxy.request_log` (the latest ones).
REQUEST_LOG_SIZE: Final = 10_000

#: EC2's limit on user data, in bytes, before base64 encoding.
EC2_USER_DATA_LIMIT: Final = 16 * 1024

#: Default HTTP status and message for EC2 error codes worth injecting (status as EC2
#: returns it: throttling is 503, server-side capacity errors are 5xx, quota errors 400).
EC2_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "Unavailable": (503, "The server is overloaded and can't handle the request."),
    "InternalError": (500, "An internal error has occurred."),
    "InsufficientInstanceCapacity": (
        500,
        "We currently do not have sufficient capacity in the Availability Zone you requested.",
    ),
    "InstanceLimitExceeded": (
        400,
        "You have requested more instances than your current instance limit allows.",
    ),
    "VcpuLimitExceeded": (
        400,
        "You have requested more vCPU capacity than your current vCPU limit allows.",
    ),
    "AuthFailure": (401, "AWS was not able to validate the provided access credentials."),
    "UnauthorizedOperation": (403, "You are not authorized to perform this operation."),
    "InvalidParameterValue": (400, "Invalid parameter value."),
}

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy recomputes.
_SKIP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


RUN_INSTANCES_KEPT = 100
"""RunInstances requests whose parameters the proxy keeps (a bound, whatever the churn)."""
_NOT_LOGGED = frozenset({"UserData", "Signature", "AWSAccessKeyId", "SecurityToken"})
"""Never kept: the pilot's user data (it carries a proxy) and anything that signs."""


@dataclass(frozen=True)
class InjectedFault:
    """An EC2-style error answered instead of forwarding."""

    status: int
    code: str
    message: str

    def body(self) -> bytes:
        """The XML EC2 sends for errors (no namespace), parsed by libcloud's EC2Response."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{escape(self.code)}</Code>"
            f"<Message>{escape(self.message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
        ).encode()


_HANG: Final = InjectedFault(0, "Hang", "never answered")
"""Marker fault: keep the request unanswered until the proxy stops."""


def _params(query: str, content_type: str, body: bytes) -> dict[str, str]:
    """EC2 query-API parameters from the query string and a form-encoded body."""
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if body and content_type.split(";")[0].strip() == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        params.update({k: v[0] for k, v in form.items()})
    return params


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: LatencyProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as libcloud's requests session expects
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds
    # ~40 ms to every request on loopback: latency we would not have asked for.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("latency proxy: " + format, *args)

    def do_GET(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        proxy = self.server.proxy
        proxy._enter()
        try:
            self._serve(proxy)
        finally:
            proxy._leave()

    def _serve(self, proxy: LatencyProxy) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        params = _params(urlsplit(self.path).query, self.headers.get("Content-Type", ""), body)
        action = params.get("Action", "")
        fault = proxy._check_access_key(self.headers.get("Authorization", ""))
        fault = fault or proxy._on_request(action, params)
        if proxy._closing.is_set():
            fault = InjectedFault(503, "Unavailable", "The proxy is shutting down.")
        if fault is _HANG:
            proxy._closing.wait()  # never answered; stop() ends the wait
            self.close_connection = True
            return
        if fault is not None:
            self._reply(fault.status, [("Content-Type", "text/xml;charset=UTF-8")], fault.body())
            return
        try:
            if action == "RunInstances" and proxy.instance_limit is not None:
                with proxy._quota_lock:  # count and create as one step, as EC2 does
                    fault, path, body = proxy._apply_instance_limit(
                        self.headers, params, self.path, body
                    )
                    if fault is not None:
                        self._reply(
                            fault.status, [("Content-Type", "text/xml;charset=UTF-8")], fault.body()
                        )
                        return
                    status, headers, data = proxy._forward(self.command, path, self.headers, body)
            else:
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
        except OSError as exc:
            _log.warning("latency proxy: upstream error: %s", exc)
            err = InjectedFault(502, "Unavailable", f"upstream error: {exc}")
            self._reply(err.status, [("Content-Type", "text/xml;charset=UTF-8")], err.body())
            return
        proxy._wait_if_answer_held(action)
        if proxy._take_lost_answer(action):
            # The target acted; the client never learns it: cut the connection.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._reply(status, headers, data)

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        try:
            self._send(status, headers, data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its own timeout) while the answer was held back.
            self.close_connection = True

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _SKIP_HEADERS and name.lower() not in ("server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class LatencyProxy(SocketServerThread):
    """Reverse proxy on 127.0.0.1 (free port) to ``target`` with latency, counts, faults.

    Usage::

        with EC2Emulator() as ec2, LatencyProxy(ec2.endpoint, latency=0.2) as proxy:
            driver = MotoEC2NodeDriver(*ec2.credentials,
                                       **ec2.driver_options(proxy.endpoint))
            proxy.fail_next("RunInstances", "InsufficientInstanceCapacity")
            ...
            assert proxy.counts["RunInstances"] == 1
    """

    description = "latency-proxy"

    def __init__(
        self,
        target: tuple[str, int],
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        user_data_limit: int | None = None,
        upstream_timeout: float = 60.0,
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):  # ThreadingHTTPServer is IPv4
            raise ValueError("LatencyProxy only listens on IPv4 loopback")
        super().__init__()
        self.handler_join_timeout = upstream_timeout
        self._target = target
        self._host = host
        self._port = port
        self._upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._latency = self._check_delay(latency)
        self._action_latency: dict[str, float] = {}
        self._user_data_limit = user_data_limit
        self._counts: Counter[str] = Counter()
        self._run_instances: list[dict[str, str]] = []
        self._request_log: deque[tuple[float, str]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._faults_served: Counter[str] = Counter()
        self._faults: dict[str, list[InjectedFault]] = {}
        self._lost_answers: Counter[str] = Counter()
        self._access_keys: Counter[str] = Counter()
        self._rejected_keys: set[str] = set()
        self._injected_delay = 0.0
        self._delayed_requests = 0
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self._holds: set[str] = set()
        self._held = 0
        self._answer_holds: set[str] = set()
        self._answers_held = 0
        self._in_flight = 0
        self.instance_limit: int | None = None
        """Most live (pending or running) instances the account allows; None: no quota. A
        ``RunInstances`` past it starts what fits up to ``MaxCount``, or is refused with
        ``InstanceLimitExceeded`` when fewer than ``MinCount`` fit, as EC2 does."""
        self._quota_lock = threading.Lock()

    # -- lifecycle (start, stop, connection tracking: SocketServerThread) -------------------

    def _make_server(self) -> _Server:
        server = _Server((self._host, self._port), _Handler)
        server.proxy = self
        return server

    def start(self) -> Self:
        self._closing.clear()
        return super().start()

    def stop(self) -> None:
        """Stop accepting, cut pending delays and holds short, close connections, join
        threads."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        super().stop()

    def _drain(self) -> None:
        # Let requests being served (now released from delays and holds) send their answer
        # before the connections are cut.
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0, self._upstream_timeout)

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) to give the libcloud driver instead of the target's."""
        address = self.server_address
        if address is None:
            raise RuntimeError("LatencyProxy is not running")
        return address

    @property
    def url(self) -> str:
        host, port = self.endpoint
        return f"http://{host}:{port}"

    # -- latency ---------------------------------------------------------------------------

    @staticmethod
    def _check_delay(seconds: float) -> float:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        return float(seconds)

    @property
    def latency(self) -> float:
        """Delay in seconds added to every request (unless overridden for its Action)."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = self._check_delay(seconds)

    def set_latency(self, seconds: float, action: str | None = None) -> None:
        """Set the delay for all requests, or for one Action (e.g. a slow RunInstances)."""
        seconds = self._check_delay(seconds)
        with self._lock:
            if action is None:
                self._latency = seconds
            else:
                self._action_latency[action] = seconds

    def clear_action_latency(self) -> None:
        with self._lock:
            self._action_latency.clear()

    @property
    def injected_delay(self) -> float:
        """Total delay (seconds) applied so far, summed over requests."""
        with self._lock:
            return self._injected_delay

    @property
    def delayed_requests(self) -> int:
        """Number of requests that were given a non-zero delay."""
        with self._lock:
            return self._delayed_requests

    # -- counts ----------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        """Snapshot of requests received per EC2 Action ("" for requests without one),
        including those answered with an injected fault."""
        with self._lock:
            return dict(self._counts)

    @property
    def run_instances_requests(self) -> list[dict[str, str]]:
        """The parameters of the last RunInstances requests (at most
        :data:`RUN_INSTANCES_KEPT`), without user data or signature fields: what the client
        asked EC2 for (MinCount, MaxCount, InstanceMarketOptions ...), for tests to read."""
        with self._lock:
            return [dict(p) for p in self._run_instances]

    @property
    def faults_served(self) -> dict[str, int]:
        """Snapshot of injected error answers per error code."""
        with self._lock:
            return dict(self._faults_served)

    @property
    def request_log(self) -> list[tuple[float, str]]:
        """``(arrival, Action)`` of the latest requests, oldest first: ``time.time()`` as a
        request arrived, before its injected latency. Wall-clock, so that another process
        (a benchmark's patch through the API server) can be compared with it."""
        with self._lock:
            return list(self._request_log)

    def reset_counts(self) -> None:
        """Zero :attr:`counts`, :attr:`faults_served` and the delay accumulators."""
        with self._lock:
            self._counts.clear()
            self._run_instances.clear()
            self._faults_served.clear()
            self._injected_delay = 0.0
            self._delayed_requests = 0

    # -- faults ----------------------------------------------------------------------------

    @property
    def user_data_limit(self) -> int | None:
        """Max decoded UserData size accepted on RunInstances (None: no check). EC2's is
        :data:`EC2_USER_DATA_LIMIT`."""
        return self._user_data_limit

    @user_data_limit.setter
    def user_data_limit(self, limit: int | None) -> None:
        self._user_data_limit = limit

    def fail_next(
        self,
        action: str,
        code: str = "RequestLimitExceeded",
        times: int = 1,
        *,
        status: int | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests of ``action`` ("*": any Action) with EC2 error
        ``code``. Status and message default from :data:`EC2_ERRORS` (else 400). Faults
        queue up: calling twice makes the later ones follow the earlier ones."""
        if times < 1:
            raise ValueError("times must be >= 1")
        default_status, default_message = EC2_ERRORS.get(code, (400, code))
        fault = InjectedFault(status or default_status, code, message or default_message)
        with self._lock:
            self._faults.setdefault(action, []).extend([fault] * times)

    def hang_next(self, action: str, times: int = 1) -> None:
        """Never answer the next ``times`` requests of ``action`` (queued with the other
        faults): the connection stays open and silent, as behind a dead link, until the
        proxy stops. The target never sees them."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.setdefault(action, []).extend([_HANG] * times)

    def lose_answer_next(self, action: str, times: int = 1) -> None:
        """Forward the next ``times`` requests of ``action`` to the target, then cut the
        connection instead of answering: the cloud acted, the client does not know."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._lost_answers[action] += times

    def _take_lost_answer(self, action: str) -> bool:
        with self._lock:
            if self._lost_answers[action] > 0:
                self._lost_answers[action] -= 1
                self._faults_served["LostAnswer"] += 1
                return True
        return False

    def pending_faults(self, action: str | None = None) -> int:
        """Injected faults not yet served (for one Action, or all)."""
        with self._lock:
            if action is not None:
                return len(self._faults.get(action, []))
            return sum(len(q) for q in self._faults.values())

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._lost_answers.clear()

    # -- credentials --------------------------------------------------------------------

    @property
    def access_keys(self) -> dict[str, int]:
        """Requests seen per access key id (from the SigV4 ``Credential=``): which
        credentials the client really used, e.g. after a Secret was rotated."""
        with self._lock:
            return dict(self._access_keys)

    def reject_access_key(self, key_id: str) -> None:
        """Answer every request signed with ``key_id`` with 401 ``AuthFailure``, as EC2 does
        for a revoked key (moto itself accepts any key)."""
        with self._lock:
            self._rejected_keys.add(key_id)

    def _check_access_key(self, authorization: str) -> InjectedFault | None:
        marker = "Credential="
        if marker not in authorization:
            return None
        key_id = authorization.split(marker, 1)[1].split("/", 1)[0]
        with self._lock:
            self._access_keys[key_id] += 1
            rejected = key_id in self._rejected_keys
        if rejected:
            return InjectedFault(
                401, "AuthFailure", "AWS was not able to validate the provided access credentials"
            )
        return None

    # -- holding requests --------------------------------------------------------------

    def hold(self, action: str = "*") -> None:
        """Keep requests of ``action`` ("*": any) waiting, after they are counted and
        delayed, until :meth:`release`. Lets a test catch calls in flight
        deterministically (e.g. check that no duplicate RunInstances is sent while one is
        outstanding) without relying on timing."""
        with self._cond:
            self._holds.add(action)

    def release(self, action: str | None = None) -> None:
        """Let held requests of ``action`` (or of every held action) proceed."""
        with self._cond:
            if action is None:
                self._holds.clear()
            else:
                self._holds.discard(action)
            self._cond.notify_all()

    @property
    def held(self) -> int:
        """Number of requests currently waiting on a :meth:`hold`."""
        with self._cond:
            return self._held

    def wait_for_held(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests are held; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._held >= count, timeout)

    def _wait_if_held(self, action: str) -> None:
        with self._cond:
            if not self._is_held(action):
                return
            self._held += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: not self._is_held(action) or self._closing.is_set())
            finally:
                self._held -= 1
                self._cond.notify_all()

    def _is_held(self, action: str) -> bool:
        return action in self._holds or "*" in self._holds

    def hold_answers(self, action: str = "*") -> None:
        """Forward requests of ``action`` ("*": any) but keep their answers until
        :meth:`release_answers`: the target has acted, the client does not know yet."""
        with self._cond:
            self._answer_holds.add(action)

    def release_answers(self) -> None:
        with self._cond:
            self._answer_holds.clear()
            self._cond.notify_all()

    @property
    def answers_held(self) -> int:
        """Answers currently kept back by :meth:`hold_answers`."""
        with self._cond:
            return self._answers_held

    def wait_for_held_answers(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` answers are kept back; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._answers_held >= count, timeout)

    def _wait_if_answer_held(self, action: str) -> None:
        def held() -> bool:
            return action in self._answer_holds or "*" in self._answer_holds

        with self._cond:
            if not held():
                return
            self._answers_held += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: not held() or self._closing.is_set())
            finally:
                self._answers_held -= 1
                self._cond.notify_all()

    # -- request path (called from handler threads) ---------------------------------------

    def _enter(self) -> None:
        with self._cond:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        """Requests being served right now (delayed, held or forwarded)."""
        with self._cond:
            return self._in_flight

    def _on_request(self, action: str, params: dict[str, str]) -> InjectedFault | None:
        """Count, delay, then pick the fault (if any) to answer instead of forwarding."""
        with self._lock:
            self._counts[action] += 1
            if action == "RunInstances":
                self._run_instances.append(
                    {k: v for k, v in params.items() if k not in _NOT_LOGGED and "Amz" not in k}
                )
                del self._run_instances[:-RUN_INSTANCES_KEPT]
            self._request_log.append((time.time(), action))
            delay = self._action_latency.get(action, self._latency)
            if delay > 0:
                self._injected_delay += delay
                self._delayed_requests += 1
        if delay > 0:
            # The injected latency itself (not synchronisation); stop() cuts it short.
            self._closing.wait(delay)
        self._wait_if_held(action)
        with self._lock:
            fault = self._take_fault(action)
            if fault is None and action == "RunInstances":
                fault = self._check_user_data(params)
            if fault is not None:
                self._faults_served[fault.code] += 1
        return fault

    def _take_fault(self, action: str) -> InjectedFault | None:
        for key in (action, "*"):
            queue = self._faults.get(key)
            if queue:
                return queue.pop(0)
        return None

    def _check_user_data(self, params: dict[str, str]) -> InjectedFault | None:
        limit = self._user_data_limit
        encoded = params.get("UserData")
        if limit is None or not encoded:
            return None
        try:
            size = len(base64.b64decode(encoded, validate=False))
        except (binascii.Error, ValueError):
            return None  # let the target judge malformed base64
        if size <= limit:
            return None
        return InjectedFault(400, "InvalidParameterValue", f"User data is limited to {limit} bytes")

    def _live_instances(self, headers: Any) -> int:
        """Pending and running instances at the target (one DescribeInstances, unpaged)."""
        query = (
            "Action=DescribeInstances&Version=2016-11-15&MaxResults=1000"
            "&Filter.1.Name=instance-state-name&Filter.1.Value.1=pending"
            "&Filter.1.Value.2=running"
        )
        _, _, data = self._forward("GET", f"/?{query}", headers, b"")
        return data.count(b"<instanceId>")

    def _apply_instance_limit(
        self, headers: Any, params: dict[str, str], path: str, body: bytes
    ) -> tuple[InjectedFault | None, str, bytes]:
        """The fault to answer, or the request (path and body: libcloud sends the query
        string, others a form) with ``MaxCount`` cut to what fits."""
        limit = self.instance_limit
        assert limit is not None
        room = limit - self._live_instances(headers)
        min_count = int(params.get("MinCount") or 1)
        max_count = int(params.get("MaxCount") or min_count)
        if room < min_count:
            status, message = EC2_ERRORS["InstanceLimitExceeded"]
            with self._lock:
                self._faults_served["InstanceLimitExceeded"] += 1
            return InjectedFault(status, "InstanceLimitExceeded", message), path, body
        fits = {"MaxCount": str(min(max_count, room)), "MinCount": str(min(min_count, room))}

        def cut(query: str) -> str:
            pairs = parse_qs(query, keep_blank_values=True)
            if "MaxCount" not in pairs and "MinCount" not in pairs:
                return query
            return urlencode({k: fits.get(k, v[0]) for k, v in pairs.items()})

        parts = urlsplit(path)
        if parts.query:
            path = parts._replace(query=cut(parts.query)).geturl()
        return None, path, cut(body.decode()).encode() if body else body

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self._target
        conn = http.client.HTTPConnection(host, port, timeout=self._upstream_timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() not in _SKIP_HEADERS:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()
