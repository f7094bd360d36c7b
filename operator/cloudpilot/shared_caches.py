"""What the operator keeps across pools: cloud gateways, rate limiters, Secret reads,
proxy files. One object, each cache with its own eviction, so that nothing here grows with
the pools that came and went.

* gateways (libcloud drivers and their HTTP sessions) per account and credentials: dropped,
  their connections closed, once no pool has used them for two intervals (swept at most
  once an interval);
* rate limiters per endpoint: dropped with the last gateway of their endpoint;
* Secret reads: shared for half an interval, expired ones dropped whenever a read starts;
* proxy files: released per pool (:meth:`release_pool`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudpilot import constants
from cloudpilot.cloud.gateway import CloudGateway, Credentials
from cloudpilot.cloud.listing import LISTING_REUSE_FRACTION
from cloudpilot.cloud.listing_reuse import WriteLog
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.credentials.proxyfiles import ProxyFileStore
from cloudpilot.memory import CloudError
from cloudpilot.models.queues import CloudAccount

SecretReader = Callable[[str, str], Awaitable[dict[str, bytes]]]
GatewayKey = tuple[CloudAccount, str]


@dataclass(frozen=True)
class CacheSettings:
    interval: float = constants.DEFAULT_RECONCILE_INTERVAL
    parallelism: int = constants.DEFAULT_CREATE_PARALLELISM
    batch_size: int = constants.DEFAULT_BATCH_SIZE
    rate_limit: float = 20.0
    rate_burst: int = 40
    allowed_driver_classes: frozenset[str] = frozenset()


class SharedCaches:
    def __init__(
        self,
        settings: CacheSettings,
        read_secret: SecretReader,
        on_cloud_call: Callable[[str, float, CloudError | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self._read_secret = read_secret
        self._on_cloud_call = on_cloud_call
        self.gateways: dict[GatewayKey, CloudGateway] = {}
        self._gateway_used: dict[GatewayKey, float] = {}
        self._swept = float("-inf")
        self.limiters: dict[str, TokenBucket] = {}
        self.secret_reads: dict[tuple[str, str], tuple[float, asyncio.Future[dict[str, bytes]]]]
        self.secret_reads = {}
        self._young = settings.interval * LISTING_REUSE_FRACTION
        self.writes = WriteLog(horizon=settings.interval)
        """Creates under each pool prefix, for every listing of this reconciler: two Secrets
        may list one cloud account (see :class:`~cloudpilot.cloud.listing.WriteLog`)."""
        self.proxy_files = ProxyFileStore()

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        """Secret reads shared by every pool for a short while (half the reconcile
        interval, as the cloud listing): a thousand pools on one credentials Secret make one
        GET per interval, not a thousand. Concurrent reads of one Secret wait for the first.

        Each reader waits through :func:`asyncio.shield`: a pool whose cycle is cancelled
        must not cancel the read other pools wait for (they would get its cancellation)."""
        key = (namespace, name)
        now = time.monotonic()
        cached = self.secret_reads.get(key)
        if cached is not None and now - cached[0] < self._young:
            return await asyncio.shield(cached[1])
        for stale in [k for k, (at, _) in self.secret_reads.items() if now - at >= self._young]:
            del self.secret_reads[stale]
        reading = asyncio.ensure_future(self._read_secret(namespace, name))
        self.secret_reads[key] = (now, reading)
        reading.add_done_callback(lambda done: self._drop_failed(key, done))
        return await asyncio.shield(reading)

    def _drop_failed(self, key: tuple[str, str], done: asyncio.Future[dict[str, bytes]]) -> None:
        """A failed read is never served from cache; only its own entry goes (a newer read
        of the same Secret may have replaced it meanwhile)."""
        failed = done.cancelled() or done.exception() is not None  # retrieved: no warning
        entry = self.secret_reads.get(key)
        if failed and entry is not None and entry[1] is done:
            del self.secret_reads[key]

    def gateway(self, account: CloudAccount, credentials: Credentials) -> CloudGateway:
        """The gateway of ``account`` with ``credentials``, made on first use.

        A rotated Secret makes a new gateway; the old one goes once no pool has used it for
        two intervals. Not at once: pools sharing a Secret may resolve it to different
        credentials (PROXY with each pool's own proxy), and would otherwise rebuild each
        other's drivers every cycle.
        """
        key = (account, credentials.fingerprint)
        gateway = self.gateways.get(key)
        if gateway is None:
            s = self.settings
            limiter = self.limiters.setdefault(
                account.endpoint, TokenBucket(s.rate_limit, s.rate_burst)
            )
            gateway = CloudGateway(
                account,
                credentials,
                limiter=limiter,
                parallelism=s.parallelism,
                batch_size=s.batch_size,
                on_call=self._on_cloud_call,
                # Pools on one endpoint and credentials share a listing this young.
                listing_max_age=self._young,
                allowed_driver_classes=s.allowed_driver_classes,
                write_log=self.writes,
            )
            self.gateways[key] = gateway
        now = time.monotonic()
        self._gateway_used[key] = now
        if now - self._swept >= self.settings.interval:
            self._swept = now
            self._sweep(now - 2 * self.settings.interval)
        return gateway

    def _sweep(self, horizon: float) -> None:
        """Gateways unused since ``horizon`` go (a deleted pool, edited driver options, a
        rotated Secret), then the limiters of endpoints no gateway uses any more."""
        for stale in [k for k, used in self._gateway_used.items() if used < horizon]:
            gateway = self.gateways.pop(stale, None)
            del self._gateway_used[stale]
            if gateway is not None:
                gateway.close()  # its drivers' sockets, not left to the garbage collector
        in_use = {account.endpoint for account, _ in self.gateways}
        for endpoint in [e for e in self.limiters if e not in in_use]:
            del self.limiters[endpoint]

    def release_pool(self, uid: str, key: str) -> None:
        """Drop what the caches hold for one pool: its listing marks and proxy files."""
        for gateway in self.gateways.values():
            gateway.listing.forget(uid)  # which listing this pool saw last
        self.proxy_files.release(key)
