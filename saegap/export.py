"""Export the results store to a portable DuckDB file or Parquet files, or a job's verdicts in SAEBench's format.

The store's own formats are schema/commands/export.py's (see its help). `--format saebench
--job N --to DIR` writes one SAEBench eval-output JSON per SAE of job N under DIR/saegap_kl_gap/
(analysis/saebench.py, docs/saebench.md). This module is the CLI layer joining the two, so
schema/ never imports analysis/.
"""

from __future__ import annotations

import argparse
import logging

from schema.commands import export as store_export

log = logging.getLogger(__name__)
FORMATS = ("duckdb", "saebench")


def configure(parser: argparse.ArgumentParser) -> None:
    store_export.configure(parser)
    parser.add_argument("--format", choices=FORMATS, default="duckdb",
                        help="duckdb (--to FILE or --parquet DIR) or saebench (--job N --to DIR)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.format != "saebench":
        return store_export.run(args)
    if args.job is None or args.to is None:
        log.error("--format saebench needs --job N and --to DIR")
        return 2
    from analysis.saebench import write_job
    from schema.errors import StoreError

    try:
        paths = write_job(args.job, args.to)
    except (StoreError, ValueError) as error:
        log.error("%s", error)
        return 2
    log.info("wrote %d SAEBench result file(s) under %s", len(paths), paths[0].parent)
    return 0
