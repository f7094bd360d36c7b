"""The async face of one cloud account: list, create, destroy through libcloud.

libcloud is synchronous, so every call runs in a worker thread, never on the event loop.
Each worker uses its own driver instance (libcloud connections keep per-request state),
at most ``parallelism`` at once per account, and every call first takes a token from the
endpoint's rate limiter. Where the provider has a batch API it is used: EC2 starts a whole
batch in one ``RunInstances`` (``MinCount/MaxCount``) and terminates up to a thousand
instances in one ``TerminateInstances``; elsewhere calls run concurrently. A batch is
all-or-nothing (``MinCount = MaxCount``): a quota refusal then fails the batch with a clear
``InstanceLimitExceeded`` instead of quietly starting fewer VMs (moto, the EC2 emulator,
honours only ``MinCount``).

Nothing here decides anything: the reconciler asks, the gateway does and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from libcloud.compute.base import Node, NodeDriver

from cloudpilot import constants
from cloudpilot.cloud import errors
from cloudpilot.cloud.drivers import build_driver
from cloudpilot.cloud.lookups import Resolver
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.memory import CloudError
from cloudpilot.models.queues import CloudAccount, QueueConfig

T = TypeVar("T")

_EXECUTOR = ThreadPoolExecutor(max_workers=64, thread_name_prefix="cloudpilot-cloud")
EC2_TERMINATE_CHUNK = 1000


@dataclass(frozen=True)
class Credentials:
    key: str
    secret: str | None

    @property
    def fingerprint(self) -> str:
        """Identifies a credential set in caches without holding or showing the values."""
        return hashlib.sha256(f"{self.key}\0{self.secret}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ListedNode:
    id: str
    name: str
    state: str
    created_at: datetime | None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateRequest:
    queue: QueueConfig
    count: int
    name: str
    user_data: bytes
    tags: Mapping[str, str]
    client_token: str | None = None


@dataclass(frozen=True)
class CreateResult:
    queue: str
    requested: int
    created: tuple[ListedNode, ...] = ()
    error: CloudError | None = None


def _is_ec2(driver: NodeDriver) -> bool:
    from libcloud.compute.drivers.ec2 import BaseEC2NodeDriver

    return isinstance(driver, BaseEC2NodeDriver)


def _tags_of(node: Node) -> dict[str, str]:
    extra = node.extra or {}
    for key in ("tags", "metadata"):
        value = extra.get(key)
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
    return {}


def _as_listed(node: Node) -> ListedNode:
    created = node.created_at
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return ListedNode(
        id=str(node.id),
        name=str(node.name or ""),
        state=str(getattr(node.state, "value", node.state)),
        created_at=created if isinstance(created, datetime) else None,
        tags=_tags_of(node),
    )


class CloudGateway:
    """Calls to one cloud account with one set of credentials."""

    def __init__(
        self,
        account: CloudAccount,
        credentials: Credentials,
        *,
        limiter: TokenBucket,
        parallelism: int = constants.DEFAULT_CREATE_PARALLELISM,
        batch_size: int = constants.DEFAULT_BATCH_SIZE,
        on_call: Callable[[str, float, CloudError | None], None] | None = None,
    ) -> None:
        self.account = account
        self.credentials = credentials
        self._limiter = limiter
        self._parallelism = parallelism
        self._batch_size = batch_size
        self._idle: asyncio.Queue[NodeDriver] = asyncio.Queue()
        self._built = 0
        self._build_lock = asyncio.Lock()
        self._probe: NodeDriver | None = None
        self.resolver = Resolver()
        self._on_call = on_call

    # -- plumbing ---------------------------------------------------------------------------

    def _new_driver(self) -> NodeDriver:
        return build_driver(
            self.account.cloud_type,
            self.credentials.key,
            self.credentials.secret,
            self.account.options,
        )

    def probe(self) -> NodeDriver:
        """A driver used only to inspect capabilities (never for calls across threads)."""
        if self._probe is None:
            self._probe = self._new_driver()
        return self._probe

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[NodeDriver]:
        async with self._build_lock:
            if self._idle.empty() and self._built < self._parallelism:
                self._built += 1
                self._idle.put_nowait(await self._in_thread(self._new_driver))
        driver = await self._idle.get()
        try:
            yield driver
        finally:
            self._idle.put_nowait(driver)

    @staticmethod
    async def _in_thread(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, fn)

    async def _call(self, operation: str, fn: Callable[[NodeDriver], T]) -> T:
        """Run one API operation on a free driver, rate limited, and record its outcome."""
        loop = asyncio.get_running_loop()
        async with self._driver() as driver:
            await self._limiter.acquire()
            started = loop.time()
            try:
                result = await self._in_thread(lambda: fn(driver))
            except Exception as exc:
                if self._on_call:
                    self._on_call(operation, loop.time() - started, errors.classify(exc, operation))
                raise
            if self._on_call:
                self._on_call(operation, loop.time() - started, None)
            return result

    # -- capabilities -----------------------------------------------------------------------

    @property
    def tags_supported(self) -> bool:
        """Whether VMs can carry metadata that proves ownership (EC2 tags, Nova metadata)."""
        return "ex_metadata" in inspect.signature(self.probe().create_node).parameters

    @property
    def batch_create_supported(self) -> bool:
        return _is_ec2(self.probe())

    # -- operations -------------------------------------------------------------------------

    async def list_nodes(self) -> list[ListedNode]:
        """One listing of the whole account: every pool on it is split out of this."""

        def run(driver: NodeDriver) -> list[ListedNode]:
            if _is_ec2(driver):
                nodes = driver.list_nodes(
                    ex_filters={f"tag:{constants.TAG_MANAGED_BY}": "cloudpilot"}
                )
            else:
                nodes = driver.list_nodes()
            return [_as_listed(n) for n in nodes]

        return await self._call("list", run)

    async def create(self, request: CreateRequest) -> CreateResult:
        """Start ``request.count`` VMs; partial success is reported, never raised."""
        try:
            kwargs = await self._create_kwargs(request)
        except Exception as exc:
            return CreateResult(
                request.queue.name, request.count, error=errors.classify(exc, "resolve")
            )
        if self.batch_create_supported:
            return await self._create_batched(request, kwargs)
        return await self._create_each(request, kwargs)

    async def _create_kwargs(self, request: CreateRequest) -> dict[str, Any]:
        queue = request.queue

        def resolve(driver: NodeDriver) -> dict[str, Any]:
            return self.resolver.create_arguments(driver, queue)

        kwargs = await self._call("resolve", resolve)
        params = inspect.signature(self.probe().create_node).parameters
        if queue.ssh_key and "ex_keyname" in params:
            kwargs["ex_keyname"] = queue.ssh_key
        if "ex_metadata" in params:
            kwargs["ex_metadata"] = dict(request.tags)
        kwargs["ex_userdata"] = request.user_data
        kwargs.update(queue.create_options)
        return kwargs

    async def _create_batched(self, request: CreateRequest, kwargs: dict[str, Any]) -> CreateResult:
        created: list[ListedNode] = []
        remaining = request.count
        error: CloudError | None = None
        batch_no = 0
        while remaining > 0 and error is None:
            size = min(remaining, self._batch_size)
            token = f"{request.client_token}-{batch_no}" if request.client_token else None
            batch_no += 1

            def run(driver: NodeDriver, size: int = size, token: str | None = token) -> list[Node]:
                extra = {"ex_clienttoken": token} if token else {}
                nodes = driver.create_node(
                    name=request.name, ex_mincount=size, ex_maxcount=size, **kwargs, **extra
                )
                return nodes if isinstance(nodes, list) else [nodes]

            try:
                nodes = await self._call("create", run)
            except Exception as exc:
                error = errors.classify(exc, "create")
                break
            created.extend(_as_listed(n) for n in nodes)
            remaining -= size
        return CreateResult(request.queue.name, request.count, tuple(created), error)

    async def _create_each(self, request: CreateRequest, kwargs: dict[str, Any]) -> CreateResult:
        async def one() -> ListedNode:
            node = await self._call(
                "create", lambda driver: driver.create_node(name=request.name, **kwargs)
            )
            return _as_listed(node)

        outcomes = await asyncio.gather(
            *(one() for _ in range(request.count)), return_exceptions=True
        )
        created = tuple(o for o in outcomes if isinstance(o, ListedNode))
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        error = errors.classify(failures[0], "create") if failures else None
        return CreateResult(request.queue.name, request.count, created, error)

    async def destroy(self, nodes: Sequence[ListedNode]) -> dict[str, CloudError | None]:
        """Destroy VMs; one failure never stops the others. Returns id -> error or None."""
        if not nodes:
            return {}
        if _is_ec2(self.probe()):
            return await self._destroy_ec2(nodes)

        async def one(listed: ListedNode) -> CloudError | None:
            def run(driver: NodeDriver) -> Any:
                node = Node(
                    id=listed.id,
                    name=listed.name,
                    state=None,
                    public_ips=[],
                    private_ips=[],
                    driver=driver,
                )
                return driver.destroy_node(node)

            try:
                await self._call("destroy", run)
            except Exception as exc:
                return errors.classify(exc, "destroy")
            return None

        results = await asyncio.gather(*(one(n) for n in nodes))
        return {n.id: r for n, r in zip(nodes, results, strict=True)}

    async def _destroy_ec2(self, nodes: Sequence[ListedNode]) -> dict[str, CloudError | None]:
        outcome: dict[str, CloudError | None] = {}
        ids = [n.id for n in nodes]
        for start in range(0, len(ids), EC2_TERMINATE_CHUNK):
            chunk = ids[start : start + EC2_TERMINATE_CHUNK]

            def run(driver: NodeDriver, chunk: list[str] = chunk) -> Any:
                params: dict[str, str] = {"Action": "TerminateInstances"}
                params.update({f"InstanceId.{i + 1}": vm_id for i, vm_id in enumerate(chunk)})
                return driver.connection.request(driver.path, params=params).object

            try:
                await self._call("destroy", run)
                outcome.update(dict.fromkeys(chunk))
            except Exception as exc:
                if len(chunk) == 1:
                    outcome[chunk[0]] = errors.classify(exc, "destroy")
                    continue
                # One unknown id fails the whole EC2 call: fall back to one call per VM so
                # the others still go.
                for listed in (n for n in nodes if n.id in set(chunk)):
                    outcome.update(await self._destroy_ec2([listed]))
        return outcome
