"""One way to run a server in the background of this process: start, ready, stop, clean up.

Why: the EC2 emulator (moto's werkzeug server), the latency proxy (a ``ThreadingHTTPServer``)
and the Kubernetes API emulator (aiohttp in an event loop of its own) each ran a server in a
daemon thread, waited until it served, stopped it and joined the thread; the two threaded
HTTP servers each also tracked their keep-alive connections so that ``stop()`` could close
them. That was written once per server, and every copy had to get the same details right (a
failed start cleans up after itself, a stop that hangs says so, no handler thread survives).

* :class:`Service`: ``with`` over ``start()``/``stop()``. Everything here is one.
* :class:`BackgroundServer`: ``_serve`` in a daemon thread, ``start()`` returns once it
  called ``ready()`` (or fails with its error, or after ``start_timeout``), ``stop()`` asks it
  to return and joins it. The Kubernetes API emulator uses it directly (an event loop).
* :class:`SocketServerThread`: a ``socketserver`` server (``http.server``, werkzeug) bound
  in the caller's thread, so a taken port fails ``start()`` itself, served with a short poll
  interval so that ``stop()`` is prompt, and the connections its handlers report are shut
  down on ``stop()``. The EC2 emulator and the latency proxy use it.

Not forced onto the OpenStack peer (``tests/support/openstack_peer.py``): it runs keystone
and mimic as subprocesses in process groups of their own, ready when a ready file appears
and then an HTTP answer comes, stopped by SIGTERM then SIGKILL. No thread and no socket of
ours: it shares only :class:`Service`.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["BackgroundServer", "Service", "SocketServerThread"]


class Service:
    """``with service:`` means ``service.start()`` … ``service.stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class BackgroundServer(Service):
    """A server run by :meth:`_serve` in a daemon thread of this process.

    Subclasses implement :meth:`_serve` (serve until :meth:`_shutdown`; call ``ready()``
    once clients may connect) and :meth:`_shutdown` (called from another thread).
    """

    #: Used in the thread's name and in error messages.
    description = "the background server"
    #: Seconds ``start()`` waits for ``ready()``; None: no limit.
    start_timeout: float | None = 10.0
    #: Seconds ``stop()`` waits for the thread; None: no limit.
    stop_timeout: float | None = 10.0

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _serve(self, ready: Callable[[], None]) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Start serving; returns once the server is ready, raises (and cleans up) if not."""
        if self._thread is not None:
            raise RuntimeError(f"{self.description} is already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=self.description, daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"{self.description} did not start") from error
        return self

    def _run(self) -> None:
        try:
            self._serve(self._ready.set)
        except BaseException as exc:  # reported by start() (or kept) in the caller's thread
            self._error = exc
        finally:
            self._ready.set()

    def stop(self) -> None:
        """Ask the server to stop and join its thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._shutdown()
        thread.join(self.stop_timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self.description} thread did not stop")


class SocketServerThread(BackgroundServer):
    """A ``socketserver`` server in the background, its handlers' connections closed on stop.

    Why the tracking: ``shutdown()`` stops accepting, but the keep-alive connections that
    clients leave open (libcloud's ``requests`` session does) keep their handler threads
    waiting for the next request. Handlers report theirs with :meth:`_track` (from their
    ``setup()`` and ``finish()``); ``stop()`` shuts them down and joins the threads.
    """

    #: serve_forever's poll interval: how soon ``stop()`` is noticed.
    poll_interval = 0.05
    #: The socket is listening when ``_make_server`` returns: nothing to wait for.
    start_timeout: float | None = None
    #: ``shutdown()`` returns only once serve_forever has: the join is immediate.
    stop_timeout: float | None = None
    #: Seconds ``stop()`` waits for each handler thread once its connection is shut down.
    handler_join_timeout: float | None = 5.0

    def __init__(self) -> None:
        super().__init__()
        self._server: socketserver.BaseServer | None = None
        self._track_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()

    def _make_server(self) -> socketserver.BaseServer:
        """A bound, listening server (called in the caller's thread by ``start()``)."""
        raise NotImplementedError

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.description} is already running")
        self._server = self._make_server()
        try:
            return super().start()
        except BaseException:
            self.stop()
            raise

    def _serve(self, ready: Callable[[], None]) -> None:
        assert self._server is not None
        ready()
        self._server.serve_forever(self.poll_interval)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def stop(self) -> None:
        """Stop accepting, close the listening socket, let :meth:`_drain` finish what is
        being served, then shut down every connection still open and join its thread."""
        super().stop()
        if self._server is not None:
            self._server.server_close()
            self._server = None
        self._drain()
        with self._track_lock:
            conns = list(self._connections)
            threads = list(self._handler_threads)
        for conn in conns:
            with contextlib.suppress(OSError):  # the peer may have closed it already
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=self.handler_join_timeout)

    def _drain(self) -> None:
        """Hook: wait for requests in flight before their connections are cut."""

    @property
    def server_address(self) -> tuple[str, int] | None:
        """(host, port) listened on; None when stopped."""
        if self._server is None:
            return None
        address = self._server.server_address
        assert isinstance(address, tuple)
        return (str(address[0]), int(address[1]))

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        """Called by a handler from its own thread: ``add`` in ``setup()``, not in
        ``finish()``."""
        with self._track_lock:
            if add:
                self._connections.add(conn)
                self._handler_threads.add(threading.current_thread())
            else:
                self._connections.discard(conn)
                self._handler_threads.discard(threading.current_thread())
