"""The audit trail: one log line per cloud action and per decision that changes a pool.

An Event is gone from the API server after an hour and a counter says nothing about which
VM; these lines are what a site keeps (``--log-format json`` makes each one a JSON object
whose ``namespace``, ``pool``, ``queue``, ``vm_ids`` and ``reason`` keys a log store can
index). Every Event the reconciler posts goes through :func:`record` too, so the two
vocabularies of reasons cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cloudpilot.redaction import redact

logger = logging.getLogger("cloudpilot.audit")

#: The ``extra=`` keys of an audit record (the JSON formatter emits them as keys).
FIELDS = ("namespace", "pool", "queue", "vm_ids", "reason", "event_type")


def record(
    namespace: str,
    pool: str,
    reason: str,
    message: str,
    *,
    type_: str = "Normal",
    queue: str = "",
    vm_ids: Iterable[str] = (),
) -> None:
    """Log one audit line: INFO for a ``Normal`` event or a decision, WARNING for a
    ``Warning`` (a failed action), with the structured fields in ``extra``."""
    level = logging.WARNING if type_ == "Warning" else logging.INFO
    logger.log(
        level,
        "%s/%s %s: %s",
        namespace,
        pool,
        reason,
        redact(message),
        extra={
            "namespace": namespace,
            "pool": pool,
            "queue": queue,
            "vm_ids": list(vm_ids),
            "reason": reason,
            "event_type": type_,
        },
    )
