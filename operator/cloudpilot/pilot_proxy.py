"""The pilot proxy of each queue, for one reconcile: where it is, what it says.

A queue's pilot proxy lives in ``spec.pilot.proxySecret`` or is bundled inside the pilot
wrapper (``spec.pilot.executableSecret``), as DIRAC's SiteDirector bundles it. It serves
twice: as the cloud secret where ``cloud.auth`` says ``PROXY`` (FedCloud's VOMS
authentication), and as the pilot's own credential, whose expiry decides whether new pilots
can do any work. The decisions themselves are pure (``credentials.proxy``); this module
only gathers the inputs per cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloudpilot import redaction
from cloudpilot.credentials.bundled import ProxyLocation, find_proxy_pem, locate_pilot_proxy
from cloudpilot.credentials.proxy import (
    ProxyReason,
    ProxyReport,
    parse_proxy,
    proxy_condition,
    proxy_event,
    proxy_status,
)
from cloudpilot.kube import secrets as kube_secrets
from cloudpilot.models.queues import QueueConfig

SecretGetter = Callable[[str], Awaitable[dict[str, bytes]]]


@dataclass(frozen=True)
class QueueProxy:
    location: ProxyLocation
    pem: bytes
    source: str
    """``namespace/secret:key``: names the proxy file, shared by every pool using it."""


async def load_queue_proxies(
    queues: Sequence[QueueConfig], *, namespace: str, owner: str, secret: SecretGetter
) -> dict[str, QueueProxy]:
    """Queue name -> its proxy, for the queues that have one (a token pilot has none)."""
    found: dict[str, QueueProxy] = {}
    for queue in queues:
        location = locate_pilot_proxy(queue)
        if location is None:
            continue
        data = await secret(location.secret)
        raw = kube_secrets.require_key("Secret", namespace, location.secret, data, location.key)
        pem = find_proxy_pem(raw) if location.bundled else raw
        if not pem:
            continue
        redaction.register(redaction.pool_owner(owner, f"proxy:{location.source}"), [pem])
        found[queue.name] = QueueProxy(location, pem, f"{namespace}/{location.source}")
    return found


def assess(
    proxies: Mapping[str, QueueProxy],
    *,
    now: datetime,
    warn_margin: timedelta,
    previous_status: Mapping[str, Any] | None,
) -> ProxyReport:
    """The proxy that expires first speaks for the pool in status; every expired one stops
    its own queues."""
    if not proxies:
        return ProxyReport(frozenset(), None, None, None)
    parsed = {name: parse_proxy(p.pem) for name, p in proxies.items()}
    verdicts = {name: proxy_condition(info, now, warn_margin) for name, info in parsed.items()}
    stopped = frozenset(name for name, v in verdicts.items() if v.stop)
    first = min(
        parsed,
        key=lambda name: (parsed[name].not_after is None, parsed[name].not_after or now),
    )
    verdict = verdicts[first]
    status = proxy_status(parsed[first], now, warn_margin)
    event = proxy_event((previous_status or {}).get("proxy"), verdict)
    stops = sorted(
        (v.reason is not ProxyReason.INVALID, name) for name, v in verdicts.items() if v.stop
    )
    stop = verdicts[stops[0][1]] if stops else None
    return ProxyReport(stopped, verdict, status, event, stop)


@functools.lru_cache(maxsize=64)
def unusable_proxy(pem: bytes) -> str | None:
    """Why ``pem`` cannot serve as a proxy file at all (``secret = PROXY``), or None.

    Cached by content: the same proxy is looked at on every reconcile."""
    info = parse_proxy(pem)
    if info.usable:
        return None
    problems = "; ".join(info.problems[:5])
    return f"not a PEM certificate chain with its private key ({problems})"
