"""Fixtures for end-to-end tests: the whole stack, started and stopped per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Stack, running_stack


@pytest.fixture
def stack() -> Iterator[Stack]:
    with running_stack() as started:
        yield started


@pytest.fixture
def stack_without_operator() -> Iterator[Stack]:
    with running_stack(with_operator=False) as started:
        yield started
