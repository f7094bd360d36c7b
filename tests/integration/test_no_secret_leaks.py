"""Nothing leaks: distinctive secret values go through a whole pool life, including a cloud
error that echoes the request back (clouds do), and none of them may appear in a log record
(every logger, DEBUG), an event, the pool's status or its annotations."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from cloudpilot import redaction
from cloudpilot_devtools.latency_proxy import LatencyProxy
from tests.support.kube import wait_for
from tests.support.proxies import ProxyFactory
from tests.support.stack import Stack

CLOUD_SECRET = "LeakCanaryCloudSecret-7f3a9c"
PILOT_WRAPPER = "#!/bin/sh\n# LeakCanaryPilotWrapper-51d2e8\necho run the pilot\n"
WRAPPER_MARK = "LeakCanaryPilotWrapper-51d2e8"
DIRACX_TOKEN = "LeakCanaryDiracXToken-3e8b1d"


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """All records of all loggers, through the operator's redacting filter (installed on
    every root handler, as ``cloudpilot operator`` does at start-up)."""
    caplog.set_level(logging.DEBUG)
    redaction.install_log_filter()
    yield caplog


def _forms(value: str) -> set[str]:
    raw = value.encode()
    encoded = base64.b64encode(raw).decode()
    return {value, encoded, quote(encoded, safe="")}


def test_secret_values_never_reach_logs_events_or_status(
    stack: Stack, every_log: pytest.LogCaptureFixture
) -> None:
    proxy_pem = ProxyFactory().rfc()
    proxy_lines = [line for line in proxy_pem.decode().splitlines() if len(line) > 40]
    stack.create_secret("canary-cloud", {"key": "AKIACANARYKEY0000001", "secret": CLOUD_SECRET})
    stack.create_secret("canary-pilot", {"pilot.sh": PILOT_WRAPPER})
    stack.create_secret("canary-proxy", {"proxy": proxy_pem.decode()})
    with LatencyProxy(stack.ec2.endpoint) as cloud:
        # The first create fails with an error that quotes the request, user data included.
        cloud.fail_next(
            "RunInstances",
            "InvalidParameterValue",
            message=f"Invalid user data: {PILOT_WRAPPER} proxy {proxy_lines[1]} "
            f"signed with {CLOUD_SECRET}",
        )
        stack.apply_pool(
            "canary",
            replicas=2,
            driver=stack.ec2.driver_options(cloud.endpoint),
            credentialsSecret={"name": "canary-cloud"},
            pilot={
                "executableSecret": {"name": "canary-pilot", "key": "pilot.sh"},
                "proxySecret": {"name": "canary-proxy", "key": "proxy"},
            },
            backoff={"initialSeconds": 1, "maxSeconds": 2},
        )
        wait_for(
            lambda: any(_create_failed(e) for e in stack.events()),
            30,
            message="the echoing failure reported",
        )
        stack.wait_vms("canary", 2)
        stack.delete_pool("canary")
        wait_for(lambda: stack.pool("canary") is None, 60, message="pool gone")

    needles = _forms(CLOUD_SECRET) | _forms(WRAPPER_MARK) | set(proxy_lines)
    surfaces = {
        "logs": "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in every_log.records),
        "events": "\n".join(f"{e.reason} {e.message}" for e in stack.events()),
    }
    last_status = [e for e in stack.events() if _create_failed(e)]
    assert last_status and "***" in last_status[0].message, "the echo was not masked"
    for surface, text in surfaces.items():
        for needle in needles:
            assert needle not in text, f"a secret value leaked into {surface}"


def test_status_and_annotations_hold_no_secret(stack: Stack) -> None:
    stack.create_secret("canary-cloud", {"key": "AKIACANARYKEY0000002", "secret": CLOUD_SECRET})
    stack.create_secret("canary-pilot", {"pilot.sh": PILOT_WRAPPER})
    stack.apply_pool(
        "quiet",
        replicas=1,
        credentialsSecret={"name": "canary-cloud"},
        pilot={"executableSecret": {"name": "canary-pilot", "key": "pilot.sh"}},
    )
    stack.wait_vms("quiet", 1)
    pool = stack.wait_status("quiet", lambda s: s.get("replicas") == 1 and s)
    whole = json.dumps(stack.pool("quiet")) + json.dumps(pool)
    for needle in _forms(CLOUD_SECRET) | _forms(WRAPPER_MARK):
        assert needle not in whole


def _create_failed(event: Any) -> bool:
    """A failed create's Event: its reason is the error class, its message says the action."""
    return bool(event.type == "Warning" and "create in queue" in (event.message or ""))


class _EchoingDiracX(BaseHTTPRequestHandler):
    """A DiracX that fails every call and quotes the request's Authorization header back in
    its ``detail``: the worst a server can do with the operator's token."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"detail": f"refused {self.headers.get('Authorization')}"}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_diracx_token_never_reaches_logs_events_or_status(
    stack: Stack, every_log: pytest.LogCaptureFixture
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingDiracX)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        stack.create_secret("canary-diracx", {"token": DIRACX_TOKEN})
        stack.apply_pool(
            "dx",
            replicas=2,
            dirac={
                "endpoint": f"http://127.0.0.1:{server.server_address[1]}",
                "credentialsSecret": {"name": "canary-diracx"},
                "vo": "vo",
                "site": "CLOUD.canary.test",
                "demand": {"minReplicas": 2, "intervalSeconds": 5},
            },
        )
        stack.wait_vms("dx", 2)
        status = stack.wait_status(
            "dx",
            lambda s: "refused" in str((s.get("dirac") or {}).get("lastError")) and s,
            what="the echoing DiracX's error in status.dirac.lastError",
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert "***" in status["dirac"]["lastError"], "the echoed token was not masked"
    surfaces = {
        "logs": "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in every_log.records),
        "events": "\n".join(f"{e.reason} {e.message}" for e in stack.events()),
        "pool": json.dumps(stack.pool("dx")),
    }
    for surface, text in surfaces.items():
        for needle in _forms(DIRACX_TOKEN):
            assert needle not in text, f"the DiracX token leaked into {surface}"
