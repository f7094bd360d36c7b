"""The pure core loads no adapter: deciding a cycle needs no cloud driver and no cluster.

Each module is imported in a fresh interpreter (this test process has long since loaded
libcloud through other tests), and what it pulled in is read from ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ADAPTERS = ("libcloud", "kopf", "kubernetes", "aiohttp", "requests")
"""Top-level packages that mean I/O: a cloud driver, a Kubernetes client, HTTP."""
ADAPTER_MODULES = ("cloudpilot.cloud.gateway", "cloudpilot.leader", "cloudpilot.kube.client")

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "cloudpilot.decision",
        "cloudpilot.cycle_events",
        "cloudpilot.inventory",
        "cloudpilot.nova_quota",
    ],
)
def test_a_pure_module_imports_neither_libcloud_nor_a_kubernetes_client(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded  # the probe did import it
    assert not {m for m in loaded if m.split(".")[0] in ADAPTERS}
    assert not loaded & set(ADAPTER_MODULES)


def test_the_probe_sees_libcloud_when_it_is_imported() -> None:
    """The check above can fail: the gateway does load libcloud."""
    assert "libcloud" in loaded_by("cloudpilot.cloud.gateway")
