"""Run SQL on the results store (reads only, unless --write).

Reads go through schema.read.query: one statement, checked against the read path's
allow-list, run in a read process with a time limit, a memory limit (SAEGAP_READ_MEMORY_LIMIT),
a row cap and a byte cap (docs/security.md). They see the store's tables (runs, tokens,
interventions and the rollups) and views (token_records, token_gaps). --write runs one
statement in a lake transaction instead: maintenance such as
`CALL ducklake_merge_adjacent_files('lake')`. Errors are one line; -v adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

import pyarrow as pa
import pyarrow.csv

from schema import read
from schema.errors import WriteRefusedError
from schema.output import OUTPUT_FORMATS, render
from schema.store import Store

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help='one SQL statement, e.g. "SELECT layer, avg(kl) FROM token_records GROUP BY 1"')
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output format")
    parser.add_argument("--write", action="store_true", help="allow a statement that changes the store")
    parser.add_argument("--max-rows", type=int, default=100_000, help="refuse results longer than this (reads)")
    parser.add_argument(
        "--max-bytes", type=int, default=read.DEFAULT_MAX_BYTES, help="refuse results larger than this in bytes (reads)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a read is stopped")


def run(args: argparse.Namespace) -> int:
    try:
        if not args.write:
            read.check_read_only(args.query)  # refused before the store is even opened
        with Store.open() as store:
            result = _execute(store, args)
    except WriteRefusedError as error:
        log.error("%s (add --write to change the store)", error)
        return 2
    except Exception as error:  # a limit, a store that does not open, DuckDB's own (syntax, unknown column ...):
        log.error("%s", read.one_line(error), exc_info=True)  # one line; -v (and the log file) add the traceback
        return 2
    sys.stdout.write(render(result, args.format))
    return 0


def _execute(store: Store, args: argparse.Namespace) -> pa.Table:
    if args.write:
        return store.execute_write(args.query)
    return read.query(args.query, store=store, timeout_s=args.timeout, max_rows=args.max_rows, max_bytes=args.max_bytes)
