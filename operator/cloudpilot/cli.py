"""``cloudpilot`` command line: one sub-command per module in ``cloudpilot.commands``.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``; modules are
imported only when their command runs, so ``cloudpilot render`` does not load kopf.
"""

from __future__ import annotations

import argparse
import importlib

COMMANDS = {
    "operator": ("cloudpilot.commands.run_operator", "run the operator against a cluster"),
    "demo": ("cloudpilot.commands.demo", "run the operator on local emulators, end to end"),
    "render": ("cloudpilot.commands.render", "print the user data a pool would send"),
    "import-dirac-cfg": ("cloudpilot.commands.import_dirac_cfg", "CS cloud CEs to manifests"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudpilot",
        description="Kubernetes operator that runs grid pilot jobs as cloud VMs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_parser(sub.add_parser(name, help=summary, description=summary))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)
