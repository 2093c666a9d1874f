"""The `saegap` console command.

Each subcommand lives in the package that owns its process and exposes
`configure(parser)` and `run(args) -> int`; this module only wires them, importing a
command's module when the parser is built. Command modules import torch lazily, so
`saegap sql` never loads a model.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# name -> module holding configure()/run(); one line per command.
COMMANDS: dict[str, str] = {
    "evaluate": "saegap.evaluate_command",  # spans worker (runs the job) and analysis (the answer)
    "submit": "worker.commands.submit",
    "status": "worker.commands.status",
    "jobs": "worker.commands.jobs",
    "cancel": "worker.commands.cancel",
    "resume": "worker.commands.resume",
    "worker": "worker.commands.worker",
    "report": "analysis.commands.report",
    "ui": "ui.commands.ui",
    "sql": "schema.commands.sql",
    "export": "saegap.export",  # schema.commands.export, plus --format saebench (analysis)
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saegap", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__)
        module.configure(sub)
        sub.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
        sub.set_defaults(_run=module.run)
    return parser


DATA_DIR_HELP = "local store directory (sets SAEGAP_DATA; default: SAEGAP_DATA, else ./saegap-data)"


@contextlib.contextmanager
def _data_dir_env(data_dir: Path | None) -> Iterator[None]:
    """--data-dir, on every command, is SAEGAP_DATA while the command runs (StoreConfig.from_env is the one
    place a store is described); restored afterwards, so main() called in-process leaves no trace."""
    before = os.environ.get("SAEGAP_DATA")
    if data_dir is not None:
        os.environ["SAEGAP_DATA"] = str(data_dir)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SAEGAP_DATA", None)
        else:
            os.environ["SAEGAP_DATA"] = before


class _NoTraceback(logging.Formatter):
    """The terminal gets one line per failure; LOG_FILE (or -v, or `saegap worker`'s log) has the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        if not record.exc_info:
            return super().format(record)
        brief = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(brief) + f" (traceback in {LOG_FILE} in the data dir, or run with -v)"


LOG_FILE = "saegap.log"  # in the data dir (SAEGAP_DATA): library INFO lines of every command but `worker`


class _DataDirLog(logging.FileHandler):
    """INFO and up to <data dir>/saegap.log with tracebacks; the file (and dir) is made on the first record."""

    _format = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def __init__(self) -> None:
        from schema.config import StoreConfig

        super().__init__(StoreConfig.from_env().data_dir / LOG_FILE, delay=True, encoding="utf-8")

    def _open(self):  # logging's own signature
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def format(self, record: logging.LogRecord) -> str:
        return self._format.format(record)


def _log_handlers(args: argparse.Namespace) -> list[logging.Handler]:
    """-v: everything on the terminal. `worker`: its INFO log on the terminal. Otherwise the terminal gets
    warnings and the command's own messages, and library INFO lines (alembic, worker) go to LOG_FILE."""
    terminal = logging.StreamHandler()
    if args.verbose or args.command == "worker":
        return [terminal]
    own = COMMANDS.get(args.command or "", "saegap.cli")
    terminal.addFilter(lambda record: record.levelno >= logging.WARNING or record.name == own)
    terminal.setFormatter(_NoTraceback("%(levelname)s %(name)s: %(message)s"))  # the file keeps tracebacks
    return [terminal, _DataDirLog()]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _data_dir_env(getattr(args, "data_dir", None)):
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
            handlers=_log_handlers(args),
        )
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
