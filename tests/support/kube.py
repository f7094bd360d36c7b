"""Helpers for tests against the Kubernetes API emulator: polling and a kopf operator thread.

Tests synchronise by polling a condition with a deadline (:func:`wait_for`), never by sleeping
for a guessed time: a sleep is either too short on a loaded CI machine or wastes time elsewhere.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import kopf

__all__ = ["OperatorThread", "wait_for"]

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    message: str | None = None,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Raises ``TimeoutError`` naming the condition and its last value after ``timeout`` seconds.
    Exceptions from the predicate propagate: a failing probe is a bug, not "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise TimeoutError(f"not true after {timeout:g}s: {what} (last value: {result!r})")
        time.sleep(interval)  # the polling period, not a synchronisation


class OperatorThread:
    """Run a kopf operator in a daemon thread with its own event loop; stop it on exit.

    The registry must carry a login handler (a bare ``kopf.OperatorRegistry`` has none), e.g.
    ``kopf.login_with_kubeconfig`` with ``KUBECONFIG`` pointing at the emulator.
    """

    def __init__(
        self,
        registry: kopf.OperatorRegistry,
        *,
        settings: kopf.OperatorSettings | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.timeout = timeout
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kopf-operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=self.registry,
                    settings=self.settings,
                    clusterwide=True,
                    standalone=True,
                    ready_flag=self._ready,
                    stop_flag=self._stop,
                )
            )
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()  # unblock __enter__ if the operator failed to start

    def __enter__(self) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(self.timeout):
            self.__exit__(None, None, None)
            raise TimeoutError(f"kopf did not start within {self.timeout:g}s")
        if self._error is not None or not self._thread.is_alive():
            self.__exit__(None, None, None)
            raise RuntimeError("kopf stopped during start-up") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"kopf did not stop within {self.timeout:g}s")
        if self._error is not None and exc is None:
            raise RuntimeError("kopf failed") from self._error
