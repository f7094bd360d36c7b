"""The background-server base the emulators share (cloudpilot_devtools.background).

What the EC2 emulator, the latency proxy and the Kubernetes API emulator rely on: a failed
start raises in the caller and leaves nothing running, ``stop()`` ends every thread it
started, idle keep-alive connections included. Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloudpilot_devtools.background import BackgroundServer, SocketServerThread


class _Hello(SocketServerThread):
    """A keep-alive HTTP server answering "hello", its handlers tracked."""

    description = "hello-server"

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.port = port
        self.handler_threads: list[threading.Thread] = []

    def _make_server(self) -> ThreadingHTTPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                owner.handler_threads.append(threading.current_thread())
                owner._track(self.connection, add=True)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    owner._track(self.connection, add=False)

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"hello")

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        return server


def test_stop_ends_the_thread_of_an_idle_keep_alive_connection() -> None:
    with _Hello() as server:
        address = server.server_address
        assert address is not None
        conn = http.client.HTTPConnection(*address, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello"
        # The connection stays open: its handler thread waits for the next request.
        [handler] = server.handler_threads
        assert handler.is_alive()
    assert not handler.is_alive()
    assert server.server_address is None
    with pytest.raises(OSError):  # the connection was shut down by the server
        conn.request("GET", "/")
        conn.getresponse()
    conn.close()


def test_a_taken_port_fails_start_in_the_caller() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = _Hello(port=taken.getsockname()[1])
        before = set(threading.enumerate())
        with pytest.raises(OSError):
            server.start()
        assert server.server_address is None
        assert set(threading.enumerate()) <= before


class _Failing(BackgroundServer):
    description = "failing-server"

    def __init__(self, serve: Callable[[Callable[[], None], threading.Event], None]) -> None:
        super().__init__()
        self.start_timeout = 0.5
        self.serve = serve
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def _serve(self, ready: Callable[[], None]) -> None:
        self.thread = threading.current_thread()
        self.serve(ready, self.stopping)

    def _shutdown(self) -> None:
        self.stopping.set()


def test_an_error_while_starting_is_raised_by_start_with_its_cause() -> None:
    def serve(ready: Callable[[], None], stopping: threading.Event) -> None:
        raise ValueError("no such address")

    server = _Failing(serve)
    with pytest.raises(RuntimeError, match="failing-server did not start") as caught:
        server.start()
    assert isinstance(caught.value.__cause__, ValueError)
    assert server.thread is not None and not server.thread.is_alive()


def test_a_server_never_ready_is_stopped_by_start() -> None:
    def serve(ready: Callable[[], None], stopping: threading.Event) -> None:
        stopping.wait()  # never calls ready(); returns once asked to stop

    server = _Failing(serve)
    with pytest.raises(RuntimeError, match="did not start") as caught:
        server.start()
    assert caught.value.__cause__ is None
    assert server.stopping.is_set()
    assert server.thread is not None and not server.thread.is_alive()
    server.stop()  # idempotent
