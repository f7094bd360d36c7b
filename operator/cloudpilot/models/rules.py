"""The rules that span fields of a pool, each defined once for the CRD and the operator.

The API server checks them as CEL (``x-kubernetes-validations`` on ``spec``, written by the
CRD generator from :data:`POOL_RULES`), the operator in Python (``PoolSpec`` and
``effective_queue``) for pools that reached the cluster without that check (stored before a
CRD upgrade, validation off). Both the CEL text and the Python test come from the same
object here, so a new "on the pool or on every queue" field is one line in
:data:`REQUIRED_ON_POOL_OR_EVERY_QUEUE`. tests/unit/test_schema_rules.py evaluates the CEL
(cel-python) and the Python side on the same pools and requires the same verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class RequiredOnPoolOrEveryQueue:
    """A CE-level option that must be set on the pool, or else on every queue."""

    field: str
    """camelCase path below ``spec`` (``instance.image``)."""

    @property
    def message(self) -> str:
        return f"{self.field} must be set on the pool or on every queue"

    def _has(self, var: str) -> str:
        parts = self.field.split(".")
        checks = [f"has({var}.{'.'.join(parts[: i + 1])})" for i in range(len(parts))]
        return checks[0] if len(checks) == 1 else f"({' && '.join(checks)})"

    def crd(self) -> dict[str, str]:
        every_queue = f"self.queues.all(q, {self._has('q')})"
        return {
            "rule": f"{self._has('self')} || (has(self.queues) && size(self.queues) > 0"
            f" && {every_queue})",
            "message": self.message,
            "fieldPath": f".{self.field}",
            "reason": "FieldValueRequired",
        }

    def value(self, source: object | None) -> Any:
        """The option on a pool or queue model, ``None`` where unset (or no source)."""
        value: Any = source
        for part in self.field.split("."):
            if value is None:
                return None
            value = getattr(value, _snake(part))
        return value


@dataclass(frozen=True)
class OnlyWithoutQueues:
    """A pool-level field that makes no sense next to ``spec.queues`` (``replicas``)."""

    field: str
    message: str

    def crd(self) -> dict[str, str]:
        parts = self.field.split(".")
        has = " && ".join(f"has(self.{'.'.join(parts[: i + 1])})" for i in range(len(parts)))
        unset = f"!{has}" if len(parts) == 1 else f"!({has})"
        return {
            "rule": f"{unset} || !has(self.queues) || size(self.queues) == 0",
            "message": self.message,
            "fieldPath": f".{self.field}",
            "reason": "FieldValueForbidden",
        }

    def violated(self, pool: Any) -> bool:
        value: Any = pool
        for part in self.field.split("."):
            value = getattr(value, _snake(part)) if value is not None else None
        return value is not None and bool(pool.queues)


@dataclass(frozen=True)
class ValueRule:
    """A CEL rule on one value; the operator's check is in the parser of that value."""

    rule: str
    message: str

    def crd(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


REPLICAS_WITHOUT_QUEUES = OnlyWithoutQueues(
    "replicas",
    "spec.replicas is for a pool without queues; with spec.queues set, each queue has its "
    "own replicas",
)
DEMAND_WITHOUT_QUEUES = OnlyWithoutQueues(
    "dirac.demand",
    "spec.dirac.demand scales spec.replicas, which only a pool without queues has; use one "
    "pool per queue to scale queues on demand",
)
REQUIRED_ON_POOL_OR_EVERY_QUEUE = (
    RequiredOnPoolOrEveryQueue("cloudType"),
    RequiredOnPoolOrEveryQueue("credentialsSecret"),
    RequiredOnPoolOrEveryQueue("instance.image"),
    RequiredOnPoolOrEveryQueue("instance.flavor"),
)
POOL_RULES = (REPLICAS_WITHOUT_QUEUES, DEMAND_WITHOUT_QUEUES, *REQUIRED_ON_POOL_OR_EVERY_QUEUE)
"""The rules on ``spec``, in the order the CRD lists them."""

NAME_NEEDS_A_NAME = ValueRule("self != 'name:'", "'name:' needs a name after it")
"""On image, flavor and network entries; the operator's side is ``Lookup.parse``."""
