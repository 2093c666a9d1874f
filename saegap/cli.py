"""The `saegap` console command.

Each subcommand lives in the package that owns its process and exposes
`configure(parser)` and `run(args) -> int`; this module only wires them, importing a
command's module when the parser is built. Command modules import torch lazily, so
`saegap sql` never loads a model.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> module holding configure()/run(); one line per command.
COMMANDS: dict[str, str] = {
    "evaluate": "worker.commands.evaluate",
    "submit": "worker.commands.submit",
    "status": "worker.commands.status",
    "jobs": "worker.commands.jobs",
    "cancel": "worker.commands.cancel",
    "worker": "worker.commands.worker",
    "report": "analysis.commands.report",
    "ui": "ui.commands.ui",
    "sql": "schema.commands.sql",
    "export": "schema.commands.export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saegap", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__)
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
