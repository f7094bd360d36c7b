"""Operator-wide settings: one typed object, from the environment (Helm values) and the
command line.

Every ``CLOUDPILOT_*`` variable is read here and only here, and checked when the operator
starts: a bad value (``CLOUDPILOT_PARALLELISM=eight``) stops it with one
:class:`SettingsError` that names each bad variable, its value and what is expected, instead
of a traceback or a quietly used default. An unset or empty variable means the default.
"""

from __future__ import annotations

import keyword
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cloudpilot import constants

if TYPE_CHECKING:
    from cloudpilot.leader import LeaseConfig

T = TypeVar("T")

ALLOWED_DRIVER_CLASSES_VARIABLE = "CLOUDPILOT_ALLOWED_DRIVER_CLASSES"
ALLOWED_DRIVER_CLASSES_VALUE = "operator.allowedDriverClasses"
"""Where an administrator allows ``cloudType`` class paths (environment, chart value)."""

_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Problem:
    variable: str
    value: str
    expected: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 80 else self.value[:77] + "..."
        return f"{self.variable}={shown!r}: expected {self.expected}"


class SettingsError(ValueError):
    """Settings the operator cannot start with; the message lists every bad variable."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"invalid setting {self.problems[0]}"
        else:
            message = "invalid settings:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(message)


def is_class_path(text: str) -> bool:
    """``pkg.module.Class``: two or more dotted Python identifiers, no keyword, nothing else
    (no spaces, no ``..``, no ``module:attr``), so an allow-list entry can only ever name an
    attribute of an importable module."""
    parts = text.split(".")
    return len(parts) >= 2 and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def class_paths(names: Iterable[str]) -> frozenset[str]:
    """The allow-list as given in code (tests, the demo); raises ValueError on a bad entry."""
    allowed = frozenset(names)
    bad = sorted(n for n in allowed if not is_class_path(n))
    if bad:
        raise ValueError(f"not pkg.module.Class paths: {', '.join(map(repr, bad))}")
    return allowed


class EnvReader:
    """Typed reads of environment variables that collect problems instead of raising, so
    one start-up reports every bad variable at once (see :meth:`check`)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.problems: list[Problem] = []

    def raw(self, name: str) -> str | None:
        """The stripped value, or None if unset or empty (both mean the default)."""
        value = self.environ.get(name)
        if value is None:
            return None
        return value.strip() or None

    def _parse(self, name: str, default: T, expected: str, parse: Callable[[str], T]) -> T:
        text = self.raw(name)
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError:
            self.problems.append(Problem(name, self.environ[name], expected))
            return default

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        if maximum is None:
            expected = f"a whole number of at least {minimum}"
        else:
            expected = f"a whole number from {minimum} to {maximum}"

        def parse(text: str) -> int:
            value = int(text)
            if value < minimum or (maximum is not None and value > maximum):
                raise ValueError(text)
            return value

        return self._parse(name, default, expected, parse)

    def number(
        self, name: str, default: float, *, positive: bool = True, maximum: float | None = None
    ) -> float:
        """A finite number of seconds (or per second): > 0, or >= 0 if not ``positive``;
        at most ``maximum`` if given."""
        expected = "a number greater than 0" if positive else "a number of at least 0"
        if maximum is not None:
            expected += f" and at most {maximum:g}"

        def parse(text: str) -> float:
            value = float(text)
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(text)
            if maximum is not None and value > maximum:
                raise ValueError(text)
            return value

        return self._parse(name, default, expected, parse)

    def boolean(self, name: str, default: bool) -> bool:
        def parse(text: str) -> bool:
            word = text.lower()
            if word not in _TRUE | _FALSE:
                raise ValueError(text)
            return word in _TRUE

        return self._parse(name, default, "true or false (also 1/0, yes/no, on/off)", parse)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(text: str) -> str:
            if text not in choices:
                raise ValueError(text)
            return text

        return self._parse(name, default, " or ".join(choices), parse)

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def class_paths(self, name: str) -> frozenset[str]:
        """Comma-separated exact ``pkg.module.Class`` paths (spaces around commas ignored)."""
        text = self.raw(name)
        if text is None:
            return frozenset()
        entries = [e.strip() for e in text.split(",") if e.strip()]
        bad = [e for e in entries if not is_class_path(e)]
        if bad:
            self.problems.append(
                Problem(
                    name,
                    self.environ[name],
                    "comma-separated pkg.module.Class paths (dotted Python identifiers); "
                    f"not valid: {', '.join(bad)}",
                )
            )
            return frozenset()
        return frozenset(entries)

    def check(self) -> None:
        """Raise one :class:`SettingsError` for everything read so far, if anything was bad."""
        if self.problems:
            raise SettingsError(self.problems)


@dataclass(frozen=True)
class ElectionSettings:
    """Leader-election settings from the environment the Helm chart sets.

    ``CLOUDPILOT_LEADER_ELECTION`` (``true``/``false``, default false: a developer's
    ``cloudpilot operator`` needs no Lease), ``CLOUDPILOT_LEADER_ELECTION_NAMESPACE`` (else
    ``POD_NAMESPACE``, else the pod's service-account namespace, else ``default``),
    ``CLOUDPILOT_LEADER_ELECTION_NAME``, ``_LEASE_SECONDS``, ``_RENEW_DEADLINE``,
    ``_RETRY_PERIOD``. The identity is :func:`cloudpilot.leader.default_identity`
    (``POD_NAME`` based).
    """

    enabled: bool = False
    namespace: str = "default"
    name: str = "cloudpilot-operator"
    lease_seconds: int = 30
    renew_deadline: float = 20.0
    retry_period: float = 4.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ElectionSettings:
        """Raises :class:`SettingsError` for a bad variable."""
        reader = EnvReader(environ)
        settings = cls.read(reader)
        reader.check()
        return settings

    @classmethod
    def read(cls, env: EnvReader) -> ElectionSettings:
        prefix = "CLOUDPILOT_LEADER_ELECTION"
        namespace = env.raw(f"{prefix}_NAMESPACE") or env.raw("POD_NAMESPACE")
        if not namespace:
            try:
                namespace = Path(_SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
            except OSError:
                namespace = cls.namespace
        before = len(env.problems)
        settings = cls(
            enabled=env.boolean(prefix, cls.enabled),
            namespace=namespace or cls.namespace,
            name=env.text(f"{prefix}_NAME", cls.name),
            lease_seconds=env.integer(f"{prefix}_LEASE_SECONDS", cls.lease_seconds, minimum=1),
            renew_deadline=env.number(f"{prefix}_RENEW_DEADLINE", cls.renew_deadline),
            retry_period=env.number(f"{prefix}_RETRY_PERIOD", cls.retry_period),
        )
        if len(env.problems) == before:  # each value is fine: check them together
            try:
                settings.lease_config("check")  # fail at start-up, not at the first election
            except ValueError as exc:
                shown = (
                    f"{settings.lease_seconds}/{settings.renew_deadline:g}"
                    f"/{settings.retry_period:g}"
                )
                env.problems.append(
                    Problem(
                        f"{prefix}_LEASE_SECONDS/_RENEW_DEADLINE/_RETRY_PERIOD",
                        shown,
                        f"timings that fit together ({exc})",
                    )
                )
        return settings

    def lease_config(self, identity: str | None = None) -> LeaseConfig:
        from cloudpilot.leader import LeaseConfig, default_identity

        return LeaseConfig(
            namespace=self.namespace,
            name=self.name,
            identity=identity or default_identity(),
            lease_seconds=self.lease_seconds,
            renew_deadline=self.renew_deadline,
            retry_period=self.retry_period,
        )


LOG_FORMATS = ("plain", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator is configured with; :meth:`from_env` is how a pod gets it
    (the chart's values become ``CLOUDPILOT_*`` variables, docs/deployment.md)."""

    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = True
    reconcile_interval: float = constants.DEFAULT_RECONCILE_INTERVAL
    converging_interval: float = constants.DEFAULT_CONVERGING_INTERVAL
    parallelism: int = constants.DEFAULT_CREATE_PARALLELISM
    batch_size: int = constants.DEFAULT_BATCH_SIZE
    rate_limit: float = 20.0
    rate_burst: int = 40
    max_concurrent_reconciles: int = constants.MAX_CONCURRENT_RECONCILES
    max_creates_per_cycle: int = constants.DEFAULT_MAX_CREATES_PER_CYCLE
    health_port: int | None = None
    metrics_port: int | None = None
    log_format: str = "plain"
    log_level: str = "info"
    proxy_warn_margin: float = 6 * 3600.0
    unreachable_stall_after: float = constants.DEFAULT_UNREACHABLE_STALL_AFTER
    dirac_vanished_grace: float = constants.DEFAULT_DIRAC_VANISHED_GRACE
    """Age (seconds since DiracX registered it) before a pilot whose VM vanished while no
    operator watched is marked ``Deleted`` (:mod:`cloudpilot.dirac.vanished`)."""
    allowed_driver_classes: frozenset[str] = frozenset()
    """``cloudType`` class paths pools may name; none by default: libcloud's own Provider
    names only, so a pool cannot make the operator import a module of its choosing."""
    cluster_discovery: bool = True
    """kopf watches CRDs and namespaces (cluster-scoped reads a namespaced install may lack)."""
    election: ElectionSettings = field(default_factory=ElectionSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_driver_classes", class_paths(self.allowed_driver_classes))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Raises :class:`SettingsError` naming every bad variable."""
        env = EnvReader(environ)
        settings = cls(
            reconcile_interval=env.number(
                "CLOUDPILOT_RECONCILE_INTERVAL",
                constants.DEFAULT_RECONCILE_INTERVAL,
                maximum=constants.MAX_RECONCILE_INTERVAL,
            ),
            converging_interval=env.number(
                "CLOUDPILOT_CONVERGING_INTERVAL", constants.DEFAULT_CONVERGING_INTERVAL
            ),
            parallelism=env.integer(
                "CLOUDPILOT_PARALLELISM", constants.DEFAULT_CREATE_PARALLELISM, minimum=1
            ),
            max_creates_per_cycle=env.integer(
                "CLOUDPILOT_MAX_CREATES_PER_CYCLE",
                constants.DEFAULT_MAX_CREATES_PER_CYCLE,
                minimum=1,
            ),
            batch_size=env.integer(
                "CLOUDPILOT_BATCH_SIZE", constants.DEFAULT_BATCH_SIZE, minimum=1
            ),
            rate_limit=env.number("CLOUDPILOT_RATE_LIMIT", 20.0),
            rate_burst=env.integer("CLOUDPILOT_RATE_BURST", 40, minimum=1),
            max_concurrent_reconciles=env.integer(
                "CLOUDPILOT_MAX_CONCURRENT_RECONCILES",
                constants.MAX_CONCURRENT_RECONCILES,
                minimum=1,
            ),
            log_format=env.choice("CLOUDPILOT_LOG_FORMAT", "plain", LOG_FORMATS),
            log_level=env.choice("CLOUDPILOT_LOG_LEVEL", "info", LOG_LEVELS),
            # 0 (as unset) means no metrics endpoint.
            metrics_port=env.integer("CLOUDPILOT_METRICS_PORT", 0, minimum=0, maximum=65535)
            or None,
            proxy_warn_margin=env.number(
                "CLOUDPILOT_PROXY_WARN_MARGIN", 6 * 3600.0, positive=False
            ),
            allowed_driver_classes=env.class_paths(ALLOWED_DRIVER_CLASSES_VARIABLE),
            cluster_discovery=env.boolean("CLOUDPILOT_CLUSTER_DISCOVERY", True),
            election=ElectionSettings.read(env),
            unreachable_stall_after=env.number(
                "CLOUDPILOT_UNREACHABLE_STALL_AFTER", constants.DEFAULT_UNREACHABLE_STALL_AFTER
            ),
            dirac_vanished_grace=env.number(
                "CLOUDPILOT_DIRAC_VANISHED_GRACE",
                constants.DEFAULT_DIRAC_VANISHED_GRACE,
                positive=False,
            ),
        )
        env.check()
        return settings
