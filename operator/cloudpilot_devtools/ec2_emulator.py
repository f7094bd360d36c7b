"""An in-process EC2 emulator (moto's server) for tests and for ``cloudpilot demo``.

Why in-process: the tests and the demo need to reach *behind* the API to simulate things
a real cloud does on its own (a pilot VM that halts itself, a VM that has been running for
longer than its maximum lifetime). moto keeps its state in module-level backends, so an
in-process server lets us change that state directly while CloudPilot talks to it through
libcloud's real EC2 driver over HTTP (see :mod:`cloudpilot_devtools.moto_ec2`).

Consequence: moto's state is global to the Python process, so only one ``EC2Emulator`` may
run per process at a time (a second ``start()`` raises ``RuntimeError``), and ``reset()``
also wipes anything a ``moto.mock_aws`` block in the same process had created.

AMI catalogue: moto's default catalogue has ~1300 images for us-east-1, which makes
``list_images()`` take seconds. moto reads ``MOTO_AMIS_PATH`` in two places:

* ``moto.ec2.models.amis`` reads the *file* once, at import time, into the module global
  ``AMIS``;
* ``AmiBackend._load_amis`` checks only the *presence* of the variable whenever a region
  backend is created (first request after start or after a reset): when set, it skips the
  big "latest AMIs" catalogue and loads only ``AMIS``.

So setting the variable is not enough if moto's EC2 models were imported earlier (for
instance by another test using ``mock_aws``). ``start()`` therefore writes the catalogue to
a temporary file, sets ``MOTO_AMIS_PATH`` (before importing moto's EC2 models), *also*
replaces ``moto.ec2.models.amis.AMIS`` with the catalogue, and resets moto so that no region
backend built with another catalogue survives. ``stop()`` restores the previous variable
and ``AMIS`` value and removes the file.
"""

from __future__ import annotations

import copy
import datetime as dt
import http.client
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Self

from cloudpilot_devtools.background import Service, SocketServerThread

__all__ = [
    "DEFAULT_AMIS",
    "FAKE_ACCESS_KEY",
    "FAKE_SECRET_KEY",
    "REGION",
    "EC2Emulator",
    "write_ami_catalogue",
]

REGION: Final = "us-east-1"
FAKE_ACCESS_KEY: Final = "AKIACLOUDPILOTFAKE01"
FAKE_SECRET_KEY: Final = "cloudpilot-fake-secret-key-not-a-real-one"  # noqa: S105

#: The small AMI catalogue (moto's ``MOTO_AMIS_PATH`` format). Kept in Python rather than in
#: a JSON data file so that it ships with the package without any package-data declaration.
#: The ids are fixed so tests and examples can refer to them.
DEFAULT_AMIS: Final[tuple[dict[str, Any], ...]] = tuple(
    {
        "ami_id": ami_id,
        "name": name,
        "description": description,
        "owner_id": owner,
        "public": True,
        "state": "available",
        "architecture": arch,
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "image_type": "machine",
        "image_location": f"{owner}/{name}",
        "root_device_type": "ebs",
        "root_device_name": "/dev/sda1",
        "sriov": "simple",
        "creation_date": created,
    }
    for ami_id, name, description, owner, arch, created in (
        (
            "ami-0a1e9c0a1a9e94001",
            "AlmaLinux-9-GenericCloud-9.4-x86_64",
            "AlmaLinux OS 9.4 GenericCloud image (x86_64)",
            "764336703387",
            "x86_64",
            "2024-05-06T12:00:00.000Z",
        ),
        (
            "ami-0a1e9c0a1a9e94002",
            "AlmaLinux-9-GenericCloud-9.4-aarch64",
            "AlmaLinux OS 9.4 GenericCloud image (aarch64)",
            "764336703387",
            "arm64",
            "2024-05-06T12:00:00.000Z",
        ),
        (
            "ami-0a1e8c0a1a9e81001",
            "AlmaLinux-8-GenericCloud-8.10-x86_64",
            "AlmaLinux OS 8.10 GenericCloud image (x86_64)",
            "764336703387",
            "x86_64",
            "2024-05-28T12:00:00.000Z",
        ),
        (
            "ami-0b0c9c0a1a9e94001",
            "Rocky-9-GenericCloud-Base-9.4",
            "Rocky Linux 9.4 GenericCloud Base image (x86_64)",
            "792107900819",
            "x86_64",
            "2024-05-10T12:00:00.000Z",
        ),
        (
            "ami-0c0e7c0a1a9e19051",
            "CentOS-7-x86_64-GenericCloud-1905",
            "CentOS Linux 7 x86_64 GenericCloud 1905 (end of life)",
            "125523088429",
            "x86_64",
            "2019-06-01T12:00:00.000Z",
        ),
    )
)

_log = logging.getLogger(__name__)
_active_lock = threading.Lock()
_active: EC2Emulator | None = None


def write_ami_catalogue(path: Path, amis: tuple[dict[str, Any], ...] = DEFAULT_AMIS) -> Path:
    """Write an AMI catalogue usable as ``MOTO_AMIS_PATH`` (e.g. for an out-of-process
    ``python -m moto.server``, which must get the variable in its environment)."""
    path.write_text(json.dumps(list(amis), indent=2), encoding="utf-8")
    return path


_ORIGINAL_RUN_INSTANCES: Any = None


def _honour_max_count(on: bool) -> None:
    """Make moto's ``RunInstances`` start ``MaxCount`` instances, as EC2 does when they fit.

    Why: moto starts ``MinCount`` instances and ignores ``MaxCount``; EC2 starts as many as
    it can up to ``MaxCount`` (at least ``MinCount``, else it refuses). CloudPilot asks for
    ``MinCount = 1 .. MaxCount = n`` and takes what fits, so against plain moto it would get
    one VM per call. Room limits (quota) are the LatencyProxy's (``instance_limit``).
    """
    global _ORIGINAL_RUN_INSTANCES
    from moto.ec2.responses.instances import InstanceResponse

    if on and _ORIGINAL_RUN_INSTANCES is None:
        original = InstanceResponse.run_instances
        _ORIGINAL_RUN_INSTANCES = original

        def run_instances(self: Any) -> Any:
            max_count = self._get_param("MaxCount")
            if max_count is not None:
                self.params["MinCount"] = max_count
            return original(self)

        InstanceResponse.run_instances = run_instances  # type: ignore[method-assign]
    elif not on and _ORIGINAL_RUN_INSTANCES is not None:
        InstanceResponse.run_instances = _ORIGINAL_RUN_INSTANCES  # type: ignore[method-assign]
        _ORIGINAL_RUN_INSTANCES = None


def _make_server_class() -> Callable[[str, int], SocketServerThread]:
    """Build moto's server class lazily, so importing this module does not import moto
    (which must only happen after ``MOTO_AMIS_PATH`` is set).

    Why not moto's ``ThreadedMotoServer``: its ``stop()`` shuts the accept loop down but
    does not close the keep-alive connections that clients (libcloud uses a ``requests``
    session) leave open, so their handler threads would linger, and a failed bind hangs its
    ``start()`` (werkzeug calls ``sys.exit`` in the server thread). This serves the same
    werkzeug app from a :class:`SocketServerThread`, which tracks live connections and
    closes them all on stop, and sends werkzeug's request log to a logger at DEBUG level
    instead of stderr.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class _MotoServer(SocketServerThread):
        description = "moto-server"

        def __init__(self, ip_address: str, port: int) -> None:
            super().__init__()
            self._ip_address = ip_address
            self._port = port
            owner = self

            class Handler(MotoRequestHandler):
                def log(self, type: str, message: str, *args: Any) -> None:
                    # werkzeug prints every request to stderr (adding its own handler to
                    # the "werkzeug" logger); keep the demo's and the tests' output clean.
                    level = logging.DEBUG if type == "info" else logging.WARNING
                    _log.log(level, "moto: " + message.rstrip(), *args)

                def setup(self) -> None:
                    super().setup()
                    owner._track(self.connection, add=True)

                def finish(self) -> None:
                    try:
                        super().finish()
                    finally:
                        owner._track(self.connection, add=False)

            self.handler_class = Handler

        def _make_server(self) -> Any:
            # As ThreadedMotoServer._server_entry does, with our request handler.
            app = DomainDispatcherApplication(create_backend_app)
            try:
                return make_server(
                    self._ip_address, self._port, app, True, request_handler=self.handler_class
                )
            except SystemExit as exc:  # werkzeug: sys.exit(1) if the port is taken
                raise RuntimeError(
                    f"moto server could not listen on {self._ip_address}:{self._port}"
                ) from exc

    return _MotoServer


class EC2Emulator(Service):
    """moto's EC2 API served on 127.0.0.1 (free port) from a thread of this process.

    Usage::

        with EC2Emulator() as ec2:
            driver = MotoEC2NodeDriver(*ec2.credentials, **ec2.driver_options())
            node = driver.create_node(...)
            ec2.halt_instance(node.id)          # the VM shut itself down
            ec2.reset()                         # wipe all state between tests
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        amis: tuple[dict[str, Any], ...] | None = DEFAULT_AMIS,
    ) -> None:
        """``amis=None`` keeps moto's own catalogue (slow ``list_images``)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("EC2Emulator only listens on loopback addresses")
        self._host = host
        self._port = port
        self._amis = amis
        self._server: Any = None
        self._endpoint: tuple[str, int] | None = None
        self._tmpdir: Path | None = None
        self._saved_env: str | None = None
        self._saved_amis: Any = None
        self._patched_amis = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError(
                    "an EC2Emulator is already running in this process (moto state is global)"
                )
            _active = self
        try:
            if self._amis is not None:
                self._install_amis(self._amis)
            _honour_max_count(True)
            server = _make_server_class()(self._host, self._port)
            server.start()
            self._server = server
            address = server.server_address
            assert address is not None
            self._endpoint = address
            # Drop state (and region backends built with another AMI catalogue) that this
            # process may hold from an earlier emulator or a mock_aws block.
            self.reset()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server, close its sockets, and undo the AMI catalogue set-up."""
        global _active
        try:
            if self._server is not None:
                self._server.stop()
                self._server = None
            self._endpoint = None
            self._uninstall_amis()
            _honour_max_count(False)
        finally:
            with _active_lock:
                if _active is self:
                    _active = None

    # -- connection details ----------------------------------------------------------------

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        if self._endpoint is None:
            raise RuntimeError("EC2Emulator is not running")
        return self._endpoint

    @property
    def url(self) -> str:
        host, port = self.endpoint
        return f"http://{host}:{port}"

    @property
    def credentials(self) -> tuple[str, str]:
        """(access key, secret key). moto accepts any key: these are only for signing."""
        return (FAKE_ACCESS_KEY, FAKE_SECRET_KEY)

    def driver_options(self, endpoint: tuple[str, int] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``MotoEC2NodeDriver(key, secret, **options)``.

        ``endpoint`` overrides host/port, e.g. to go through a
        :class:`~cloudpilot_devtools.latency_proxy.LatencyProxy`. ``signature_version`` must
        be "4": with SigV2 moto cannot tell the service and routes the request to S3.
        """
        host, port = endpoint or self.endpoint
        return {
            "region": REGION,
            "host": host,
            "port": port,
            "secure": False,
            "signature_version": "4",
        }

    # -- state manipulation ----------------------------------------------------------------

    def reset(self) -> None:
        """Wipe all moto state (every service, account and region) through moto's API."""
        host, port = self.endpoint
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("POST", "/moto-api/reset")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"moto reset failed: {resp.status} {body!r}")
        finally:
            conn.close()

    def backend(self, account_id: str | None = None) -> Any:
        """moto's EC2 backend for us-east-1 (``ec2_backends[account][region]``).

        moto derives the account from the access key; an unknown key (like ours) maps to
        moto's default account 123456789012.
        """
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        return ec2_backends[account_id or DEFAULT_ACCOUNT_ID][REGION]

    def instance(self, instance_id: str) -> Any:
        """moto's ``Instance`` object (raises moto's InvalidInstanceIdError if unknown)."""
        return self.backend().get_instance(instance_id)

    def halt_instance(self, instance_id: str) -> str:
        """Simulate the guest shutting itself down (``shutdown -h now`` in a pilot VM).

        Like EC2, honours the instance's InstanceInitiatedShutdownBehavior (libcloud's
        ``ex_terminate_on_shutdown=True`` sets it to "terminate"; the default is "stop").
        Returns the new state name ("stopped" or "terminated").
        """
        backend = self.backend()
        inst = backend.get_instance(instance_id)
        if inst.instance_initiated_shutdown_behavior == "terminate":
            backend.terminate_instances([instance_id])
        else:
            backend.stop_instances([instance_id])
        from moto.ec2.models.instances import StateReason

        # What EC2 reports for a guest-initiated shutdown (moto says "User initiated").
        inst.state_reason = StateReason(
            "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
            "Client.InstanceInitiatedShutdown",
        )
        return str(inst._state.name)

    def stop_instance(self, instance_id: str) -> str:
        """Stop an instance from outside CloudPilot (as StopInstances would); returns the
        new state name."""
        self.backend().stop_instances([instance_id])
        return str(self.instance(instance_id)._state.name)

    def set_launch_time(self, instance_id: str, when: dt.datetime) -> None:
        """Change an instance's LaunchTime (what libcloud reports as ``node.created_at``).

        moto stores it as ``Instance.launch_time``, a naive UTC datetime, and serialises it
        on every DescribeInstances, so assigning the attribute is enough. ``when`` may be
        aware (converted to UTC) or naive (taken as UTC).
        """
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
        self.instance(instance_id).launch_time = when

    def age_instance(self, instance_id: str, by: dt.timedelta) -> dt.datetime:
        """Move an instance's launch time ``by`` into the past; returns the new (naive UTC)
        launch time. Simulates a VM older than its maximum lifetime."""
        inst = self.instance(instance_id)
        inst.launch_time = inst.launch_time - by
        return inst.launch_time  # type: ignore[no-any-return]

    # -- AMI catalogue -------------------------------------------------------------------

    def _install_amis(self, amis: tuple[dict[str, Any], ...]) -> None:
        self._tmpdir = Path(tempfile.mkdtemp(prefix="cloudpilot-amis-"))
        path = write_ami_catalogue(self._tmpdir / "amis.json", amis)
        self._saved_env = os.environ.get("MOTO_AMIS_PATH")
        os.environ["MOTO_AMIS_PATH"] = str(path)
        # First import reads the file we just pointed to; a previous import is patched.
        import moto.ec2.models.amis as moto_amis

        self._saved_amis = moto_amis.AMIS
        moto_amis.AMIS = copy.deepcopy(list(amis))
        self._patched_amis = True

    def _uninstall_amis(self) -> None:
        if self._patched_amis:
            import moto.ec2.models.amis as moto_amis

            moto_amis.AMIS = self._saved_amis
            self._patched_amis = False
            if self._saved_env is None:
                os.environ.pop("MOTO_AMIS_PATH", None)
            else:
                os.environ["MOTO_AMIS_PATH"] = self._saved_env
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
