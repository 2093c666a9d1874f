"""The one read function: `query(sql)` -> pyarrow.Table, read-only, time-limited, row-capped.

Analysis modules, the UI's SQL console and `saegap sql` all read through it. It sees
the lake's tables (runs, tokens, interventions) and views (token_records, token_gaps).

- Read-only: DuckDB's own parser must find exactly one statement, of type SELECT
  (which covers WITH, FROM-first, DESCRIBE, SHOW, SUMMARIZE, table-function PRAGMAs)
  or an EXPLAIN of one; anything else raises WriteRefusedError before it runs. The
  lake is also attached READ_ONLY and file access outside the data path is disabled.
- Time limit: past `timeout_s` the connection is interrupted -> QueryTimeoutError.
- Row cap: more than `max_rows` rows -> RowLimitError (never a silent truncation;
  aggregate or add a LIMIT).
- Snapshot reads: each query reads one DuckLake snapshot; writers are never blocked.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from typing import Any

import duckdb
import pyarrow as pa

from schema import lake
from schema.config import LAKE_ALIAS, StoreConfig
from schema.errors import QueryTimeoutError, RowLimitError, WriteRefusedError
from schema.store import Store

Params = list[Any] | dict[str, Any] | None
_BATCH_ROWS = 65_536


def query(
    sql: str, params: Params = None, *, store: Store | None = None, timeout_s: float = 30.0, max_rows: int = 100_000
) -> pa.Table:
    """Run one read-only statement on the store (default: Store.open() from the environment)."""
    check_read_only(sql)
    store = store or default_store()
    deadline = time.monotonic() + timeout_s
    for attempt in itertools.count():
        try:
            return _run_once(store, sql, params, deadline - time.monotonic(), max_rows)
        except duckdb.Error as error:
            # A busy SQLite catalog ("database is locked") is transient: rerun while time is left.
            if not lake.is_retryable(error) or time.monotonic() + _retry_delay(attempt) >= deadline:
                raise
            time.sleep(_retry_delay(attempt))
    raise AssertionError("unreachable")


def _retry_delay(attempt: int) -> float:
    return min(0.5, 0.01 * 2**attempt)


def _run_once(store: Store, sql: str, params: Params, timeout_s: float, max_rows: int) -> pa.Table:
    cursor = _read_cursor(store)
    timer = threading.Timer(max(timeout_s, 0.0), cursor.interrupt)
    timer.start()
    try:
        return _fetch_capped(cursor.execute(sql, params), max_rows)
    except duckdb.InterruptException as error:
        raise QueryTimeoutError("query ran past its time limit and was interrupted") from error
    finally:
        timer.cancel()
        cursor.close()


def check_read_only(sql: str) -> None:
    """Raise WriteRefusedError unless `sql` is exactly one read statement (DuckDB's parser decides)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.ParserException as error:
        raise WriteRefusedError(f"not a readable statement: {error}") from error
    if len(statements) != 1:
        raise WriteRefusedError(f"expected exactly one statement, got {len(statements)}")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        statement = _explained_statement(statement.query)
    if statement.type != duckdb.StatementType.SELECT:
        raise WriteRefusedError(f"only reads are allowed here; got a {statement.type.name} statement")


def _explained_statement(sql: str) -> duckdb.Statement:
    """The statement inside EXPLAIN [ANALYZE] (EXPLAIN ANALYZE runs it, so it must be a read too)."""
    tokens = duckdb.tokenize(sql)  # [(offset, token type)], DuckDB's tokenizer
    words = [sql[offset:].split(None, 1)[0].upper() for offset, _ in tokens[:2]]
    skip = 2 if len(words) > 1 and words[1] == "ANALYZE" else 1
    inner = duckdb.extract_statements(sql[tokens[skip][0] :]) if len(tokens) > skip else []
    if len(inner) != 1:
        raise WriteRefusedError("EXPLAIN must wrap exactly one statement")
    return inner[0]


def _fetch_capped(result: duckdb.DuckDBPyConnection, max_rows: int) -> pa.Table:
    reader = result.to_arrow_reader(_BATCH_ROWS)
    batches, rows = [], 0
    for batch in reader:
        rows += batch.num_rows
        if rows > max_rows:
            raise RowLimitError(
                f"query returned more than max_rows={max_rows} rows; aggregate, add a LIMIT or raise max_rows"
            )
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def _read_cursor(store: Store) -> duckdb.DuckDBPyConnection:
    """A fresh cursor (own client context: interruptible alone, thread-safe) on the store's reader."""
    base = store.reader()
    cursor = base.cursor()
    cursor.execute(f"USE {LAKE_ALIAS}")
    return cursor


@functools.cache
def _cached_store(config: StoreConfig) -> Store:
    return Store.open(config)


def default_store() -> Store:
    """The store of this process's environment, opened once per process."""
    return _cached_store(StoreConfig.from_env())
