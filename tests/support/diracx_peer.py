"""A real DiracX server for tests: DiracX 0.7.0 from PyPI, on 127.0.0.1, in a subprocess.

Why a real one: CloudPilot registers pilots and reads demand through DiracX's REST API
(``cloudpilot.dirac.client``); a mock would only echo our own idea of that API. DiracX's
own test set-up runs its routers on sqlite with a local configuration; this does the same
(``diracx_peer_servers/serve_diracx.py`` has the details), in the venv made by
``.ci/setup-diracx-peer.sh`` because DiracX's dependencies would move CloudPilot's.

Usage::

    with DiracXPeer() as peer:
        peer.url                      # http://127.0.0.1:PORT
        peer.operator_token           # ServiceAdministrator + JobAdministrator of peer.vo
        peer.submit_jobs(3, site=...) # real jobs, through POST /api/jobs/jdl
        peer.pilots(stamps)           # POST /api/pilots/search

Only the standard library here: the client under test is CloudPilot's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Self

from cloudpilot_devtools.background import Service

ENV_VENV: Final = "CLOUDPILOT_DIRACX_VENV"
"""The peer venv made by ``.ci/setup-diracx-peer.sh``."""

SERVER_SCRIPT: Final = Path(__file__).resolve().parent / "diracx_peer_servers" / "serve_diracx.py"

STARTUP_TIMEOUT: Final = 180.0
"""Seconds for set-up and start: ~25 s on a loaded 2-core machine (config repository, seven
sqlite schemas, imports); the margin is for CI. A failure quotes the log."""

STOP_TIMEOUT: Final = 10.0
READY_TIMEOUT: Final = 60.0
"""Seconds for DiracX's configuration cache to warm after start (it answers 503 until then)."""

_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DiracXPeerError(RuntimeError):
    """The peer could not start, or refused a control request."""


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get(ENV_VENV) or cache / "cloudpilot-e2e" / "diracx-venv")


def unavailable_reason() -> str | None:
    """Why the peer cannot run here, or None."""
    python = default_venv() / "bin" / "python"
    if not python.exists() or not (default_venv() / ".cloudpilot-diracx-peer").exists():
        return f"DiracX peer not installed in {default_venv()}: run bash .ci/setup-diracx-peer.sh"
    return None


class DiracXPeer(Service):
    vo: Final = "testvo"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: Any = None
        self.url = ""
        self.operator_token = ""
        self.user_token = ""
        self.startup_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        reason = unavailable_reason()
        if reason is not None:
            raise DiracXPeerError(reason)
        self._dir = tempfile.TemporaryDirectory(prefix="cloudpilot-diracx-")
        work = Path(self._dir.name)
        self._log = (work / "server.log").open("wb")
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIRACX_")}
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        self._proc = subprocess.Popen(
            [str(default_venv() / "bin" / "python"), str(SERVER_SCRIPT), str(work)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            ready = self._wait_ready_file(work / "ready.json", started + STARTUP_TIMEOUT)
            self.url = f"http://127.0.0.1:{ready['port']}"
            self.operator_token = ready["tokens"]["operator"]
            self.user_token = ready["tokens"]["user"]
            self._wait_serving(time.monotonic() + READY_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _log_tail(self) -> str:
        if self._dir is None:
            return ""
        text = (Path(self._dir.name) / "server.log").read_text(errors="replace")
        return text[-4000:]

    def _wait_ready_file(self, path: Path, deadline: float) -> dict[str, Any]:
        assert self._proc is not None
        while time.monotonic() < deadline:
            if path.exists():
                ready: dict[str, Any] = json.loads(path.read_text())
                path.unlink()
                return ready
            if self._proc.poll() is not None:
                raise DiracXPeerError(f"DiracX exited at start-up:\n{self._log_tail()}")
            time.sleep(0.1)
        raise DiracXPeerError(f"DiracX did not start in {STARTUP_TIMEOUT} s:\n{self._log_tail()}")

    def _wait_serving(self, deadline: float) -> None:
        """Until a request is answered for real (not 503 while the config cache warms)."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                # Job routes read the configuration (pilot search does not): 503 until warm.
                self.call("POST", "/api/jobs/summary", {"grouping": ["Status"]}, self.user_token)
                return
            except DiracXPeerError as exc:
                last = exc
                time.sleep(0.2)
        raise DiracXPeerError(f"DiracX never served: {last}\n{self._log_tail()}")

    # -- the real API, for test set-up and assertions -------------------------------------

    def call(self, method: str, path: str, body: Any, token: str) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (an http://127.0.0.1 URL of ours)
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise DiracXPeerError(
                f"{method} {path}: HTTP {exc.code}: {exc.read()[:300]!r}"
            ) from None
        except OSError as exc:
            raise DiracXPeerError(f"{method} {path}: {exc}") from None
        return json.loads(text) if text else None

    def submit_jobs(self, count: int, *, site: str = "ANY") -> list[int]:
        """Submit ``count`` real jobs as the VO's ordinary user (POST /api/jobs/jdl)."""
        jdl = f'Executable = "echo";\nArguments = "hello";\nJobName = "cp";\nSite = "{site}";'
        rows = self.call("POST", "/api/jobs/jdl", [jdl] * count, self.user_token)
        return [int(row["JobID"]) for row in rows]

    def set_job_status(self, job_ids: Sequence[int], status: str) -> None:
        """What DIRAC's optimizers do before a job waits for a pilot: ``Received`` → ``Waiting``."""
        # DiracX orders a job's status history by these times: with microseconds, so that
        # the change comes after the submission of a moment ago.
        moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            str(j): {moment: {"Status": status, "MinorStatus": "cloudpilot test"}} for j in job_ids
        }
        self.call("PATCH", "/api/jobs/status", body, self.operator_token)

    def pilots(self, stamps: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """DiracX's pilot records (all of them, or those with these stamps)."""
        search = (
            [{"parameter": "PilotStamp", "operator": "in", "values": list(stamps)}]
            if stamps is not None
            else []
        )
        # One page of DiracX's largest size: its default page (100) would cut off silently
        # once the module's tests together have registered more pilots than that.
        rows: list[dict[str, Any]] = self.call(
            "POST", "/api/pilots/search?per_page=10000", {"search": search}, self.operator_token
        )
        return rows
