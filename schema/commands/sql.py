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
import io
import json
import logging
import sys
from typing import Literal

import pyarrow as pa
import pyarrow.csv

from schema import read
from schema.errors import WriteRefusedError
from schema.store import Store

log = logging.getLogger(__name__)
OutputFormat = Literal["table", "csv", "json"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help='one SQL statement, e.g. "SELECT layer, avg(kl) FROM token_records GROUP BY 1"')
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
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


def render(table: pa.Table, output_format: OutputFormat) -> str:
    """The result as text: an aligned table, CSV with a header, or a JSON array of row objects."""
    if output_format == "csv":
        buffer = io.BytesIO()
        pyarrow.csv.write_csv(table, buffer)
        return buffer.getvalue().decode()
    if output_format == "json":
        return json.dumps(table.to_pylist(), default=str) + "\n"
    return _aligned(table)


def _aligned(table: pa.Table) -> str:
    cells = [[("NULL" if value is None else str(value)) for value in row.values()] for row in table.to_pylist()]
    header = table.column_names
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(header)]
    rows = [header, *cells]
    lines = [" | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines) + f"\n({table.num_rows} rows)\n"
