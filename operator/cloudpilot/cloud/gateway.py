"""The async face of one cloud account: list, create, destroy through libcloud.

libcloud is synchronous, so every call runs in a worker thread, never on the event loop.
Each worker uses its own driver instance (libcloud connections keep per-request state),
at most ``parallelism`` at once per account, and every call first takes a token from the
endpoint's rate limiter. Where the provider has a batch API it is used: EC2 starts a whole
batch in one ``RunInstances`` (``MinCount/MaxCount``) and terminates up to a thousand
instances in one ``TerminateInstances``; elsewhere calls run concurrently. Batches of one
scale-up go out concurrently too (bounded by ``parallelism``). A batch asks for
``MinCount = 1 .. MaxCount = n`` and takes what fits: fewer VMs than asked, or a quota
refusal when not even one fits, tell the closed loop the account's headroom
(:mod:`cloudpilot.capacity`), so it never asks for the same refused size again.

Listing costs one call per cycle per account, whatever the number of pools: on EC2 the
gateway sends ``DescribeInstances`` itself (libcloud's ``list_nodes`` adds a
``DescribeAddresses`` for Elastic IPs nobody here needs, doubling the cost), filtered on the
server to CloudPilot's instances that are not terminated, and parses the answer with the
driver's own ``_to_nodes``; and every gateway of one endpoint and credentials shares one
:class:`~cloudpilot.cloud.listing.SharedListing`, so pools that reconcile at about the same
time are served by a single listing (see that module for why that is safe).

Nothing here decides anything: the reconciler asks, the gateway does and reports; how a
scale-up is split, when batches stop, when a destroy is retried VM by VM and when lookups
are forgotten are the pure choices of :mod:`cloudpilot.cloud.batching`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from xml.etree.ElementTree import Element

from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState

from cloudpilot import constants, leader
from cloudpilot.cloud import batching, errors, nova_limits
from cloudpilot.cloud.batch_size import CreateApi, max_batch
from cloudpilot.cloud.connections import close_connections
from cloudpilot.cloud.driver_protocol import ComputeDriver, EC2Driver, as_node_driver
from cloudpilot.cloud.drivers import build_driver, driver_class
from cloudpilot.cloud.limits_request import limits_call
from cloudpilot.cloud.listing import SharedListing, shared_listing
from cloudpilot.cloud.listing_reuse import WriteLog
from cloudpilot.cloud.lookups import NeedsLookupError, Resolver, ec2_driver, is_ec2
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.cloud.results import CreateResult as CreateResult  # re-exported
from cloudpilot.cloud.results import ListedNode as ListedNode
from cloudpilot.memory import CloudError, ErrorKind
from cloudpilot.models.queues import CloudAccount, QueueConfig
from cloudpilot.naming import pool_prefix, queue_prefix

T = TypeVar("T")
logger = logging.getLogger(__name__)


@functools.cache
def _takes_timeout(cls: type[NodeDriver]) -> bool:
    """libcloud's drivers pass ``timeout`` (through ``**kwargs``) to their connection; a
    driver with a closed signature of its own (libcloud's dummy) would refuse it."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return any(p.name == "timeout" or p.kind is p.VAR_KEYWORD for p in parameters)


_WRITES = frozenset({"create", "destroy"})
"""Operations that change the cloud: each passes the leadership fence right before it leaves."""

_EXECUTOR = ThreadPoolExecutor(max_workers=64, thread_name_prefix="cloudpilot-cloud")
EC2_TERMINATE_CHUNK = 1000
EC2_LIST_PAGE_SIZE = 1000
"""``MaxResults`` of one ``DescribeInstances`` page (EC2's maximum)."""
MAX_LIST_PAGES = 1000
"""A listing that has not ended after this many pages is an API fault, not an account."""
EC2_LISTED_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
"""Every EC2 instance state but ``terminated``: EC2 keeps terminated instances listed for
up to an hour, and they are nobody's business (``states.GONE`` drops them anyway)."""


@dataclass(frozen=True)
class Credentials:
    key: str
    secret: str | None

    @property
    def fingerprint(self) -> str:
        """Identifies a credential set in caches without holding or showing the values."""
        return hashlib.sha256(f"{self.key}\0{self.secret}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CreateRequest:
    queue: QueueConfig
    count: int
    name: str
    user_data: bytes
    tags: Mapping[str, str]
    client_token: str | None = None


class _NotSent(Exception):
    """A call given up before it was sent (see ``CloudGateway._call``)."""


def _describe_instances(ec2: EC2Driver, token: str | None) -> tuple[list[Node], str | None]:
    """One ``DescribeInstances`` page of CloudPilot's live instances, parsed by the driver.

    libcloud's ``list_nodes`` would also call ``DescribeAddresses`` whenever it finds
    instances; this sends only the one call, with the same request building and signing
    (the driver's connection) and the same parsing (its ``_to_nodes``).
    """
    from libcloud.compute.drivers.ec2 import NAMESPACE

    params: dict[str, Any] = {"Action": "DescribeInstances", "MaxResults": EC2_LIST_PAGE_SIZE}
    params.update(
        ec2._build_filters(
            {
                f"tag:{constants.TAG_MANAGED_BY}": "cloudpilot",
                "instance-state-name": list(EC2_LISTED_STATES),
            }
        )
    )
    if token:
        params["NextToken"] = token
    elem = ec2.connection.request(ec2.path, params=params).object
    nodes: list[Node] = []
    # libcloud.utils.xml's findall/findtext, which are unannotated, do just this.
    for reservation in elem.findall(f"{{{NAMESPACE}}}reservationSet/{{{NAMESPACE}}}item"):
        nodes += ec2._to_nodes(reservation, "instancesSet/item")
    next_token = elem.findtext(f"{{{NAMESPACE}}}nextToken")
    return nodes, next_token or None


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
        listing_max_age: float = 0.0,
        allowed_driver_classes: frozenset[str] = frozenset(),
        write_log: WriteLog | None = None,
    ) -> None:
        """``listing_max_age``: how old a listing made for another pool on the same endpoint
        and credentials may be and still serve :meth:`list_shared` (0: only listings in
        flight are shared). ``allowed_driver_classes``: the operator's allow-list of
        ``cloudType`` class paths (libcloud's Provider names are always accepted).
        ``write_log``: the reconciler's, shared by all its gateways (None: the listing's
        own; see :class:`~cloudpilot.cloud.listing.WriteLog`)."""
        self.account = account
        self.credentials = credentials
        self._limiter = limiter
        self._parallelism = parallelism
        self._batch_size = batch_size
        self._allowed_driver_classes = frozenset(allowed_driver_classes)
        self._idle: asyncio.Queue[ComputeDriver] = asyncio.Queue()
        self._built = 0
        self._build_lock = asyncio.Lock()
        self._probe: ComputeDriver | None = None
        self._closed = False
        self.resolver = Resolver()
        self._on_call = on_call
        self.listing: SharedListing[ListedNode] = shared_listing(
            limiter,
            f"{account.endpoint}|{credentials.fingerprint}",
            max_age=listing_max_age,
            writes=write_log,
        )
        self.nova_headroom: nova_limits.Headroom | None = None
        """Nova's absolute limits as read beside this gateway's last listing (OpenStack
        only; None: not OpenStack, or the read failed). See :meth:`_read_nova_limits`."""

    # -- plumbing ---------------------------------------------------------------------------

    def _new_driver(self) -> ComputeDriver:
        options = dict(self.account.options)
        cls = driver_class(self.account.cloud_type, self._allowed_driver_classes)
        # ignore: a class is hashable; mypy checks NodeDriver's __hash__ for instances instead.
        if "timeout" not in options and _takes_timeout(cls):  # type: ignore[arg-type]
            # A bounded wait for every call; the pool's own driver.timeout wins.
            options["timeout"] = constants.CLOUD_CALL_TIMEOUT
        return build_driver(
            self.account.cloud_type,
            self.credentials.key,
            self.credentials.secret,
            options,
            self._allowed_driver_classes,
        )

    def probe(self) -> ComputeDriver:
        """A driver used only to inspect capabilities (never for calls across threads)."""
        if self._probe is None:
            self._probe = self._new_driver()
        return self._probe

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[ComputeDriver]:
        async with self._build_lock:
            if self._idle.empty() and self._built < self._parallelism:
                self._built += 1
                self._idle.put_nowait(await self._in_thread(self._new_driver))
        driver = await self._idle.get()
        try:
            yield driver
        finally:
            if self._closed:  # in use when the gateway was closed: its connections now
                close_connections(driver)
            self._idle.put_nowait(driver)

    def close(self) -> None:
        """Close every driver's HTTP connections: the shared caches dropped this gateway
        (see :mod:`cloudpilot.cloud.connections`). Drivers in use are closed when handed
        back; all stay usable, so a caller still holding the gateway is not broken."""
        self._closed = True
        idle = [self._idle.get_nowait() for _ in range(self._idle.qsize())]
        for driver in [*idle, *([self._probe] if self._probe is not None else [])]:
            close_connections(driver)
        for driver in idle:
            self._idle.put_nowait(driver)

    @staticmethod
    async def _in_thread(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, fn)

    async def _call(
        self,
        operation: str,
        fn: Callable[[ComputeDriver], T],
        *,
        cancelled: Callable[[], bool] | None = None,
    ) -> T:
        """Run one API operation on a free driver, rate limited, and record its outcome.

        ``cancelled`` is asked once a driver is free: if it says yes, nothing is sent (and
        no token taken) and :class:`_NotSent` is raised.
        """
        loop = asyncio.get_running_loop()
        may_write = leader.fence() if operation in _WRITES else None

        def fenced(driver: ComputeDriver) -> T:
            # The fence, in the worker thread right before the request leaves: a replica
            # that lost its Lease while it waited for a driver or a rate-limit token (or
            # was paused) sends nothing.
            if may_write is not None and not may_write():
                raise leader.NotLeading(f"{operation}: this replica no longer holds the Lease")
            return fn(driver)

        async with self._driver() as driver:
            if cancelled is not None and cancelled():
                raise _NotSent(operation)
            await self._limiter.acquire()
            started = loop.time()
            try:
                result = await self._in_thread(lambda: fenced(driver))
            except leader.NotLeading:
                # Nothing was sent: no call to count, no cloud error. Callers leave what
                # was fenced out of their results (neither done nor failed).
                logger.info("%s not sent: this replica no longer holds the Lease", operation)
                raise
            except Exception as exc:
                if self._on_call:
                    self._on_call(operation, loop.time() - started, errors.classify(exc, operation))
                raise
            if self._on_call:
                self._on_call(operation, loop.time() - started, None)
            return result

    # -- capabilities -----------------------------------------------------------------------

    @functools.cached_property
    def _create_params(self) -> Mapping[str, inspect.Parameter]:
        """The parameters the driver's ``create_node`` takes: the probe driver never
        changes, so its signature is inspected once, not on every create and listing."""
        return inspect.signature(self.probe().create_node).parameters

    @property
    def tags_supported(self) -> bool:
        """Whether VMs can carry metadata that proves ownership (EC2 tags, Nova metadata)."""
        return "ex_metadata" in self._create_params

    @property
    def batch_create_supported(self) -> bool:
        return is_ec2(self.probe())

    # -- operations -------------------------------------------------------------------------

    async def list_nodes(self) -> list[ListedNode]:
        """A fresh listing of the account's CloudPilot VMs (terminated ones left out on EC2).

        One API call per page: on EC2 a page holds up to a thousand instances.
        """
        if not is_ec2(self.probe()):
            return await self._call("list", lambda d: [_as_listed(n) for n in d.list_nodes()])
        nodes: list[ListedNode] = []
        token: str | None = None
        for _ in range(MAX_LIST_PAGES):

            def run(
                driver: ComputeDriver, token: str | None = token
            ) -> tuple[list[Node], str | None]:
                return _describe_instances(ec2_driver(driver), token)

            page, token = await self._call("list", run)
            nodes += (_as_listed(n) for n in page)
            if not token:
                return nodes
        raise RuntimeError(f"DescribeInstances did not end after {MAX_LIST_PAGES} pages")

    async def list_shared(self, consumer: str, prefix: str | None = None) -> list[ListedNode]:
        """The account's listing as shared by every pool on it (see :mod:`listing`).

        ``consumer`` (a pool's uid) is always given a listing newer than the last one it
        got; ``prefix`` (the pool's name prefix) picks its VMs out of the shared snapshot.
        """
        snapshot = await self.listing.get(consumer, self._list_with_limits, prefix)
        return list(snapshot.with_prefix(prefix))

    # -- Nova's limits (issue 13/16): one read per shared listing, beside it ----------------

    async def _list_with_limits(self) -> list[ListedNode]:
        nodes, self.nova_headroom = await asyncio.gather(
            self.list_nodes(), self._read_nova_limits()
        )
        return nodes

    async def _read_nova_limits(self) -> nova_limits.Headroom | None:
        """Nova's ``GET /limits`` as headroom; None for drivers without it (not OpenStack).

        Knowing the quota only saves a refused create: a failure here never fails the
        cycle (the quota is then learned from refusals, as on EC2). Only the exception's
        type is logged, never its text (an auth error may quote the request)."""
        call = limits_call(self.probe())
        if call is None:
            return None
        try:
            body: object = await self._call("limits", call)
            return nova_limits.headroom(body if isinstance(body, Mapping) else {})
        except Exception as exc:
            logger.debug(
                "Nova limits of %s not read: %s", self.account.endpoint, type(exc).__name__
            )
            return None

    def flavor_size(self, queue: QueueConfig) -> tuple[int, int]:
        """(vCPUs, MiB of RAM) of the queue's flavor if already looked up, else (0, 0):
        never a call (a raw id is not looked up; ``prepare`` caches names)."""
        try:
            size = self.resolver.create_arguments(self.probe(), queue, offline=True)["size"]
        except Exception:
            return 0, 0
        vcpus = getattr(size, "vcpus", None) or (size.extra or {}).get("vcpus")
        return _whole(vcpus), _whole(size.ram)

    # -- end of Nova's limits ---------------------------------------------------------------

    async def prepare(self, queue: QueueConfig) -> None:
        """Look the queue's ``name:`` image, flavor and networks up ahead of a create.

        The reconciler runs this beside the cycle's listing, so a new pool pays one round
        trip for both instead of one after the other. Nothing is sent when everything is
        cached or a raw id; a failure is left for the create to meet and report.
        """
        try:
            self.resolver.create_arguments(self.probe(), queue, offline=True)
            return
        except NeedsLookupError:
            pass
        except Exception:
            return
        with contextlib.suppress(Exception):
            await self._call("resolve", lambda d: self.resolver.create_arguments(d, queue))

    async def create(self, request: CreateRequest) -> CreateResult:
        """Start ``request.count`` VMs; partial success is reported, never raised.

        Refused, as an uncertain failure of its own (nothing sent), while an uncertain
        create under the same queue prefix is younger than ``memory.UNCERTAIN_HOLD``,
        whichever pool object made it: a pool applied again under the same name must hold
        too (:func:`~cloudpilot.cloud.listing_reuse.create_hold_left`)."""
        queue = request.queue
        writes = self.listing.writes
        prefix = queue_prefix(queue.pool_namespace, queue.pool_name, queue.name)
        if (left := writes.create_hold_left(prefix)) > 0:
            return CreateResult(queue.name, request.count, error=_held(left))
        uncertain = True  # until it returns: a cancelled create may be carried out too
        try:
            result = await self._create(request)
            uncertain = result.error is not None and result.error.uncertain
            return result
        finally:
            # Whatever came of it: listings made before now may lack what it started.
            self.listing.note_write(pool_prefix(queue.pool_namespace, queue.pool_name))
            if uncertain:
                writes.note_uncertain(prefix)

    async def _create(self, request: CreateRequest) -> CreateResult:
        try:
            kwargs = await self._create_kwargs(request)
        except Exception as exc:
            return CreateResult(
                request.queue.name, request.count, error=errors.classify(exc, "resolve")
            )
        if self.batch_create_supported:
            result = await self._create_batched(request, kwargs)
        else:
            result = await self._create_each(request, kwargs)
        if batching.forget_lookups_after(result.error):
            self.resolver.forget()
        return result

    async def _create_kwargs(self, request: CreateRequest) -> dict[str, Any]:
        queue = request.queue

        try:
            # Raw ids and cached names need no call: no worker thread, no rate-limit token.
            kwargs = self.resolver.create_arguments(self.probe(), queue, offline=True)
        except NeedsLookupError:

            def resolve(driver: ComputeDriver) -> dict[str, Any]:
                return self.resolver.create_arguments(driver, queue)

            kwargs = await self._call("resolve", resolve)
        params = self._create_params
        if queue.ssh_key and "ex_keyname" in params:
            kwargs["ex_keyname"] = queue.ssh_key
        if "ex_metadata" in params:
            kwargs["ex_metadata"] = dict(request.tags)
        kwargs["ex_userdata"] = request.user_data
        if queue.spot and "ex_spot" in params:
            kwargs["ex_spot"] = True
            if queue.spot_max_price is not None and "ex_spot_max_price" in params:
                kwargs["ex_spot_max_price"] = queue.spot_max_price
        # Site options first, then ours: the model refuses reserved keys, and this order
        # makes sure they could not win even if it did not.
        return {**queue.create_options, **kwargs}

    async def _create_batched(self, request: CreateRequest, kwargs: dict[str, Any]) -> CreateResult:
        """Batches (EC2's per-call maximum under the site's ``batch_size``: see
        :mod:`~cloudpilot.cloud.batch_size`) go out concurrently (at most ``parallelism``).

        A round trip is paid once for the whole scale-up instead of once per batch. After
        a failure, what is sent is :func:`batching.send_next_batch`'s choice.
        """
        sizes = batching.batch_sizes(
            request.count, max_batch(CreateApi.EC2_RUN_INSTANCES, self._batch_size)
        )
        failures: list[CloudError] = []
        fenced: list[int] = []

        async def batch(batch_no: int, size: int) -> list[ListedNode]:
            token = f"{request.client_token}-{batch_no}" if request.client_token else None

            def run(driver: ComputeDriver) -> list[Node]:
                extra: dict[str, Any] = {"ex_clienttoken": token} if token else {}
                # MinCount 1 .. MaxCount n: EC2 starts what the account has room for and
                # says how many; the closed loop learns the headroom from it (capacity.py).
                nodes = ec2_driver(driver).create_node(
                    name=request.name, ex_mincount=1, ex_maxcount=size, **kwargs, **extra
                )
                return nodes if isinstance(nodes, list) else [nodes]

            try:
                nodes = await self._call(
                    "create", run, cancelled=lambda: not batching.send_next_batch(failures)
                )
            except _NotSent:
                return []
            except leader.NotLeading:
                fenced.append(batch_no)
                return []
            except Exception as exc:
                failures.append(errors.classify(exc, "create"))
                return []
            return [_as_listed(n) for n in nodes]

        results = await asyncio.gather(*(batch(i, size) for i, size in enumerate(sizes)))
        created = tuple(node for nodes in results for node in nodes)
        error = _reported(failures)
        return CreateResult(request.queue.name, request.count, created, error, bool(fenced))

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
        fenced = any(isinstance(o, leader.NotLeading) for o in outcomes)
        failures = [
            o
            for o in outcomes
            if isinstance(o, BaseException) and not isinstance(o, leader.NotLeading)
        ]
        error = _reported([errors.classify(f, "create") for f in failures])
        return CreateResult(request.queue.name, request.count, created, error, fenced)

    async def destroy(self, nodes: Sequence[ListedNode]) -> dict[str, CloudError | None]:
        """Destroy VMs; one failure never stops the others. Returns id -> error or None;
        a VM whose destroy the leadership fence stopped is left out (it was not tried)."""
        if not nodes:
            return {}
        if is_ec2(self.probe()):
            return await self._destroy_ec2(nodes)

        async def one(listed: ListedNode) -> tuple[str, CloudError | None] | None:
            def run(driver: ComputeDriver) -> bool:
                node = Node(
                    id=listed.id,
                    name=listed.name,
                    state=NodeState.UNKNOWN,
                    public_ips=[],
                    private_ips=[],
                    driver=as_node_driver(driver),
                )
                return driver.destroy_node(node)

            try:
                await self._call("destroy", run)
            except leader.NotLeading:
                return None
            except Exception as exc:
                return listed.id, errors.classify(exc, "destroy")
            return listed.id, None

        results = await asyncio.gather(*(one(n) for n in nodes))
        return dict(r for r in results if r is not None)

    async def _destroy_ec2(self, nodes: Sequence[ListedNode]) -> dict[str, CloudError | None]:
        """One ``TerminateInstances`` per chunk of up to :data:`EC2_TERMINATE_CHUNK` VMs.

        A refused chunk is retried one call per VM where :func:`batching.retry_one_by_one`
        says one bad id can explain it; otherwise its error is reported for every VM of the
        chunk, which costs no further call.
        """
        outcome: dict[str, CloudError | None] = {}
        for chunk in batching.chunks(nodes, EC2_TERMINATE_CHUNK):

            def run(driver: ComputeDriver, chunk: Sequence[ListedNode] = chunk) -> Element:
                ec2 = ec2_driver(driver)
                params: dict[str, str] = {"Action": "TerminateInstances"}
                params.update({f"InstanceId.{i + 1}": n.id for i, n in enumerate(chunk)})
                return ec2.connection.request(ec2.path, params=params).object

            try:
                await self._call("destroy", run)
            except leader.NotLeading:
                break  # this chunk and the rest are not tried: another replica leads
            except Exception as exc:
                error = errors.classify(exc, "destroy")
                if batching.retry_one_by_one(error, len(chunk)):
                    for listed in chunk:
                        outcome.update(await self._destroy_ec2([listed]))
                else:
                    outcome.update(dict.fromkeys((n.id for n in chunk), error))
            else:
                outcome.update(dict.fromkeys(n.id for n in chunk))
        return outcome


def _held(left: float) -> CloudError:
    """A create refused before it was sent: an uncertain create under its queue prefix
    failed less than ``memory.UNCERTAIN_HOLD`` ago (maybe by a predecessor of the pool)."""
    return CloudError(
        kind=ErrorKind.TRANSIENT,
        message=(
            f"held {left:.0f} s more: a create in this queue had an unknown outcome "
            "(a timeout or a lost answer); listings must show what it started first"
        ),
        operation="create",
        uncertain=True,
    )


def _reported(failures: Sequence[CloudError]) -> CloudError | None:
    """The failure a create reports: an uncertain one first, so that the pool holds the
    queue (``memory.record_failure``) whenever any batch's outcome is unknown."""
    return next((f for f in failures if f.uncertain), failures[0] if failures else None)


def _whole(value: object) -> int:
    """A non-negative whole number from a driver's field, 0 where it is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
