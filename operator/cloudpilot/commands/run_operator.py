"""``cloudpilot operator``: run the operator with kopf against the current cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace

from cloudpilot.settings import OperatorSettings


def add_parser(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    parser.add_argument("--reconcile-interval", type=float, help="seconds between quiet cycles")
    parser.add_argument("--parallelism", type=int, help="concurrent cloud calls per account")
    parser.add_argument("--health-port", type=int, help="serve /healthz on this port")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    settings = OperatorSettings.from_env()
    changes: dict[str, object] = {}
    if args.namespace:
        changes.update(namespaces=tuple(args.namespace), all_namespaces=False)
    if args.reconcile_interval:
        changes["reconcile_interval"] = args.reconcile_interval
    if args.parallelism:
        changes["parallelism"] = args.parallelism
    if args.health_port:
        changes["health_port"] = args.health_port
    if args.metrics_port:
        changes["metrics_port"] = args.metrics_port
    return replace(settings, **changes)


def run(args: argparse.Namespace) -> int:
    from cloudpilot.runtime import configure_logging, run_operator_with_election

    settings = settings_from_args(args)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, settings.log_format)
    asyncio.run(run_operator_with_election(settings))
    return 0
