"""Operator-wide settings, from the command line or the environment (Helm values)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cloudpilot import constants


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = True
    reconcile_interval: float = constants.DEFAULT_RECONCILE_INTERVAL
    converging_interval: float = constants.DEFAULT_CONVERGING_INTERVAL
    parallelism: int = constants.DEFAULT_CREATE_PARALLELISM
    batch_size: int = constants.DEFAULT_BATCH_SIZE
    rate_limit: float = 20.0
    rate_burst: int = 40
    max_concurrent_reconciles: int = constants.MAX_CONCURRENT_RECONCILES
    health_port: int | None = None
    metrics_port: int | None = None
    log_format: str = "plain"
    proxy_warn_margin: float = 6 * 3600.0
    unreachable_stall_after: float = constants.DEFAULT_UNREACHABLE_STALL_AFTER

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            reconcile_interval=_env_float(
                "CLOUDPILOT_RECONCILE_INTERVAL", constants.DEFAULT_RECONCILE_INTERVAL
            ),
            converging_interval=_env_float(
                "CLOUDPILOT_CONVERGING_INTERVAL", constants.DEFAULT_CONVERGING_INTERVAL
            ),
            parallelism=_env_int("CLOUDPILOT_PARALLELISM", constants.DEFAULT_CREATE_PARALLELISM),
            batch_size=_env_int("CLOUDPILOT_BATCH_SIZE", constants.DEFAULT_BATCH_SIZE),
            rate_limit=_env_float("CLOUDPILOT_RATE_LIMIT", 20.0),
            rate_burst=_env_int("CLOUDPILOT_RATE_BURST", 40),
            max_concurrent_reconciles=max(
                _env_int(
                    "CLOUDPILOT_MAX_CONCURRENT_RECONCILES", constants.MAX_CONCURRENT_RECONCILES
                ),
                1,
            ),
            log_format=os.environ.get("CLOUDPILOT_LOG_FORMAT", "plain"),
            metrics_port=_env_int("CLOUDPILOT_METRICS_PORT", 0) or None,
            proxy_warn_margin=_env_float("CLOUDPILOT_PROXY_WARN_MARGIN", 6 * 3600.0),
            unreachable_stall_after=_env_float(
                "CLOUDPILOT_UNREACHABLE_STALL_AFTER", constants.DEFAULT_UNREACHABLE_STALL_AFTER
            ),
        )
