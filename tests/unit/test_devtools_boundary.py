"""The product and its test machinery stay apart.

``cloudpilot_devtools`` (emulators for the demo, the tests and the benchmarks) sits next to
``cloudpilot`` and its dependencies come only with the ``demo`` extra: the operator must run
without them, and ``cloudpilot demo`` must say what to install instead of a traceback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from cloudpilot.commands import demo

_IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import cloudpilot
for info in pkgutil.walk_packages(cloudpilot.__path__, "cloudpilot."):
    if not info.name.endswith(".__main__"):  # it runs the CLI
        importlib.import_module(info.name)
# Not jsonpatch: the demo extra names it, but kopf needs it too.
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("cloudpilot_devtools", "moto", "kmock")
)
print(" ".join(loaded))
"""


def test_no_module_of_the_operator_imports_the_devtools_or_their_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == []


@pytest.mark.parametrize("module", ["cloudpilot_devtools", "kmock", "moto", "flask"])
def test_demo_without_its_extra_says_what_to_install(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import and find_spec: not installed
    assert demo.run(argparse.Namespace(replicas=1, quiet=True)) == 2
    err = capsys.readouterr().err
    assert f"({module})" in err
    assert "pip install 'cloudpilot[demo]'" in err


def test_demo_finds_its_extra_in_the_test_environment() -> None:
    assert demo.missing_module() is None
