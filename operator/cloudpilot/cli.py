"""``cloudpilot`` command line: one sub-command per module in ``cloudpilot.commands``.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``; modules are
imported only when their command runs, so ``cloudpilot render`` does not load kopf. Exit
status and error style are the same for every command (:mod:`cloudpilot.commands`).
"""

from __future__ import annotations

import argparse
import importlib
from importlib import metadata

from cloudpilot.commands import CommandError, error

COMMANDS = {
    "operator": ("cloudpilot.commands.run_operator", "run the operator against a cluster"),
    "demo": ("cloudpilot.commands.demo", "run the operator on local emulators, end to end"),
    "render": ("cloudpilot.commands.render", "print the user data a pool would send"),
    "import-dirac-cfg": ("cloudpilot.commands.import_dirac_cfg", "CS cloud CEs to manifests"),
}

EPILOG = (
    "exit status: 0 done; 1 the command ran but failed (e.g. user data too big); "
    "2 bad usage or input (unknown flag, missing or malformed file, unwritable output, "
    "invalid setting). Errors go to stderr as 'cloudpilot COMMAND: error: ...'."
)


def version() -> str:
    """The installed distribution's version (what pip and the image were built from)."""
    try:
        return metadata.version("cloudpilot")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser, _ = _parsers()
    return parser


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="cloudpilot",
        description="Kubernetes operator that runs grid pilot jobs as cloud VMs.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"cloudpilot {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        commands[name] = sub.add_parser(name, help=summary, description=summary, epilog=EPILOG)
        module.add_parser(commands[name])
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parsers()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Named by the command's own parser ("cloudpilot render: error: ..."), status 2.
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except CommandError as exc:
        error(args.command, str(exc))
        return exc.status
