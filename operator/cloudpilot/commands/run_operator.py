"""``cloudpilot operator``: run the operator with kopf against the current cluster."""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cloudpilot import constants
from cloudpilot.commands import EXIT_USAGE, CommandError, reports
from cloudpilot.settings import LOG_FORMATS, LOG_LEVELS, OperatorSettings, SettingsError

EXIT_BAD_SETTINGS = EXIT_USAGE
"""As for a bad command-line flag (argparse): the operator was told something it cannot use."""


def _checked(parse: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Any:
    """An argparse ``type``: a bad flag value stops with usage and exit status 2."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


_positive_int = _checked(int, lambda v: v >= 1, "a whole number of at least 1")
_positive_float = _checked(float, lambda v: 0 < v < math.inf, "a number greater than 0")
_port = _checked(int, lambda v: 0 < v <= 65535, "a port from 1 to 65535")
_interval = _checked(
    float,
    lambda v: 0 < v <= constants.MAX_RECONCILE_INTERVAL,
    f"a number greater than 0 and at most {constants.MAX_RECONCILE_INTERVAL:g}",
)


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
    parser.add_argument(
        "--reconcile-interval", type=_interval, help="seconds between quiet cycles (at most 300)"
    )
    parser.add_argument(
        "--parallelism", type=_positive_int, help="concurrent cloud calls per account"
    )
    parser.add_argument("--health-port", type=_port, help="serve /healthz on this port")
    parser.add_argument("--metrics-port", type=_port, help="serve Prometheus /metrics on this port")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="plain text or one JSON object per line (default: $CLOUDPILOT_LOG_FORMAT or plain)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="least severe level logged (default: $CLOUDPILOT_LOG_LEVEL or info)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="as --log-level debug")


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    settings = OperatorSettings.from_env()
    changes: dict[str, Any] = {}  # argparse's values: checked by OperatorSettings itself
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
    # Flags override the environment.
    if args.log_format:
        changes["log_format"] = args.log_format
    if args.verbose:
        changes["log_level"] = "debug"
    if args.log_level:
        changes["log_level"] = args.log_level
    return replace(settings, **changes)


@reports("operator")
def run(args: argparse.Namespace) -> int:
    from cloudpilot.runtime import LOG_LEVELS as LOG_LEVEL_NUMBERS
    from cloudpilot.runtime import configure_logging, run_operator_with_election

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        # A configuration mistake, not a bug: say which variable and stop, no traceback.
        raise CommandError(str(exc), EXIT_BAD_SETTINGS) from None
    configure_logging(LOG_LEVEL_NUMBERS[settings.log_level], settings.log_format)
    asyncio.run(run_operator_with_election(settings))
    return 0
