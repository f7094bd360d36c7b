"""Fixtures for unit tests that run whole cycles (tests/support/stub_reconciler.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudpilot import redaction


@pytest.fixture
def forget_registered_secrets() -> Iterator[None]:
    """A cycle registers the pool's credentials for log masking, process-wide: leave the
    registry as the test found it (short values like the stubs' would mask other tests'
    text)."""
    before = set(redaction._secrets)
    yield
    for owner in set(redaction._secrets) - before:
        redaction.forget(owner)
