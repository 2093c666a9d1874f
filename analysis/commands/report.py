"""Answer one of the seed's questions from stored records, or write a job's HTML report.

`saegap report NAME [--job N] [--run R] [--layer L] [--set KEY=VALUE ...] [--format table|csv|json]`
prints one analysis module's answer (NAME: a module of analysis.registry, e.g. layer_summary;
an unknown NAME lists them all). `--set` gives any other parameter of the module (a JSON
value or a plain string, e.g. `--set min_count=10`, `--set 'interventions=["sae","eps_random"]'`).

`saegap report --job N [--out report.html]` (no NAME) writes a self-contained HTML report.
The store comes from SAEGAP_DATA (or --data-dir) / SAEGAP_DATABASE_URL / SAEGAP_DATA_PATH.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    from schema.output import OUTPUT_FORMATS  # pyarrow only: no pandas/numpy/matplotlib at parser build

    parser.add_argument("name", nargs="?", help="analysis module; omit for the HTML report of --job")
    parser.add_argument("--job", type=int, help="job id")
    parser.add_argument("--run", type=int, help="run id")
    parser.add_argument("--layer", type=int, help="layer")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="any other module parameter (JSON value or string); repeatable")  # fmt: skip
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output of a module (default table)")
    parser.add_argument("--out", type=Path, help="write here instead of stdout (HTML report: default report.html)")


def _settings(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE parsed as JSON when it is JSON, else kept as a string."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    log.info("wrote %s", out)


def _answer(args: argparse.Namespace) -> int:
    from analysis.registry import get_module
    from schema.output import render

    module = get_module(args.name)
    filters = {"job": args.job, "run": args.run, "layer": args.layer}
    params = module.params(**{k: v for k, v in filters.items() if v is not None}, **_settings(args.settings))
    _write(render(module(params), args.format), args.out)
    return 0


def _report(args: argparse.Namespace) -> int:
    from analysis.html_report import build_report

    if args.job is None:
        raise ValueError("the HTML report needs --job N (or give a module NAME)")
    from schema.read import default_store

    default_store().get_job(args.job)  # UnknownJobError for a job id the store never had
    _write(build_report(args.job), args.out or Path("report.html"))
    return 0


def run(args: argparse.Namespace) -> int:
    from analysis.registry import UnknownModuleError
    from schema.errors import StoreError

    try:
        return _answer(args) if args.name else _report(args)
    except (UnknownModuleError, ValueError, ValidationError, StoreError) as error:  # bad input: one clear line
        sys.stderr.write(f"saegap report: {error}\n")
        return 2
