"""The ``cloudpilot`` sub-commands, and the one convention they share.

Exit status: :data:`EXIT_OK` (0) done; :data:`EXIT_FAILURE` (1) the command ran but what it
was asked to do failed (a queue's user data does not fit, a converted pool fails the
operator's checks, a demo step timed out); :data:`EXIT_USAGE` (2) it could not run as asked:
an unknown flag or bad value, a missing, unreadable or malformed input file, an unwritable
output, an invalid setting, a missing extra. Messages go to stderr as
``cloudpilot <command>: error: <message>`` (argparse's own style) and never end in a
traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """Stops a command with its message and exit status (``cloudpilot.cli.main`` prints
    it), from however deep it is raised."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def error(command: str, message: str) -> None:
    """One error line on stderr, in the convention's style."""
    print(f"cloudpilot {command}: error: {message}", file=sys.stderr)


def warning(command: str, message: str) -> None:
    print(f"cloudpilot {command}: warning: {message}", file=sys.stderr)


def reports(command: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[..., int]]:
    """Decorates a command's ``run``: a :class:`CommandError` becomes its error line and
    exit status, so ``run`` called directly (as the tests do) behaves as the command does."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
        @functools.wraps(run)
        def wrapper(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except CommandError as exc:
                error(command, str(exc))
                return exc.status

        return wrapper

    return decorate
