# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""Run mimic's Nova (compute) mock on 127.0.0.1 with deterministic URLs, for tests.

Runs INSIDE the OpenStack peer venv (see the package docstring). Why not ``twistd mimic``:

* mimic names each service ``<ClassName>-<6 random hex>`` at start
  (``MimicCore.add_api``), so its URLs (``/mimicking/<service id>/<region>/v2/<tenant>``)
  change on every start. Here the core is built with only Nova and its control plane,
  under the fixed ids :data:`NOVA_SERVICE_ID` and :data:`NOVA_CONTROL_SERVICE_ID`, so the
  URL the parent registers in keystone is known before mimic answers.
* ``twistd mimic`` loads every plugin through Twisted's plugin discovery; three of them
  (load balancers, monitoring, queues) no longer import with current ``attrs``
  (``attr.validators.provides`` is gone). Nova does not need them.
* mimic's clock is either frozen (``twisted.internet.task.Clock`` starting at 1970, moved
  only by ``POST /mimic/v1.1/tick``) or real time with the tick endpoint disabled. Servers
  created at 1970 would look decades old to an operator that enforces a maximum VM
  lifetime, so the ``wall`` clock here starts at the current time, follows it, and can
  still be moved forward with the tick endpoint (to finish a ``BUILD`` early, say). The
  ``manual`` clock starts at the current time and moves only by ticks.
* tenant: mimic's Nova routes accept *any* tenant id in the URL and create that tenant's
  state on first use (``SessionStore.session_for_tenant_id``); they never look at the
  ``X-Auth-Token``. The parent therefore registers the endpoint with keystone's
  ``$(project_id)s`` substitution: the mimic tenant is the keystone project id, as with
  a real Nova.

One route is added: ``GET /cloudpilot-peer/nova/<region>/<tenant>/servers/<id>`` returns
``{"status": ..., "creation_request": <the JSON body Nova received>}`` (also for deleted
servers), so tests can check what reached the cloud (base64 user data, config_drive,
networks) although Nova's API never shows it back.

Two things a real cloud has and mimic lacks are added here (see :mod:`neutron_and_tokens`):
the part of Neutron libcloud uses (``/neutron/v2.0/networks``), and token checking on
Nova and Neutron against keystone, so an expired or made-up token is refused with 401 as
keystonemiddleware refuses it in front of a real Nova.

The bound port is written as JSON to ``--ready-file`` once listening. The process stops on
SIGTERM (Twisted's reactor handles it) and by itself when its parent goes away.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
"""Never listen on anything but loopback."""

NOVA_SERVICE_ID = "nova"
"""Fixed mimic service id of the compute API: ``/mimicking/nova/<region>/v2/<tenant>``."""

NOVA_CONTROL_SERVICE_ID = "nova-control"
"""Fixed mimic service id of Nova's behaviour-injection (control) API."""

CLOCK_FOLLOW_SECONDS = 0.1
"""Granularity with which the ``wall`` clock follows real time (and fires due events)."""

PARENT_POLL_SECONDS = 0.5
"""How often the orphan watchdog checks that the parent is still alive."""


def _write_ready_file(path: Path, payload: dict[str, object]) -> None:
    """Write ``payload`` so that a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)


def serve(region: str, clock_mode: str, ready_file: Path, parent_pid: int, verbose: bool) -> None:
    """Build mimic's Nova, listen on loopback, run the reactor until stopped."""
    from mimic.core import MimicCore
    from mimic.resource import MimicRoot, get_site
    from mimic.rest.nova_api import NovaApi, NovaControlApi
    from neutron_and_tokens import TokenGuard, add_routes
    from twisted.internet import reactor
    from twisted.internet.task import Clock, LoopingCall
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])

    clock = Clock()
    clock.advance(time.time())
    if clock_mode == "wall":
        last = [time.monotonic()]

        def follow_wall_clock() -> None:
            now = time.monotonic()
            clock.advance(now - last[0])
            last[0] = now

        LoopingCall(follow_wall_clock).start(CLOCK_FOLLOW_SECONDS)

    def stop_if_orphaned() -> None:
        if os.getppid() != parent_pid and reactor.running:
            reactor.stop()

    # now=False: the first check must run inside the reactor (stop() fails before run()).
    LoopingCall(stop_if_orphaned).start(PARENT_POLL_SECONDS, now=False)

    nova = NovaApi(regions=[region])
    control = NovaControlApi(nova_api=nova)
    core = MimicCore(clock, [])
    # add_api would invent random ids; the mapping is the documented lookup table of
    # service_with_region(), so fixed keys give fixed URLs.
    core._uuid_to_api_internal[NOVA_SERVICE_ID] = nova
    core._uuid_to_api_internal[NOVA_CONTROL_SERVICE_ID] = control

    @MimicRoot.app.route(
        "/cloudpilot-peer/nova/<string:region_name>/<string:tenant_id>/servers/<string:server_id>",
        methods=["GET"],
    )
    def server_introspection(
        root: Any, request: Any, region_name: str, tenant_id: str, server_id: str
    ) -> bytes:
        collection = nova._get_session(core.sessions, tenant_id).collection_for_region(region_name)
        request.setHeader(b"content-type", b"application/json")
        for server in collection.servers:
            if server.server_id == server_id:
                body = {"status": server.status, "creation_request": server.creation_request_json}
                return json.dumps(body).encode("utf-8")
        request.setResponseCode(404)
        return b'{"error": "no such server"}'

    guard = TokenGuard()

    def live_servers(region_name: str, tenant_id: str) -> int:
        collection = nova._get_session(core.sessions, tenant_id).collection_for_region(region_name)
        return sum(1 for server in collection.servers if server.status != "DELETED")

    guard.count_servers = live_servers
    add_routes(MimicRoot.app, guard)
    root = MimicRoot(core, clock)
    site = get_site(guard.wrap(root.app.resource()), logging=verbose)
    port = reactor.listenTCP(0, site, interface=LOOPBACK)
    _write_ready_file(
        ready_file,
        {
            "port": port.getHost().port,
            "pid": os.getpid(),
            "nova_service_id": NOVA_SERVICE_ID,
            "nova_control_service_id": NOVA_CONTROL_SERVICE_ID,
        },
    )
    reactor.run()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", default="RegionOne")
    parser.add_argument("--clock", choices=["wall", "manual"], default="wall")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--verbose", action="store_true", help="log every request and reply")
    options = parser.parse_args()
    serve(options.region, options.clock, options.ready_file, options.parent_pid, options.verbose)


if __name__ == "__main__":
    main()
