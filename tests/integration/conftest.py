"""Fixtures for end-to-end tests: the whole stack, started and stopped per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudpilot_devtools.ec2_emulator import EC2Emulator
from tests.support.stack import Stack, running_stack


@pytest.fixture
def stack(ec2: EC2Emulator) -> Iterator[Stack]:
    with running_stack(ec2=ec2) as started:
        yield started


@pytest.fixture
def stack_without_operator(ec2: EC2Emulator) -> Iterator[Stack]:
    with running_stack(with_operator=False, ec2=ec2) as started:
        yield started
