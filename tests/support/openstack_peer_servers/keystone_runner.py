# mypy: disable-error-code="import-not-found,import-untyped"
"""Run real keystone (identity v3) for tests: ``keystone-manage`` steps, then its WSGI app.

Runs INSIDE the OpenStack peer venv (see the package docstring). Two sub-commands:

``manage ARGS...``
    Exactly ``keystone-manage ARGS...``. Going through this script rather than the
    ``keystone-manage`` console script means the caller only needs the peer's *python*
    (``CLOUDPILOT_OPENSTACK_PYTHON``), not the layout of its ``bin/`` directory.

``serve --config FILE --ready-file FILE --parent-pid PID [--cleanup-dir DIR]``
    Serves keystone's public WSGI application on 127.0.0.1 with Werkzeug's threaded server.
    keystone 30 no longer ships a standalone server (only the WSGI entry point meant for
    uWSGI / mod_wsgi), and Werkzeug already comes with keystone (Flask), so nothing more
    needs installing. The port is chosen by the kernel (bind to port 0) so two peers never
    race for a "free" port; the port actually bound is written, atomically, as JSON to the
    ready file, which the parent polls.

The server exits on SIGTERM (Python's default action), and also by itself when the process
that started it goes away (removing ``--cleanup-dir``), so a test run that was killed does
not leave keystone, or its temporary directory, behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
"""Never listen on anything but loopback: this is a test peer with a known password."""

PARENT_POLL_SECONDS = 0.5
"""How often the orphan watchdog checks that the parent is still alive."""


def _exit_when_orphaned(parent_pid: int, cleanup_dir: Path | None) -> None:
    """Exit the whole process once ``parent_pid`` is no longer our parent.

    When the parent dies, the kernel re-parents us (to init or a subreaper), so
    ``os.getppid()`` changes; that is the signal. A parent that died that way could not
    remove its temporary directory, so this does it (``cleanup_dir``). ``os._exit``
    because the serving thread is blocked in ``serve_forever`` and would keep a normal
    exit waiting.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        if cleanup_dir is not None:
            shutil.rmtree(cleanup_dir, ignore_errors=True)
        os._exit(0)

    threading.Thread(target=watch, name="orphan-watchdog", daemon=True).start()


def _write_ready_file(path: Path, payload: dict[str, object]) -> None:
    """Write ``payload`` so that a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)


def manage(args: list[str]) -> None:
    """Run ``keystone-manage`` with ``args`` in this process."""
    from keystone.cmd import manage as keystone_manage

    sys.argv = ["keystone-manage", *args]
    keystone_manage.main()


def serve(config: Path, ready_file: Path, parent_pid: int, cleanup_dir: Path | None) -> None:
    """Serve keystone until killed; announce the bound port through ``ready_file``."""
    _exit_when_orphaned(parent_pid, cleanup_dir)
    # keystone's WSGI loader finds its configuration through these variables, and
    # oslo.config would otherwise parse *our* command line as keystone options.
    os.environ["OS_KEYSTONE_CONFIG_DIR"] = str(config.parent)
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = config.name
    sys.argv = [sys.argv[0]]

    from keystone.server import wsgi as keystone_wsgi
    from werkzeug.serving import make_server

    application = keystone_wsgi.initialize_public_application()
    server = make_server(LOOPBACK, 0, application, threaded=True)
    _write_ready_file(ready_file, {"port": server.server_port, "pid": os.getpid()})
    server.serve_forever()


def main() -> None:
    """Dispatch the sub-commands described in the module docstring."""
    if len(sys.argv) > 1 and sys.argv[1] == "manage":
        manage(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--config", type=Path, required=True)
    serve_parser.add_argument("--ready-file", type=Path, required=True)
    serve_parser.add_argument("--parent-pid", type=int, required=True)
    serve_parser.add_argument(
        "--cleanup-dir", type=Path, help="directory to remove if the parent dies first"
    )
    options = parser.parse_args()
    serve(options.config, options.ready_file, options.parent_pid, options.cleanup_dir)


if __name__ == "__main__":
    main()
