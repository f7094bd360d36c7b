"""A pool cannot make the operator import code: end to end, on the real API server.

The pool names a module the test wrote, which would work as a driver (it is the moto EC2
driver under another name) and leaves a marker file when imported. Not on the operator's
allow-list, it stalls the pool with InvalidConfig, no VM, and is never imported; the control
run allows it and gets VMs, so the first test would notice an import.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudpilot_devtools import moto_ec2
from tests.support.kube import wait_for
from tests.support.planted import Planted, planted_driver
from tests.support.stack import Stack


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Planted]:
    """A working driver (moto's EC2 under another name) that marks its own import."""
    with planted_driver(tmp_path, monkeypatch, moto_ec2.CLASS_PATH) as found:
        yield found


def test_a_pool_naming_a_class_not_allowed_stalls_and_imports_nothing(
    stack: Stack, planted: Planted
) -> None:
    stack.apply_pool("sneaky", replicas=1, cloudType=planted.driver)

    def stalled() -> dict[str, str] | None:
        condition = stack.condition("sneaky", "Stalled")
        return condition if condition and condition["reason"] == "InvalidConfig" else None

    condition = wait_for(stalled, 30, message="Stalled InvalidConfig on sneaky")
    assert condition["status"] == "True"
    assert planted.driver in condition["message"]
    assert "CLOUDPILOT_ALLOWED_DRIVER_CLASSES" in condition["message"]
    assert "operator.allowedDriverClasses" in condition["message"]
    assert not planted.imported()
    assert stack.vms("sneaky") == []


def test_the_same_pool_runs_once_an_administrator_allows_the_class(
    stack_without_operator: Stack, planted: Planted
) -> None:
    """The control: allowed by the operator's settings, the module is imported and works."""
    stack = stack_without_operator
    allowed = stack.settings.allowed_driver_classes | {planted.driver}
    stack.start_operator(allowed_driver_classes=allowed)
    stack.apply_pool("allowed", replicas=1, cloudType=planted.driver)
    stack.wait_vms("allowed", 1)
    assert planted.imported()
    assert stack.condition("allowed", "Stalled") is None
