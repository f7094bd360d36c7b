"""Plain stand-ins for the shared-listing unit tests: a named node and a clock the test moves.

One copy for tests/unit/test_listing.py and tests/unit/test_listing_reuse.py: a listing
only needs ``node.name``, and its time is whatever the test says it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    name: str


class Clock:
    """Monotonic seconds, starting at 100; tests set or advance ``now``."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
