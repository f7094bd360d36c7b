"""The variables a user-data template sees, built from one queue's configuration.

Everything here is the same for every VM of the queue: per-VM values (instance id, pilot
stamp) are computed on the VM at boot, so one rendering serves a whole batch. The list is
documented in docs/contextualisation.md; :data:`DOCUMENTED` keeps the two in step (a test
checks that every variable is described there).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cloudpilot.context.errors import UserDataError
from cloudpilot.context.limits import provider_for
from cloudpilot.context.templating import builtin_text, environment
from cloudpilot.models.queues import QueueConfig

PILOT_STAMP_PREFIX = "cloudpilot:"
PILOT_STAMP_LENGTH = 32
"""The stamp rule shared with :func:`cloudpilot.naming.pilot_stamp` (a test holds them
together): the first 32 hex digits of ``sha256("cloudpilot:" + instance id)``."""

BOOT_ALLOWANCE = 900
"""Seconds kept for booting and cloud-init's own work (packages, CVMFS) out of the VM's
``maxLifetime`` when computing ``pilot_timeout``."""
MIN_PILOT_TIMEOUT = 600

CVMFS_DEFAULTS: dict[str, Any] = {
    "cache_base": "/mnt/cvmfs",
    "http_proxy": "auto;DIRECT",
    "pac_urls": [
        "http://grid-wpad/wpad.dat",
        "http://wpad/wpad.dat",
        "http://cernvm-wpad.cern.ch/wpad.dat",
        "http://cernvm-wpad.fnal.gov/wpad.dat",
    ],
    "repositories": [],
    "quota_limit": None,
}
"""DIRAC's CVMFS client settings: proxy autodetection through WPAD (site proxy, then CERN's
and Fermilab's), falling back to direct access; the cache on the ephemeral disk."""

DOCUMENTED: dict[str, str] = {
    "pilot_executable": "the pilot wrapper (with its bundled proxy) from "
    "spec.pilot.executableSecret, or a stub that fails when no Secret is named",
    "pilot_proxy": "a separate pilot proxy (PEM) from spec.pilot.proxySecret, or none",
    "ce": "the CE name (spec.ce)",
    "queue": "the queue name",
    "pool": "the CloudPilotPool name",
    "namespace": "the pool's namespace",
    "ext_packages": "extra packages (context.extPackages), a list",
    "halt_grace_period": "seconds between the pilot's end and poweroff (context.haltGracePeriod)",
    "max_lifetime": "seconds after which the operator deletes a VM (context.maxLifetime)",
    "pilot_timeout": "seconds the pilot may run, so that it ends before maxLifetime",
    "template_family": "el9 or centos7 (context.templateFamily)",
    "provider": "ec2, openstack, gce, azure or other, from cloudType",
    "cvmfs": "CVMFS client settings: cache_base, http_proxy, pac_urls, repositories, quota_limit",
    "block_metadata": "whether the VM blocks the metadata service before the pilot starts",
    "pilot_stamp_prefix": "the stamp rule's prefix, cloudpilot:",
    "pilot_stamp_length": "the stamp's length in hex digits, 32",
    "pilot_stamp_script": "shell functions cloudpilot_instance_id and cloudpilot_pilot_stamp ID",
    "cloudpilot_version": "the operator's version",
}

_NO_EXECUTABLE = """#!/bin/bash
echo "cloudpilot: no pilot executable (spec.pilot.executableSecret is not set)" >&2
exit 1
"""


def _version() -> str:
    try:
        return version("cloudpilot")
    except PackageNotFoundError:
        return "unknown"


def pilot_timeout(max_lifetime: int, halt_grace_period: int) -> int:
    return max(max_lifetime - halt_grace_period - BOOT_ALLOWANCE, MIN_PILOT_TIMEOUT)


@cache
def stamp_script() -> str:
    """The shell stamp rule, rendered on its own (templates include it by name); constant,
    so compiled and rendered once per process."""
    template = environment().from_string(builtin_text("pilot-stamp.sh.j2"))
    return template.render(
        pilot_stamp_prefix=PILOT_STAMP_PREFIX, pilot_stamp_length=PILOT_STAMP_LENGTH
    )


def template_variables(
    queue: QueueConfig,
    *,
    namespace: str,
    pool: str,
    pilot_executable: str | None,
    pilot_proxy: str | None = None,
) -> dict[str, Any]:
    """The template context of one queue. Raises :class:`UserDataError` for names that
    could break a script (line breaks, control characters)."""
    names = {"ce": queue.ce, "queue": queue.name, "pool": pool, "namespace": namespace}
    for label, value in [*names.items(), *(("extPackages", p) for p in queue.ext_packages)]:
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise UserDataError(f"{label} {value!r} contains a control character")
    return {
        **names,
        "pilot_executable": pilot_executable if pilot_executable is not None else _NO_EXECUTABLE,
        "pilot_proxy": pilot_proxy,
        "ext_packages": list(queue.ext_packages),
        "halt_grace_period": queue.halt_grace_period,
        "max_lifetime": queue.max_lifetime,
        "pilot_timeout": pilot_timeout(queue.max_lifetime, queue.halt_grace_period),
        "template_family": str(queue.template_family),
        "provider": str(provider_for(queue.account.cloud_type)),
        "cvmfs": {k: list(v) if isinstance(v, list) else v for k, v in CVMFS_DEFAULTS.items()},
        "block_metadata": True,
        "pilot_stamp_prefix": PILOT_STAMP_PREFIX,
        "pilot_stamp_length": PILOT_STAMP_LENGTH,
        "pilot_stamp_script": stamp_script(),
        "cloudpilot_version": _version(),
    }
