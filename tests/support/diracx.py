"""pytest glue for the DiracX peer: skip with the install command locally, fail under CI."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.diracx_peer import DiracXPeer, unavailable_reason


def require_diracx_peer() -> None:
    """Skip the calling test when the peer is not installed; fail instead under CI=true."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def diracx_peer() -> Iterator[DiracXPeer]:
    """One real DiracX per test module (~25 s to start): tests tell their pilots apart by
    grid site, and their jobs by site too."""
    require_diracx_peer()
    with DiracXPeer() as peer:
        yield peer
