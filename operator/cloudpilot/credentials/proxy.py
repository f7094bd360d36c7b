"""The pilot proxy as status sees it, and whether the pool may start pilots.

Parsing lives in :mod:`.chain` (re-exported here: ``parse_proxy``, ``ProxyInfo``); this
module holds pure functions of (proxy info, clock, margin), giving plain data for the
reconciler to put in ``status.proxy``, in ``status.conditions`` and in events:

* ``ProxyExpiring`` condition: ``True`` while the proxy expires within the warning margin
  (and once it has expired), ``False`` otherwise. A warning, not a stop: the pool goes on.
* stop rule: an expired proxy stops new pilots (reason ``ProxyExpired``). A pilot VM cannot
  renew its proxy, so one started now would boot, fail to reach DIRAC and halt, at the
  cloud's price. Running pilots are left alone: they were started with a proxy that
  worked. So does content that is not a PEM certificate chain with its key (``usable``):
  nothing could use it. A usable chain that is not a valid proxy stops new pilots only if
  the caller asks (``stop_on_invalid``): the check has no trust store and must not be the
  thing that takes a working site down.

``secondsLeft`` is rounded down (to the hour when far from expiry, to the minute within the
margin) so that a quiet pool's status does not change on every cycle, which would make the
operator write status every minute for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cloudpilot.credentials.chain import ProxyInfo, ProxyKind, dirac_dn, parse_proxy
from cloudpilot.reasons import Reason
from cloudpilot.status import Condition, timestamp

__all__ = [
    "CONDITION_TYPE",
    "DEFAULT_WARN_MARGIN",
    "ProxyInfo",
    "ProxyKind",
    "ProxyReason",
    "ProxyReport",
    "ProxyVerdict",
    "dirac_dn",
    "parse_proxy",
    "proxy_condition",
    "proxy_event",
    "proxy_reason",
    "proxy_status",
]

CONDITION_TYPE = "ProxyExpiring"
DEFAULT_WARN_MARGIN = timedelta(hours=6)
"""Long enough for a human to renew the proxy during a working day after the warning,
before the hard stop; short enough not to warn about every proxy of normal lifetime."""
MAX_PROBLEMS_SHOWN = 5


class ProxyReason(StrEnum):
    """The proxy's state, named from the one vocabulary (:mod:`cloudpilot.reasons`)."""

    VALID = Reason.PROXY_VALID.value
    EXPIRING = Reason.PROXY_EXPIRING.value
    EXPIRED = Reason.PROXY_EXPIRED.value
    NOT_YET_VALID = Reason.PROXY_NOT_YET_VALID.value
    INVALID = Reason.INVALID_PROXY.value


def _margin(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def proxy_reason(
    info: ProxyInfo, now: datetime, warn_margin: timedelta | float = DEFAULT_WARN_MARGIN
) -> ProxyReason:
    """One word for the proxy's state; time problems first (they decide the stop rule)."""
    if info.not_after is not None and now >= info.not_after:
        return ProxyReason.EXPIRED
    if info.not_before is not None and now < info.not_before:
        return ProxyReason.NOT_YET_VALID
    if not info.valid:
        return ProxyReason.INVALID
    if info.not_after is not None and info.not_after - now <= _margin(warn_margin):
        return ProxyReason.EXPIRING
    return ProxyReason.VALID


def _seconds_left(info: ProxyInfo, now: datetime, margin: timedelta) -> int | None:
    if info.not_after is None:
        return None
    left = max(int((info.not_after - now).total_seconds()), 0)
    step = 60 if left <= margin.total_seconds() else 3600
    return left - left % step


def proxy_status(
    info: ProxyInfo, now: datetime, warn_margin: timedelta | float = DEFAULT_WARN_MARGIN
) -> dict[str, Any]:
    """The ``status.proxy`` section: {notAfter, secondsLeft, valid, identity, reason, ...}.

    ``valid`` is the chain's well-formedness; whether it is in date is ``reason``.
    """
    margin = _margin(warn_margin)
    status: dict[str, Any] = {
        "valid": info.valid,
        "reason": proxy_reason(info, now, margin).value,
    }
    if info.not_after is not None:
        status["notAfter"] = timestamp(info.not_after)
        status["secondsLeft"] = _seconds_left(info, now, margin)
    if info.identity:
        status["identity"] = info.identity
    if info.kind is not None:
        status["type"] = info.kind.value
    if info.voms:
        status["voms"] = True
    if info.problems:
        status["problems"] = list(info.problems[:MAX_PROBLEMS_SHOWN])
    return status


@dataclass(frozen=True)
class ProxyVerdict:
    """The condition to show, and whether new pilots must wait."""

    condition: Condition
    reason: ProxyReason
    stop: bool
    """True: create no VM this cycle (deletions and status go on)."""
    message: str


@dataclass(frozen=True)
class ProxyReport:
    """What a pool's proxies mean for one cycle's status and actions (made by
    :func:`cloudpilot.pilot_proxy.assess`, read by :mod:`cloudpilot.decision`)."""

    stopped_queues: frozenset[str]
    """Queues whose proxy expired: they get no new VM until it is renewed."""
    verdict: ProxyVerdict | None
    status: Mapping[str, Any] | None
    event: tuple[str, str, str] | None
    stop: ProxyVerdict | None = None
    """Why queues are stopped (an unusable proxy before an expired one), if any are."""


def _describe(info: ProxyInfo) -> str:
    return f"the pilot proxy of {info.identity}" if info.identity else "the pilot proxy"


def proxy_condition(
    info: ProxyInfo,
    now: datetime,
    warn_margin: timedelta | float = DEFAULT_WARN_MARGIN,
    *,
    stop_on_invalid: bool = False,
) -> ProxyVerdict:
    """The ``ProxyExpiring`` condition and the stop decision. Messages hold no time left
    (it changes every cycle), only the expiry instant and the margin."""
    margin = _margin(warn_margin)
    reason = proxy_reason(info, now, margin)
    who = _describe(info)
    until = timestamp(info.not_after) if info.not_after else "an unknown time"
    hours = f"{margin.total_seconds() / 3600:g}h"
    if reason is ProxyReason.EXPIRED:
        message = f"{who} expired at {until}: no new pilots start until it is renewed"
        status = "True"
    elif reason is ProxyReason.EXPIRING:
        message = f"{who} expires at {until}, within the {hours} warning margin: renew it"
        status = "True"
    elif reason is ProxyReason.NOT_YET_VALID:
        since = timestamp(info.not_before) if info.not_before else "?"
        message = f"{who} is not valid before {since} (clock skew?); it expires at {until}"
        status = "False"
    elif reason is ProxyReason.INVALID and not info.usable:
        problems = "; ".join(info.problems[:MAX_PROBLEMS_SHOWN])
        message = (
            f"{who} is unusable: not a PEM certificate chain with its private key "
            f"({problems}); no new pilots start until it is replaced"
        )
        status = "False"
    elif reason is ProxyReason.INVALID:
        problems = "; ".join(info.problems[:MAX_PROBLEMS_SHOWN])
        message = f"{who} is not a valid proxy chain: {problems}"
        status = "False"
    else:
        message = f"{who} expires at {until}"
        status = "False"
    stop = reason is ProxyReason.EXPIRED or (
        reason is ProxyReason.INVALID and (stop_on_invalid or not info.usable)
    )
    return ProxyVerdict(
        condition=Condition(CONDITION_TYPE, status, Reason(reason.value), message),
        reason=reason,
        stop=stop,
        message=message,
    )


def proxy_event(
    previous: Mapping[str, Any] | None, verdict: ProxyVerdict
) -> tuple[str, str, str] | None:
    """An event ``(type, reason, message)`` when the proxy's state changed since the last
    status (``previous`` is the old ``status.proxy``), so a long-expired proxy is one
    event, not one a minute. A return to valid is a ``ProxyRenewed`` Normal event."""
    before = (previous or {}).get("reason")
    if before == verdict.reason.value:
        return None
    if verdict.reason is ProxyReason.VALID:
        return ("Normal", Reason.PROXY_RENEWED, verdict.message) if before is not None else None
    return ("Warning", Reason(verdict.reason.value), verdict.message)
