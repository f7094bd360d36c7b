"""``cloudpilot demo``: the real operator, end to end, on emulators started on 127.0.0.1.

No cluster and no cloud account: a Kubernetes API emulator (kmock) and an EC2 emulator
(moto) run in this process, the operator talks to them over HTTP exactly as it would to a
real API server and a real EC2 endpoint, and the demo drives a pool through its life:
converge, replace a pilot that worked and whose VM stopped, scale up and down, hold new
pilots after one that fizzled (the closed loop), delete. Then it stops
everything it started and exits (0 when every step converged).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from cloudpilot.commands import EXIT_USAGE, CommandError, reports

DEMO_NAMESPACE = "pilots"
DEMO_POOL = "demo-pool"
STEP_TIMEOUT = 60.0

#: What the demo needs beyond the operator's own dependencies: the emulators' package and
#: the ``demo`` extra (moto imports lazily, after its AMI catalogue is set, so it is looked
#: up rather than imported; flask comes with moto's ``server`` extra).
DEMO_MODULES = ("cloudpilot_devtools", "kmock", "jsonpatch", "moto", "flask")
INSTALL_HINT = "pip install 'cloudpilot[demo]'"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replicas", type=_replicas, default=3, help="pilots to start (1 to 20, default 3)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="only the summary lines")


def _replicas(text: str) -> int:
    """An argparse ``type``: a bad value is status 2 with usage, not a demo that never ends."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 20:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 20, got {text!r}")
    return value


def missing_module() -> str | None:
    """The first of :data:`DEMO_MODULES` that is not installed, if any."""
    for name in DEMO_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return name
    return None


@reports("demo")
def run(args: argparse.Namespace) -> int:
    missing = missing_module()
    try:
        if missing is not None:
            raise ModuleNotFoundError(name=missing)
        from cloudpilot_devtools.ec2_emulator import EC2Emulator
        from cloudpilot_devtools.kube_emulator import ClusterEmulatorThread
    except ImportError as exc:
        raise CommandError(
            f"the demo needs its emulators ({exc.name}): {INSTALL_HINT}", EXIT_USAGE
        ) from None
    import logging

    from cloudpilot.kube import client
    from cloudpilot.runtime import configure_logging

    configure_logging(logging.WARNING if args.quiet else logging.INFO)
    for noisy in ("kopf", "cloudpilot", "werkzeug", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with (
        ClusterEmulatorThread() as cluster,
        EC2Emulator() as ec2,
        client.using_kubeconfig(cluster.kubeconfig_path),
    ):
        return Demo(ec2, replicas=args.replicas).run()


class _Kubectl:
    """The demo's own requests (it plays the user with kubectl) through the operator's
    Kubernetes client, from the demo's thread: an event loop of its own runs each call."""

    def __init__(self) -> None:
        from cloudpilot.kube.client import KubeClient

        self._loop = asyncio.new_event_loop()
        self._client = KubeClient()

    def __call__(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """The answer, or ``None`` for 404."""
        from cloudpilot.kube.client import ApiError

        try:
            return self._loop.run_until_complete(
                self._client.request(method, path, body=body, content_type=content_type)
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


def _pools_path(name: str = "") -> str:
    from cloudpilot import constants

    base = (
        f"/apis/{constants.API_GROUP}/{constants.API_VERSION}/namespaces/{DEMO_NAMESPACE}/"
        f"{constants.PLURAL}"
    )
    return f"{base}/{name}" if name else base


class Demo:
    def __init__(self, ec2: Any, *, replicas: int) -> None:
        self.ec2 = ec2
        self.replicas = replicas
        self.kubectl = _Kubectl()
        self.started = time.monotonic()

    # -- output -----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    def show(self) -> None:
        status = self._status()
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
        )
        self.say(
            f"  kubectl get cpp {DEMO_POOL}:  DESIRED={status.get('desiredReplicas', '-')} "
            f"LIVE={status.get('replicas', '-')} RUNNING={status.get('running', '-')} "
            f"STARTING={status.get('starting', '-')} READY={ready.get('status', '-')} "
            f"({ready.get('reason', '')})"
        )

    def show_closed_loop(self) -> None:
        for queue in self._status().get("queues", []):
            loop = queue.get("closedLoop") or {}
            self.say(f"  queue {queue.get('name')}: {loop.get('state')}: {loop.get('message')}")

    # -- the story --------------------------------------------------------------------------

    def run(self) -> int:
        from cloudpilot.runtime import OperatorThread
        from cloudpilot.settings import OperatorSettings
        from cloudpilot_devtools import moto_ec2

        self.say(f"Kubernetes API emulator and EC2 emulator ({self.ec2.url}) on 127.0.0.1")
        settings = OperatorSettings(
            namespaces=(DEMO_NAMESPACE,),
            all_namespaces=False,
            reconcile_interval=2.0,
            converging_interval=1.0,
            # The demo's pool names the emulator's driver class: a dev setting, never a
            # default of the product.
            allowed_driver_classes=frozenset({moto_ec2.CLASS_PATH}),
        )
        try:  # from the first request on: a failed _prepare closes the kubectl loop too
            self._prepare()
            with OperatorThread(settings):
                self.say("operator started (kopf + libcloud's EC2 driver)")
                try:
                    self._story()
                except TimeoutError as exc:
                    self.say(f"FAILED: {exc}")
                    return 1
        finally:
            self.kubectl.close()
        self.say("operator stopped; emulators stopping. Demo complete.")
        return 0

    def _story(self) -> None:
        self.say(f"kubectl apply: CloudPilotPool {DEMO_POOL} with replicas={self.replicas}")
        self.kubectl("POST", _pools_path(), self._pool_manifest())
        self._until(
            lambda s: s.get("running") == self.replicas and self._ready(s),
            f"{self.replicas} pilots running",
        )
        vms = self._vms()
        for vm in vms:
            self.say(f"  VM {vm.id} {vm.name} {vm.state}")

        victim = vms[0]
        self.say(
            f"the pilot on {victim.id} ends after an hour of work: its VM halts itself "
            "(state stopped)"
        )
        # Launched an hour ago: past fizzleSeconds, so the pilot worked and is replaced at
        # once (a pilot that halts right after boot found no work: see the end of the story).
        self.ec2.age_instance(victim.id, timedelta(hours=1))
        self.ec2.halt_instance(victim.id)
        self._until(
            lambda s: (
                s.get("running") == self.replicas
                and victim.id not in {i["id"] for i in s.get("instances", [])}
            ),
            "the stopped VM deleted and replaced",
        )

        bigger = self.replicas + 2
        self.say(f"kubectl scale cpp/{DEMO_POOL} --replicas={bigger}")
        self._scale(bigger)
        self._until(lambda s: s.get("running") == bigger and self._ready(s), f"{bigger} running")

        self.say(f"kubectl scale cpp/{DEMO_POOL} --replicas=1 (scaleDownPolicy: DeleteRunning)")
        self._scale(1)
        self._until(lambda s: s.get("replicas") == 1 and self._ready(s), "1 pilot left")

        (last,) = [vm for vm in self._vms() if str(vm.state) == "running"]
        self.say(f"the pilot on {last.id} finds no work and halts right after boot (a fizzle)")
        self.ec2.halt_instance(last.id)
        self._until(
            lambda s: s.get("replicas") == 0 and self._ready(s, "PilotsHeld"),
            "the fizzled VM deleted, new pilots held by the closed loop",
        )
        self.show_closed_loop()

        self.say(f"kubectl delete cpp {DEMO_POOL} (deletionPolicy: Delete)")
        self.kubectl("DELETE", _pools_path(DEMO_POOL))
        self._wait(
            lambda: self._pool() is None and not self._live_vms(),
            "pool gone and every VM terminated",
        )
        self.say("  the pool is gone and none of its VMs is left running")
        self.say("events recorded on the pool:")
        listing = self.kubectl("GET", f"/api/v1/namespaces/{DEMO_NAMESPACE}/events") or {}
        events: list[dict[str, Any]] = listing.get("items") or []
        # In time order (kubectl's order), not the API's listing order (by name).
        events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("firstTimestamp") or ""))
        for event in events[-8:]:
            self.say(
                f"  {event.get('type', ''):7} {event.get('reason', ''):10} {event.get('message')}"
            )

    # -- Kubernetes and cloud plumbing ------------------------------------------------------

    def _prepare(self) -> None:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}}
        self.kubectl("POST", "/api/v1/namespaces", namespace)
        key, secret = self.ec2.credentials
        for name, data in (
            ("ec2-credentials", {"key": key, "secret": secret}),
            (
                "pilot",
                {"pilot.sh": "#!/bin/sh\n# stand-in for DIRAC's pilot wrapper\necho pilot\n"},
            ),
        ):
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
            self.kubectl("POST", f"/api/v1/namespaces/{DEMO_NAMESPACE}/secrets", secret)
        self.say("namespace pilots, Secrets ec2-credentials and pilot created")

    def _pool_manifest(self) -> dict[str, Any]:
        from cloudpilot import constants
        from cloudpilot_devtools import moto_ec2

        return {
            "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
            "kind": constants.KIND,
            "metadata": {"name": DEMO_POOL, "namespace": DEMO_NAMESPACE},
            "spec": {
                "ce": "cloud.demo.example",
                # The stock EC2 driver, with only the emulator's XML namespace quirk fixed.
                "cloudType": moto_ec2.CLASS_PATH,
                "driver": self.ec2.driver_options(),
                "credentialsSecret": {"name": "ec2-credentials"},
                "instance": {
                    "image": "name:AlmaLinux-9-GenericCloud-9.4-x86_64",
                    "flavor": "t3.medium",
                },
                "pilot": {"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
                "replicas": self.replicas,
                "scaleDownPolicy": "DeleteRunning",
            },
        }

    def _scale(self, replicas: int) -> None:
        self.kubectl(
            "PATCH",
            _pools_path(DEMO_POOL) + "/scale",
            {"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def _pool(self) -> dict[str, Any] | None:
        return self.kubectl("GET", _pools_path(DEMO_POOL))

    def _status(self) -> dict[str, Any]:
        return (self._pool() or {}).get("status") or {}

    @staticmethod
    def _ready(status: dict[str, Any], reason: str | None = None) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True" and reason in (None, c.get("reason"))
            for c in status.get("conditions", [])
        )

    def _vms(self) -> list[Any]:
        from cloudpilot import naming
        from cloudpilot_devtools.moto_ec2 import MotoEC2NodeDriver

        driver = MotoEC2NodeDriver(*self.ec2.credentials, **self.ec2.driver_options())
        prefix = naming.pool_prefix(DEMO_NAMESPACE, DEMO_POOL)
        return [n for n in driver.list_nodes() if n.name.startswith(prefix)]

    def _live_vms(self) -> list[Any]:
        return [vm for vm in self._vms() if str(vm.state) in ("running", "pending", "stopped")]

    def _until(self, predicate: Callable[[dict[str, Any]], Any], what: str) -> None:
        self._wait(lambda: predicate(self._status()), what)
        self.show()

    def _wait(self, predicate: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not reached within {STEP_TIMEOUT:.0f} s: {what}")
            time.sleep(0.2)  # polling period of a human watching `kubectl get -w`
        self.say(f"OK: {what}")
