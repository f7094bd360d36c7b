"""``cloudpilot operator`` as a process of its own, as it runs in a pod: its own identity
(kubeconfig), its settings from the environment as the chart sets them, its output in a
log file. Used where the in-process operator would share the test's identity (RBAC, API
priority and fairness) or where a test signals the process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["FAST_ENV", "OperatorProcess"]

FAST_ENV = {
    "CLOUDPILOT_RECONCILE_INTERVAL": "1",
    "CLOUDPILOT_CONVERGING_INTERVAL": "0.5",
    "CLOUDPILOT_RATE_LIMIT": "1000",
    "CLOUDPILOT_RATE_BURST": "1000",
    "CLOUDPILOT_ALLOWED_DRIVER_CLASSES": "cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver",
}
"""Short intervals so tests converge in seconds, and the moto driver the test pools name
allowed, as tests.support.stack.FAST does."""


class OperatorProcess:
    """Start ``python -m cloudpilot operator`` on enter; SIGTERM (then SIGKILL) on exit."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str | None = None,
        namespaces: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        scope = list(namespaces) or ([namespace] if namespace else [])
        self.argv = [sys.executable, "-m", "cloudpilot", "operator"]
        if scope:
            for ns in scope:
                self.argv += ["--namespace", ns]
        else:
            self.argv.append("--all-namespaces")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLOUDPILOT_")},
            **FAST_ENV,
            **(env or {}),
            "KUBECONFIG": str(kubeconfig),
        }
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in __exit__)
            prefix="cloudpilot-operator-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OperatorProcess:
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
