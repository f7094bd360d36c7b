"""Effective per-queue configuration: CE-level options with each queue's overrides applied.

DIRAC reads every option at the CE level and lets a queue override it; here the merge is
done once, in one place, and everything downstream (planner, cloud adapter, templates) sees
only the flat, frozen result. ``Driver_*`` options and ``createOptions`` merge key by key
(a queue that sets one driver option keeps the others); every other option is replaced
whole, lists included (a queue's ``networks`` replace the CE's, they do not add to them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudpilot import constants
from cloudpilot.models.rules import NAME_NEEDS_A_NAME, REQUIRED_ON_POOL_OR_EVERY_QUEUE
from cloudpilot.models.spec import (
    ConfigMapKeyRef,
    PoolSpec,
    QueueSpec,
    ScaleDownPolicy,
    SecretKeyRef,
    TemplateFamily,
)

DEFAULT_QUEUE = "default"

RESERVED_CREATE_OPTIONS = frozenset(
    {
        "name",
        "image",
        "size",
        "location",
        "networks",
        "ex_userdata",
        "ex_metadata",
        "ex_keyname",
        "ex_mincount",
        "ex_maxcount",
        "ex_clienttoken",
        "ex_subnet",
    }
)
"""``create_node`` arguments the operator sets itself: letting ``createOptions`` replace
them would break ownership (names, tags) or contextualisation (user data)."""


@dataclass(frozen=True)
class ClosedLoopConfig:
    """A queue's effective ``closedLoop`` settings (see :mod:`cloudpilot.outcomes`)."""

    enabled: bool = True
    fizzle_seconds: int = constants.DEFAULT_FIZZLE_SECONDS
    backoff_seconds: int = constants.DEFAULT_FIZZLE_BACKOFF_SECONDS
    max_backoff_seconds: int = constants.DEFAULT_FIZZLE_MAX_BACKOFF_SECONDS
    window_seconds: int = constants.DEFAULT_OUTCOME_WINDOW_SECONDS


class ConfigError(ValueError):
    """A pool whose options are valid one by one but do not add up (e.g. no image)."""


@dataclass(frozen=True)
class Lookup:
    """An image, flavor or network reference: a raw id, or a name to resolve to an id."""

    by_name: bool
    value: str

    @classmethod
    def parse(cls, text: str) -> Lookup:
        # The seed does not strip entries of its comma list; a stray space in a name can
        # never have been meant, so it is stripped here.
        text = text.strip()
        if text.startswith("name:"):
            name = text[len("name:") :].strip()
            if not name:
                raise ConfigError(f"{text!r}: {NAME_NEEDS_A_NAME.message}")
            return cls(by_name=True, value=name)
        return cls(by_name=False, value=text)

    def __str__(self) -> str:
        return f"name:{self.value}" if self.by_name else self.value


@dataclass(frozen=True)
class CloudAccount:
    """What identifies one cloud account: pools and queues that share it share one driver,
    one listing per cycle and one rate limit."""

    cloud_type: str
    driver_options: tuple[tuple[str, str], ...]
    """Driver options as sorted (key, JSON) pairs: hashable, and typed values preserved."""
    credentials_secret: str
    namespace: str

    @property
    def options(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.driver_options}

    @property
    def endpoint(self) -> str:
        """The cloud endpoint, whatever the credentials: one rate limit per endpoint, and
        (with the credentials' fingerprint) one shared listing."""
        return f"{self.cloud_type}|{self.driver_options}"


@dataclass(frozen=True)
class QueueConfig:
    """Everything one queue needs, flattened. Plain data: the planner's input."""

    pool_namespace: str
    pool_name: str
    name: str
    replicas: int
    ce: str
    account: CloudAccount
    image: Lookup
    flavor: Lookup
    networks: tuple[Lookup, ...] = ()
    ssh_key: str | None = None
    create_options: Mapping[str, Any] = field(default_factory=dict)
    template: ConfigMapKeyRef | None = None
    template_family: TemplateFamily = TemplateFamily.EL9
    ext_packages: tuple[str, ...] = ()
    max_lifetime: int = constants.DEFAULT_MAX_LIFETIME
    halt_grace_period: int = constants.DEFAULT_HALT_GRACE_PERIOD
    user_data_limit: int | None = None
    executable_secret: SecretKeyRef | None = None
    proxy_secret: SecretKeyRef | None = None
    boot_timeout: int = constants.DEFAULT_BOOT_TIMEOUT
    scale_down_policy: ScaleDownPolicy = ScaleDownPolicy.DRAIN
    max_instances: int | None = None
    max_starting: int | None = None
    closed_loop: ClosedLoopConfig = field(default_factory=ClosedLoopConfig)
    spot: bool = False
    spot_max_price: str | None = None


def _closed_loop(queue: QueueSpec | None, pool: PoolSpec) -> ClosedLoopConfig:
    """Field by field: the queue's value, else the pool's, else the default."""
    defaults = ClosedLoopConfig()
    values = {
        name: _or_default(_pick(queue, pool, "closed_loop", name), getattr(defaults, name))
        for name in (
            "enabled",
            "fizzle_seconds",
            "backoff_seconds",
            "max_backoff_seconds",
            "window_seconds",
        )
    }
    return ClosedLoopConfig(**values)


def _pick(queue: QueueSpec | None, pool: PoolSpec, section: str, name: str) -> Any:
    """A nested option (``instance.image``): the queue's if it sets it, else the pool's."""
    for source in (queue, pool):
        if source is None:
            continue
        block = getattr(source, section)
        if block is not None and getattr(block, name) is not None:
            return getattr(block, name)
    return None


def _pick_top(queue: QueueSpec | None, pool: PoolSpec, name: str) -> Any:
    for source in (queue, pool):
        if source is not None and getattr(source, name) is not None:
            return getattr(source, name)
    return None


def _merged_map(queue: QueueSpec | None, pool: PoolSpec, getter: Any) -> dict[str, Any]:
    merged: dict[str, Any] = dict(getter(pool) or {})
    if queue is not None:
        merged.update(getter(queue) or {})
    return merged


def effective_queue(
    pool: PoolSpec, queue: QueueSpec | None, *, namespace: str, pool_name: str
) -> QueueConfig:
    """Merge one queue's overrides onto the CE-level options; raises ConfigError."""
    queue_name = queue.name if queue is not None else DEFAULT_QUEUE
    where = f"queue {queue_name!r}"
    # The CRD's CEL rules "on the pool or on every queue", from the same definitions.
    missing = [
        rule.field
        for rule in REQUIRED_ON_POOL_OR_EVERY_QUEUE
        if rule.value(queue) is None and rule.value(pool) is None
    ]
    if missing:
        raise ConfigError(f"{where}: {', '.join(missing)} must be set on the pool or the queue")
    cloud_type = _pick_top(queue, pool, "cloud_type")
    credentials = _pick_top(queue, pool, "credentials_secret")
    image = _pick(queue, pool, "instance", "image")
    flavor = _pick(queue, pool, "instance", "flavor")

    driver = _merged_map(queue, pool, lambda s: s.driver)
    create_options = _merged_map(
        queue, pool, lambda s: s.instance.create_options if s.instance else None
    )
    reserved = sorted(RESERVED_CREATE_OPTIONS & set(create_options))
    if reserved:
        raise ConfigError(
            f"{where}: instance.createOptions cannot set {', '.join(reserved)}: the operator "
            "sets it (use instance.image/flavor/networks/sshKey)"
        )
    account = CloudAccount(
        cloud_type=cloud_type,
        driver_options=tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in driver.items())),
        credentials_secret=credentials.name,
        namespace=namespace,
    )
    limits = queue.limits if queue is not None else None
    networks = _pick(queue, pool, "instance", "networks") or []
    return QueueConfig(
        pool_namespace=namespace,
        pool_name=pool_name,
        name=queue_name,
        replicas=queue.replicas if queue is not None else (pool.replicas or 0),
        ce=pool.ce,
        account=account,
        image=_lookup(image, where, "instance.image"),
        flavor=_lookup(flavor, where, "instance.flavor"),
        networks=tuple(_lookup(n, where, "instance.networks") for n in networks),
        ssh_key=_pick(queue, pool, "instance", "ssh_key"),
        create_options=create_options,
        template=_pick(queue, pool, "context", "template"),
        template_family=_pick(queue, pool, "context", "template_family") or TemplateFamily.EL9,
        ext_packages=tuple(_pick(queue, pool, "context", "ext_packages") or ()),
        max_lifetime=_pick(queue, pool, "context", "max_lifetime")
        or constants.DEFAULT_MAX_LIFETIME,
        halt_grace_period=_or_default(
            _pick(queue, pool, "context", "halt_grace_period"), constants.DEFAULT_HALT_GRACE_PERIOD
        ),
        user_data_limit=_pick(queue, pool, "context", "user_data_limit"),
        executable_secret=_pick(queue, pool, "pilot", "executable_secret"),
        proxy_secret=_pick(queue, pool, "pilot", "proxy_secret"),
        boot_timeout=_pick_top(queue, pool, "boot_timeout") or constants.DEFAULT_BOOT_TIMEOUT,
        scale_down_policy=_pick_top(queue, pool, "scale_down_policy") or ScaleDownPolicy.DRAIN,
        max_instances=limits.max_instances if limits else None,
        max_starting=limits.max_starting if limits else None,
        closed_loop=_closed_loop(queue, pool),
        spot=bool(_pick(queue, pool, "instance", "spot")),
        spot_max_price=_pick(queue, pool, "instance", "spot_max_price"),
    )


def _lookup(text: str, where: str, label: str) -> Lookup:
    """Parse one lookup; an error names the queue and field, as a pool has many of both."""
    try:
        return Lookup.parse(text)
    except ConfigError as error:
        raise ConfigError(f"{where}: {label}: {error}") from None


def _or_default(value: Any, default: Any) -> Any:
    """For options where 0 is meaningful (a grace period of 0 s), unlike ``value or x``."""
    return default if value is None else value


def effective_queues(pool: PoolSpec, *, namespace: str, pool_name: str) -> list[QueueConfig]:
    """All queues of a pool; a pool without ``queues`` is one queue named ``default``."""
    if not pool.queues:
        return [effective_queue(pool, None, namespace=namespace, pool_name=pool_name)]
    return [effective_queue(pool, q, namespace=namespace, pool_name=pool_name) for q in pool.queues]
