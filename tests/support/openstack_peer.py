"""A real OpenStack protocol peer for tests: keystone (identity v3) in front of mimic's Nova.

Why this exists: CloudPilot talks to OpenStack only through libcloud's OpenStack driver, and
what must be exercised is that *real* driver code: keystone v3 password authentication,
service-catalogue lookup (type ``compute``, name ``nova``, region), Nova requests and JSON
parsing. No single package offers that: real ``keystone`` (PyPI) has no compute API, and
``mimic`` (PyPI, a Twisted mock of Rackspace/OpenStack APIs) has Nova but only identity v2.
So this module runs both as subprocesses on 127.0.0.1 and wires them together: keystone's
catalogue gets a compute endpoint pointing at mimic.

keystone and mimic pin libraries that would break CloudPilot's own environment, so they
live in a separate virtualenv made by ``.ci/setup-openstack-peer.sh``; this module runs in
CloudPilot's environment and only starts that venv's python on the scripts in
:mod:`tests.support.openstack_peer_servers`. It uses nothing but the standard library
(libcloud is the *client* under test, never the harness).

Usage::

    from libcloud.compute.providers import get_driver
    from libcloud.compute.types import Provider

    with OpenStackPeer() as peer:
        user, password = peer.credentials
        driver = get_driver(Provider.OPENSTACK)(user, password, **peer.driver_options())
        node = driver.create_node(name="pilot-1", image=..., size=..., ex_userdata="#!/bin/sh")
        peer.set_server_status(node.id, "SHUTOFF")  # the pilot VM "halted itself"

How the pieces fit (all of it decided here, so URLs are deterministic):

* keystone is set up from scratch in a temporary directory (sqlite, ``db_sync``,
  ``fernet_setup``, ``credential_setup``, ``bootstrap`` of one admin user, project and
  region) and serves its WSGI app on a kernel-chosen loopback port.
* mimic serves only Nova and Nova's control plane, under the fixed service ids ``nova`` and
  ``nova-control``, on another kernel-chosen loopback port. The same process serves the
  Neutron network routes libcloud uses (registered as type ``network``, name ``neutron``)
  and checks every Nova and Neutron request's token with keystone, as a real cloud does
  (``openstack_peer_servers/neutron_and_tokens.py``, which also says why Neutron is not
  the real one).
* mimic's Nova accepts any tenant id in its URL and never checks tokens. The compute
  endpoint is registered as ``http://127.0.0.1:<port>/mimicking/nova/<region>/v2/$(project_id)s``:
  keystone substitutes the id of the project the token is scoped to, so the mimic tenant
  *is* the keystone project id, exactly as with a real Nova. :attr:`OpenStackPeer.project_id`
  is therefore also the tenant the control-plane helpers address.

Failure injection (mimic's control plane, see :meth:`OpenStackPeer.set_server_status` and
:meth:`OpenStackPeer.add_creation_behavior`) lets tests produce ``ERROR``, ``SHUTOFF`` or
``BUILD`` servers and failing create calls, which a real cloud does only by accident.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal, NamedTuple, Self, TypeVar

from cloudpilot_devtools.background import Service

__all__ = [
    "ENV_PYTHON",
    "ENV_VENV",
    "OpenStackCredentials",
    "OpenStackPeer",
    "OpenStackPeerError",
]

ENV_PYTHON: Final = "CLOUDPILOT_OPENSTACK_PYTHON"
"""Path of a python that can import keystone and mimic (wins over :data:`ENV_VENV`)."""

ENV_VENV: Final = "CLOUDPILOT_OPENSTACK_VENV"
"""The peer venv made by ``.ci/setup-openstack-peer.sh`` (default ``<repo>/.venv-openstack``)."""

LOOPBACK: Final = "127.0.0.1"
"""Everything listens on, and is reached through, loopback only."""

SERVERS_DIR: Final = Path(__file__).resolve().parent / "openstack_peer_servers"
"""The scripts run by the peer's python (they never import CloudPilot)."""

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
"""Repository root for a source checkout (``tests/support/`` is 2 levels down)."""

NOVA_SERVICE_ID: Final = "nova"
"""mimic service id of Nova; fixed by ``mimic_runner.py``."""

NOVA_CONTROL_SERVICE_ID: Final = "nova-control"
"""mimic service id of Nova's control (behaviour-injection) API; fixed by ``mimic_runner.py``."""

DEFAULT_STARTUP_TIMEOUT: Final = 120.0
"""Seconds allowed for set-up and start. keystone's set-up plus both servers take 7-13 s on
a 2-core machine; the margin is for a loaded CI machine, and a failure reports the logs."""

STOP_TIMEOUT: Final = 10.0
"""Seconds a server gets to exit after SIGTERM before it is killed."""

POLL_INTERVAL: Final = 0.05
"""Polling period while waiting for a ready file or an HTTP answer (bounded by a deadline)."""

HTTP_TIMEOUT: Final = 10.0
"""Timeout of one control request to keystone or mimic."""

RESET_DELETE_ATTEMPTS: Final = 20
"""Deletions :meth:`OpenStackPeer.reset` tries per server (mimic can be told to fail some)."""

LOG_TAIL_CHARS: Final = 4000
"""How much of a server's log an error message quotes."""

_T = TypeVar("_T")

# Never route loopback traffic through an HTTP(S)_PROXY from the environment.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OpenStackPeerError(RuntimeError):
    """The peer could not be set up, did not start in time, or refused a control request."""


class OpenStackCredentials(NamedTuple):
    """The keystone user that tests authenticate as (``user, password = peer.credentials``)."""

    user: str
    password: str


def _default_venv() -> Path:
    return Path(os.environ.get(ENV_VENV) or REPO_ROOT / ".venv-openstack")


@functools.cache
def _probe(python: str) -> str | None:
    """Why ``python`` cannot run the peer, or ``None`` if it can (cached per path)."""
    if not Path(python).is_file():
        return f"{python} does not exist"
    probe = "import keystone, mimic, klein, twisted, werkzeug"
    try:
        result = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{python} could not be run: {error}"
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} cannot import keystone and mimic: {last_line}"
    return None


class OpenStackPeer(Service):
    """keystone + mimic Nova on loopback, for libcloud's real OpenStack driver.

    A context manager (``with OpenStackPeer() as peer:``), or call :meth:`start` and
    :meth:`stop`. Every process started is stopped, and the temporary directory removed,
    by :meth:`stop`, also when :meth:`start` fails half-way. Both servers also exit by
    themselves if the process that started them dies.

    Servers are created ``ACTIVE`` immediately (mimic's default) and stay so until a test
    changes them through the control-plane helpers.
    """

    def __init__(
        self,
        *,
        python: str | os.PathLike[str] | None = None,
        region: str = "RegionOne",
        user: str = "admin",
        password: str | None = None,
        project_name: str = "admin",
        clock: Literal["wall", "manual"] = "wall",
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        verbose: bool = False,
        token_expiration: int | None = None,
        check_tokens: bool = True,
    ) -> None:
        """Describe a peer; nothing starts before :meth:`start` / ``__enter__``.

        :param python: the peer's python; default :meth:`find_python`.
        :param password: the admin password; default a fresh random one.
        :param clock: mimic's clock. ``wall`` follows real time (server timestamps are
            "now", a ``BUILD`` of N seconds lasts N seconds) and :meth:`advance_clock` jumps
            ahead; ``manual`` stands still at the start time until :meth:`advance_clock`.
        :param verbose: have mimic log every request and reply (see :meth:`logs`).
        :param token_expiration: keystone's ``[token] expiration`` in seconds (default
            keystone's hour): a few seconds make tokens expire in the middle of a test.
        :param check_tokens: Nova and Neutron refuse (401) requests whose token keystone
            does not accept or that has expired, as a real cloud does.
        """
        self._python = Path(python) if python is not None else self.find_python()
        self.region: Final = region
        self.project_name: Final = project_name
        self.domain_name: Final = "Default"
        self.domain_id: Final = "default"
        self._user = user
        self._password = password or secrets.token_urlsafe(18)
        self._clock = clock
        self._startup_timeout = startup_timeout
        self._verbose = verbose
        self._token_expiration = token_expiration
        self._check_tokens = check_tokens
        self._workdir: Path | None = None
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._keystone_port: int | None = None
        self._mimic_port: int | None = None
        self._project_id: str | None = None
        self._behavior_ids: list[str] = []

    # -- discovery ----------------------------------------------------------------------

    @staticmethod
    def find_python() -> Path:
        """The peer's python: ``$CLOUDPILOT_OPENSTACK_PYTHON``, else ``<venv>/bin/python``."""
        explicit = os.environ.get(ENV_PYTHON)
        if explicit:
            return Path(explicit)
        return _default_venv() / "bin" / "python"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why the peer cannot run here (with the fix), or ``None`` when it can."""
        python = cls.find_python()
        problem = _probe(str(python))
        if problem is None:
            return None
        return (
            f"OpenStack peer not installed ({problem}); run .ci/setup-openstack-peer.sh "
            f"or point {ENV_PYTHON} at a python with keystone and mimic"
        )

    @classmethod
    def available(cls) -> bool:
        """Whether keystone and mimic are installed for :meth:`find_python` (cached)."""
        return cls.unavailable_reason() is None

    # -- what clients need ----------------------------------------------------------------

    @property
    def auth_url(self) -> str:
        """keystone's root URL, as libcloud's ``ex_force_auth_url`` wants it (no ``/v3``)."""
        return f"http://{LOOPBACK}:{self._require(self._keystone_port)}"

    @property
    def identity_url(self) -> str:
        """keystone's v3 API (what ``OS_AUTH_URL`` holds for the OpenStack CLI / SDK)."""
        return f"{self.auth_url}/v3"

    @property
    def credentials(self) -> OpenStackCredentials:
        """The admin user and password (admin role on :attr:`project_name`)."""
        return OpenStackCredentials(self._user, self._password)

    @property
    def project_id(self) -> str:
        """keystone's id of :attr:`project_name`, which is also mimic's tenant id."""
        return self._require(self._project_id)

    @property
    def compute_url(self) -> str:
        """Nova's URL for :attr:`project_id`, as the catalogue gives it to a scoped token."""
        return f"{self._nova_prefix(NOVA_SERVICE_ID)}/{self.project_id}"

    def driver_options(self) -> dict[str, Any]:
        """Keyword arguments for libcloud's OpenStack driver, after ``(user, password)``.

        ``get_driver(Provider.OPENSTACK)(*peer.credentials, **peer.driver_options())``.
        The service type, name and region are forced to what was registered so that the
        driver never has to guess from the catalogue (it also holds ``identity``).
        """
        return {
            "ex_force_auth_url": self.auth_url,
            "ex_force_auth_version": "3.x_password",
            "ex_tenant_name": self.project_name,
            "ex_domain_name": self.domain_name,
            "ex_tenant_domain_id": self.domain_id,
            "ex_force_service_type": "compute",
            "ex_force_service_name": "nova",
            "ex_force_service_region": self.region,
        }

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Set keystone up, start both servers, register Nova; return once both answer."""
        if self._workdir is not None:
            raise OpenStackPeerError("this OpenStackPeer is already started")
        problem = _probe(str(self._python))
        if problem is not None:
            raise OpenStackPeerError(f"OpenStack peer not installed: {problem}")
        deadline = time.monotonic() + self._startup_timeout
        self._workdir = Path(tempfile.mkdtemp(prefix="cloudpilot-openstack-peer-"))
        try:
            self._start_mimic()  # mimic starts while keystone is being set up
            config = self._write_keystone_config()
            self._set_up_keystone(config, deadline)
            self._mimic_port = self._wait_ready("mimic", deadline)
            self._keystone_port = self._wait_ready("keystone", deadline)
            self._wait_http("mimic", f"http://{LOOPBACK}:{self._mimic_port}/", deadline)
            self._wait_http("keystone", self.identity_url, deadline)
            self._register_catalogue()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers (SIGTERM, then SIGKILL) and remove the temporary directory.

        Idempotent. Each server runs in its own process group, so anything it forked goes
        with it.
        """
        for name, process in list(self._processes.items()):
            self._terminate(process)
            del self._processes[name]
        for log in self._log_files.values():
            log.close()
        self._log_files.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._keystone_port = self._mimic_port = self._project_id = None
        self._behavior_ids.clear()

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running servers (``keystone``, ``mimic``), for leak checks."""
        return {name: process.pid for name, process in self._processes.items()}

    @property
    def workdir(self) -> Path | None:
        """The temporary directory (keystone's database, keys, config, logs) while running."""
        return self._workdir

    def logs(self) -> dict[str, str]:
        """What each server (and each ``keystone-manage`` step) has logged so far."""
        if self._workdir is None:
            return {}
        return {
            path.stem: path.read_text(encoding="utf-8", errors="replace")
            for path in sorted(self._workdir.glob("*.log"))
        }

    # -- mimic's control plane (failure injection) -------------------------------------------

    def set_server_status(self, server_id: str, status: str) -> None:
        """Force a server's Nova status, e.g. ``ERROR`` (failed VM) or ``SHUTOFF`` (stopped).

        Uses mimic's control API (``POST .../attributes/``); any string is accepted and shown
        as is, so libcloud maps it through its state map (``SHUTOFF`` → ``STOPPED``,
        ``ERROR`` → ``ERROR``, unknown → ``UNKNOWN``).
        """
        url = f"{self._control_url()}/attributes/"
        self._request("POST", url, {"status": {server_id: status}}, expect=(201,))

    def add_creation_behavior(
        self,
        behavior: str,
        *,
        name_pattern: str = ".*",
        metadata_patterns: Mapping[str, str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> str:
        """Make future server creations that match behave differently; return the rule's id.

        Rules apply to servers whose name matches the regular expression ``name_pattern``
        (``re.match``, so anchored at the start) and, if given, whose metadata values match
        ``metadata_patterns`` (key → regex). The first matching rule wins. ``behavior`` is
        one of mimic's: ``error`` (created, status ``ERROR``), ``build`` (``BUILD`` for
        ``parameters["duration"]`` seconds of mimic's clock, then ``ACTIVE``),
        ``active-then-error`` (``ACTIVE``, then ``ERROR`` after ``duration``), ``fail``
        (the create call fails with ``parameters`` ``code`` / ``message`` / ``type``,
        default 500 ``computeFault``, and no server exists), ``false-negative`` (fails the
        same way but the server *is* created), ``sequence`` (``parameters["behaviors"]``:
        a cycle of the others, ``{"name": "default"}`` being a normal create).
        """
        criteria: list[dict[str, Any]] = [{"server_name": name_pattern}]
        if metadata_patterns:
            criteria.append({"metadata": dict(metadata_patterns)})
        payload = {"name": behavior, "criteria": criteria, "parameters": dict(parameters or {})}
        url = f"{self._control_url()}/behaviors/creation"
        answer = self._request("POST", url, payload, expect=(201,))
        behavior_id = str(answer["id"])
        self._behavior_ids.append(behavior_id)
        return behavior_id

    def remove_creation_behavior(self, behavior_id: str) -> None:
        """Drop a rule added by :meth:`add_creation_behavior`."""
        url = f"{self._control_url()}/behaviors/creation/{behavior_id}"
        self._request("DELETE", url, None, expect=(204,))
        with contextlib.suppress(ValueError):
            self._behavior_ids.remove(behavior_id)

    def reset(self) -> None:
        """Back to a fresh project, cheaply: no servers, no creation rules.

        Restarting the peer costs 7-13 s; this costs a few requests. It removes the rules
        added through this object and deletes every server of :attr:`project_id` (retrying
        those made to fail deletion with mimic's ``delete_server_failure`` metadata). Time
        moved forward by :meth:`advance_clock` stays moved.
        """
        for behavior_id in list(self._behavior_ids):
            url = f"{self._control_url()}/behaviors/creation/{behavior_id}"
            self._request("DELETE", url, None, expect=(204, 404))
        self._behavior_ids.clear()
        self._request("DELETE", f"{self._peer_url()}/neutron/networks", None, expect=(200,))
        self._request("DELETE", f"{self._peer_url()}/nova/limits", None, expect=(200,))
        token, _ = self._admin_token()
        servers = self._request(
            "GET", f"{self.compute_url}/servers", None, expect=(200,), token=token
        )
        for server in servers["servers"]:
            url = f"{self.compute_url}/servers/{server['id']}"
            for _ in range(RESET_DELETE_ATTEMPTS):
                with contextlib.suppress(OpenStackPeerError):
                    self._request("DELETE", url, None, expect=(204, 404), token=token)
                    break
            else:
                raise OpenStackPeerError(f"reset could not delete server {server['id']}")

    def advance_clock(self, seconds: float) -> None:
        """Move mimic's clock forward (finishes ``build`` rules, fires timed transitions)."""
        url = f"http://{LOOPBACK}:{self._require(self._mimic_port)}/mimic/v1.1/tick"
        self._request("POST", url, {"amount": seconds}, expect=(200,))

    def server_creation_request(self, server_id: str) -> dict[str, Any]:
        """The JSON body of the create call Nova received for ``server_id`` (also once deleted).

        Nova never shows user data, ``config_drive`` or networks back; this is how a test
        checks what libcloud actually sent (``["server"]["user_data"]`` is base64).
        """
        url = (
            f"http://{LOOPBACK}:{self._require(self._mimic_port)}/cloudpilot-peer/nova/"
            f"{self.region}/{self.project_id}/servers/{server_id}"
        )
        answer = self._request("GET", url, None, expect=(200,))
        return dict(answer["creation_request"])

    # -- Neutron, tokens, application credentials ---------------------------------------------

    @property
    def network_url(self) -> str:
        """Neutron's endpoint as keystone's catalogue gives it (libcloud adds ``/v2.0``)."""
        return f"http://{LOOPBACK}:{self._require(self._mimic_port)}/neutron"

    def add_network(self, name: str, network_id: str | None = None) -> str:
        """Add a Neutron network (names need not be unique, as in Neutron); return its id."""
        body: dict[str, Any] = {"name": name}
        if network_id is not None:
            body["id"] = network_id
        url = f"{self._peer_url()}/neutron/networks"
        return str(self._request("POST", url, body, expect=(201,))["network"]["id"])

    def set_limits(self, *, other_instances: int = 0, **absolute: int) -> None:
        """The project's quota as Nova's ``GET /limits`` reports it (``maxTotalInstances``,
        ``maxTotalCores``, ...); ``other_instances``: servers counted in use that are not in
        mimic. ``totalInstancesUsed`` is always the tenant's live servers plus those."""
        body = {**absolute, "otherInstances": other_instances}
        self._request("POST", f"{self._peer_url()}/nova/limits", body, expect=(200,))

    def stats(self) -> dict[str, Any]:
        """``network_lists`` (how often Neutron listed networks), ``nova_network_lists``
        (how often Nova's ``os-networks`` proxy did, for libcloud's 1.1 driver),
        ``refused`` (requests answered 401), ``limit_reads`` (Nova's ``GET /limits``) and
        ``tokens``: each token Nova or Neutron saw (a digest, its ``user_id``, ``methods``,
        ``application_credential``, ``issued_at``, ``expires_at``, ``first_used``, and
        ``refused`` once expired), oldest first."""
        return self._request("GET", f"{self._peer_url()}/stats", None, expect=(200,))

    def create_application_credential(self, name: str) -> OpenStackCredentials:
        """A keystone application credential of the admin user on :attr:`project_name`.

        Returns ``(id, secret)``: what libcloud's ``3.x_appcred`` takes as key and secret.
        keystone shows the secret once, here; a test that loses it makes a new one.
        """
        token, scoped = self._admin_token()
        url = f"{self.identity_url}/users/{scoped['user']['id']}/application_credentials"
        answer = self._request(
            "POST", url, {"application_credential": {"name": name}}, expect=(201,), token=token
        )["application_credential"]
        return OpenStackCredentials(str(answer["id"]), str(answer["secret"]))

    def appcred_driver_options(self) -> dict[str, Any]:
        """Driver options for ``3.x_appcred``, as a site writes them: no forced service
        type or name, so libcloud finds Nova *and* Neutron in the catalogue itself."""
        return {
            "ex_force_auth_url": self.auth_url,
            "ex_force_auth_version": "3.x_appcred",
            "ex_force_service_region": self.region,
        }

    def neutron_driver_options(self) -> dict[str, Any]:
        """``3.x_password`` with libcloud's 2.0 driver (``api_version: "2.0"``), which asks
        Neutron for networks. It also asks Glance for images, which the peer lacks: give
        it raw image and flavor ids (those need no lookup)."""
        return {**self.seed_driver_options(), "api_version": "2.0"}

    def seed_driver_options(self) -> dict[str, Any]:
        """The seed's example ``Driver_*`` options (``3.x_password``, a tenant name), with
        this peer's keystone: libcloud finds Nova and Neutron in the catalogue itself."""
        return {
            "ex_force_auth_url": self.auth_url,
            "ex_force_auth_version": "3.x_password",
            "ex_tenant_name": self.project_name,
        }

    # -- internals ------------------------------------------------------------------------

    def _peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self._require(self._mimic_port)}/cloudpilot-peer"

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise OpenStackPeerError("the OpenStack peer is not running (use start() or `with`)")
        return value

    def _nova_prefix(self, service_id: str) -> str:
        port = self._require(self._mimic_port)
        return f"http://{LOOPBACK}:{port}/mimicking/{service_id}/{self.region}/v2"

    def _control_url(self) -> str:
        return f"{self._nova_prefix(NOVA_CONTROL_SERVICE_ID)}/{self.project_id}"

    def _path(self, name: str) -> Path:
        return self._require(self._workdir) / name

    def _spawn(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``<peer python> args`` with output to ``<name>.log``, in its own group."""
        log = self._path(f"{name}.log").open("wb")
        self._log_files[name] = log
        process = subprocess.Popen(
            [str(self._python), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._path("."),
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self._processes[name] = process
        return process

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Anything the server forked into its group that outlived it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def _failure(self, what: str, log_name: str) -> OpenStackPeerError:
        log = self.logs().get(log_name, "")
        return OpenStackPeerError(f"{what}; last output of {log_name}:\n{log[-LOG_TAIL_CHARS:]}")

    def _write_keystone_config(self) -> Path:
        """A minimal keystone.conf: everything under the temporary directory.

        bcrypt at its minimum cost (4 rounds) because every libcloud authentication hashes
        the password: the default (12) costs ~0.25 s per token on this machine.
        """
        config = self._path("keystone.conf")
        config.write_text(
            "\n".join(
                [
                    "[DEFAULT]",
                    "use_stderr = true",
                    "[database]",
                    f"connection = sqlite:///{self._path('keystone.db')}",
                    "[fernet_tokens]",
                    f"key_repository = {self._path('fernet-keys')}",
                    "[fernet_receipts]",
                    f"key_repository = {self._path('fernet-keys')}",
                    "[credential]",
                    f"key_repository = {self._path('credential-keys')}",
                    "[identity]",
                    "password_hash_rounds = 4",
                    *(
                        ["[token]", f"expiration = {self._token_expiration}"]
                        if self._token_expiration is not None
                        else []
                    ),
                    "",
                ]
            ),
            encoding="utf-8",
        )
        return config

    def _set_up_keystone(self, config: Path, deadline: float) -> None:
        """``keystone-manage`` steps, and keystone's server, as parallel as they can be.

        ``db_sync``, ``fernet_setup`` and ``credential_setup`` touch different things, so
        they run together; ``bootstrap`` needs the schema and the server needs schema and
        keys, but the server does not need bootstrap's rows to start, so those two overlap.
        Each step is a process of its own (~1.5 s of imports): keystone's CLI keeps its
        configuration in a process-global object that is not meant to be parsed twice.
        """
        owner = [
            "--keystone-user",
            pwd.getpwuid(os.getuid()).pw_name,
            "--keystone-group",
            grp.getgrgid(os.getgid()).gr_name,
        ]
        self._manage(
            config,
            deadline,
            {"db_sync": [], "fernet_setup": owner, "credential_setup": owner},
        )
        # "--opt=value": a value may start with "-". The password goes through keystone's
        # OS_BOOTSTRAP_PASSWORD instead, to stay off command lines that `ps` shows.
        bootstrap = [
            f"--bootstrap-username={self._user}",
            f"--bootstrap-project-name={self.project_name}",
            "--bootstrap-role-name=admin",
            f"--bootstrap-region-id={self.region}",
        ]
        self._start_keystone(config)
        self._manage(
            config,
            deadline,
            {"bootstrap": bootstrap},
            env={"OS_BOOTSTRAP_PASSWORD": self._password},
        )

    def _manage(
        self,
        config: Path,
        deadline: float,
        steps: Mapping[str, list[str]],
        env: Mapping[str, str] | None = None,
    ) -> None:
        runner = str(SERVERS_DIR / "keystone_runner.py")
        started = {
            step: self._spawn(
                f"keystone-manage-{step}",
                [runner, "manage", "--config-file", str(config), step, *args],
                env=env,
            )
            for step, args in steps.items()
        }
        for step, process in started.items():
            try:
                code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise self._failure(
                    f"keystone-manage {step} did not finish in time", f"keystone-manage-{step}"
                ) from None
            finally:
                self._processes.pop(f"keystone-manage-{step}", None)
                if process.poll() is None:
                    self._terminate(process)
            if code != 0:
                raise self._failure(
                    f"keystone-manage {step} exited with {code}", f"keystone-manage-{step}"
                )

    def _start_keystone(self, config: Path) -> None:
        self._spawn(
            "keystone",
            [
                str(SERVERS_DIR / "keystone_runner.py"),
                "serve",
                "--config",
                str(config),
                "--ready-file",
                str(self._path("keystone.ready")),
                "--parent-pid",
                str(os.getpid()),
                "--cleanup-dir",
                str(self._require(self._workdir)),
            ],
        )

    def _start_mimic(self) -> None:
        args = [
            str(SERVERS_DIR / "mimic_runner.py"),
            "--region",
            self.region,
            "--clock",
            self._clock,
            "--ready-file",
            str(self._path("mimic.ready")),
            "--parent-pid",
            str(os.getpid()),
        ]
        self._spawn("mimic", [*args, "--verbose"] if self._verbose else args)

    def _poll(self, name: str, deadline: float, what: str, attempt: Callable[[], _T | None]) -> _T:
        """Call ``attempt`` until it returns a value; fail early if ``name`` died."""
        while True:
            result = attempt()
            if result is not None:
                return result
            process = self._processes[name]
            if process.poll() is not None:
                raise self._failure(f"{name} exited with {process.returncode} {what}", name)
            if time.monotonic() > deadline:
                raise self._failure(f"{name} did not start in time ({what})", name)
            time.sleep(POLL_INTERVAL)

    def _wait_ready(self, name: str, deadline: float) -> int:
        """Wait for the server's ready file; return the port it bound."""
        ready = self._path(f"{name}.ready")

        def read_port() -> int | None:
            if not ready.exists():
                return None
            return int(json.loads(ready.read_text(encoding="utf-8"))["port"])

        return self._poll(name, deadline, "before listening", read_port)

    def _wait_http(self, name: str, url: str, deadline: float) -> None:
        """Wait until ``url`` answers 200 (the server is listening *and* serving)."""

        def answered() -> bool | None:
            try:
                with _OPENER.open(url, timeout=HTTP_TIMEOUT) as response:
                    return True if response.status == 200 else None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return None

        self._poll(name, deadline, f"before answering {url}", answered)

    def _request(
        self,
        method: str,
        url: str,
        body: Mapping[str, Any] | None,
        *,
        expect: Sequence[int],
        token: str | None = None,
    ) -> dict[str, Any]:
        """One JSON request to the peer; the decoded answer (``{}`` if empty)."""
        return self._request_with_headers(method, url, body, expect=expect, token=token)[0]

    def _request_with_headers(
        self,
        method: str,
        url: str,
        body: Mapping[str, Any] | None,
        *,
        expect: Sequence[int],
        token: str | None = None,
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            headers["X-Auth-Token"] = token
        data = json.dumps(body).encode("utf-8") if body is not None else None
        # Only ever loopback http:// URLs built by this class.
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
                status, raw, answer_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, answer_headers = error.code, error.read(), error.headers
        if status not in expect:
            text = raw.decode("utf-8", errors="replace")[:LOG_TAIL_CHARS]
            raise OpenStackPeerError(f"{method} {url} answered {status}: {text}")
        return (json.loads(raw) if raw.strip() else {}), answer_headers

    def _admin_token(self) -> tuple[str, dict[str, Any]]:
        """A project-scoped token for the admin user, and the token body (with catalogue)."""
        scope = {"project": {"name": self.project_name, "domain": {"id": self.domain_id}}}
        auth = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self._user,
                            "domain": {"id": self.domain_id},
                            "password": self._password,
                        }
                    },
                },
                "scope": scope,
            }
        }
        body, headers = self._request_with_headers(
            "POST", f"{self.identity_url}/auth/tokens", auth, expect=(201,)
        )
        return headers["X-Subject-Token"], body["token"]

    def _register_catalogue(self) -> None:
        """Add identity and compute (``nova`` → mimic) with public and internal endpoints.

        Done through keystone's API once both servers run, because both ports are chosen by
        the kernel at start. The registered result is read back through a fresh token so a
        mistake fails here, not as a puzzling libcloud error.
        """
        token, scoped = self._admin_token()
        self._project_id = str(scoped["project"]["id"])
        nova_template = f"{self._nova_prefix(NOVA_SERVICE_ID)}/$(project_id)s"
        for service_type, service_name, url in (
            ("identity", "keystone", self.identity_url),
            ("compute", "nova", nova_template),
            ("network", "neutron", self.network_url),
        ):
            service = self._request(
                "POST",
                f"{self.identity_url}/services",
                {"service": {"type": service_type, "name": service_name, "enabled": True}},
                expect=(201,),
                token=token,
            )["service"]
            for interface in ("public", "internal"):
                endpoint = {
                    "service_id": service["id"],
                    "interface": interface,
                    "region_id": self.region,
                    "url": url,
                    "enabled": True,
                }
                self._request(
                    "POST",
                    f"{self.identity_url}/endpoints",
                    {"endpoint": endpoint},
                    expect=(201,),
                    token=token,
                )
        _, scoped = self._admin_token()
        urls = {
            endpoint["url"]
            for entry in scoped.get("catalog", [])
            if entry["type"] == "compute" and entry["name"] == "nova"
            for endpoint in entry["endpoints"]
            if endpoint.get("region_id") == self.region
        }
        if urls != {self.compute_url}:
            raise OpenStackPeerError(
                f"keystone's catalogue gives compute URLs {sorted(urls)}, "
                f"expected {self.compute_url}"
            )
        if self._check_tokens:
            url = f"{self._peer_url()}/keystone"
            self._request("POST", url, {"url": self.auth_url}, expect=(200,))


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    with OpenStackPeer() as _peer:
        sys.stdout.write(
            json.dumps(
                {"auth_url": _peer.auth_url, "compute_url": _peer.compute_url, **_peer.pids},
                indent=2,
            )
            + "\n"
        )
