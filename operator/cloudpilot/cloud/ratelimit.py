"""A token bucket per cloud endpoint, so a scale-up burst never trips provider throttling.

EC2 throttles per account and region (``RequestLimitExceeded``), OpenStack per deployment.
Every API call of every pool on one endpoint takes a token first; idle buckets refill up to
``burst``, so short bursts go out at once and long ones settle at ``rate`` per second.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            # The epsilon stops float rounding from asking for a sleep shorter than the
            # clock can measure, which would spin.
            while self._tokens < 1 - 1e-9:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1
