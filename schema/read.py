"""The one read function: `query(sql)` -> pyarrow.Table, for statements nobody has to trust.

Analysis modules, the UI's SQL console and `saegap sql` all read through it. It sees the
lake's tables (runs, tokens, interventions and the rollups) and views (token_records,
token_gaps), and nothing else. docs/security.md lists what it promises and the tests of each.

- Allow-list (here, before anything runs): DuckDB's own parser must find exactly one statement,
  of type SELECT (which covers WITH, FROM-first, DESCRIBE, SHOW TABLES, SUMMARIZE) or an EXPLAIN
  of one. Its syntax tree (json_serialize_sql) may then only name the store's relations and CTEs
  of its own, the table functions in TABLE_FUNCTIONS and the scalar, aggregate and window
  functions of DuckDB's core less DENIED_FUNCTIONS; nothing qualified with another catalog or
  schema. So no ducklake_* function, no checkpoint, no scanner (sqlite_*, postgres_*), no
  read_* or glob, no duckdb_* system table, no query()/query_table(), no getenv or
  current_setting. Anything else raises WriteRefusedError and never reaches DuckDB.
- Read processes: the statement runs in a separate process (schema.read_worker), a pool of
  them per store, each with a scrubbed environment, the lake attached READ_ONLY with file
  access confined to the lake and the configuration locked, the catalog password only in
  libpq's environment (never in an ATTACH string), and its memory capped by the OS.
- Limits, each breach one error naming it: `timeout_s` (the process interrupts the statement;
  if it has not answered shortly after, it is killed) -> QueryTimeoutError; the store's
  read_memory_limit -> MemoryLimitError; `max_rows` -> RowLimitError; `max_bytes` of Arrow
  result -> ResultSizeError. Never a silent truncation: aggregate, or add a LIMIT.
- Snapshot reads: each query reads one DuckLake snapshot; writers are never blocked.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import itertools
import json
import logging
import os
import pickle
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from schema import errors, lake
from schema.config import LAKE_ALIAS, StoreConfig
from schema.errors import (
    MemoryLimitError,
    QueryTimeoutError,
    ReadProcessError,
    ResultSizeError,
    RowLimitError,
    StoreError,
    WriteRefusedError,
)
from schema.store import Store, process_store

log = logging.getLogger(__name__)
Params = list[Any] | dict[str, Any] | None
DEFAULT_MAX_BYTES = 256 * 2**20  # Arrow bytes of one result

# --- the allow-list -------------------------------------------------------------------------------
# Table functions a reader may call: row generators over values, nothing that opens a file or a database.
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Core scalar functions a reader may not call, though they open nothing: they show or change the
# process's state (settings, variables, sequences, the random seed, the log), hold a read process for
# nothing (sleep), bind a statement of their own (json_serialize_plan binds, and so opens, what it is given),
# or are macros over system table functions that are not on the list (duckdb_views, pragma_database_size ...).
DENIED_FUNCTIONS = frozenset({
    "getenv", "current_setting", "getvariable", "current_query", "current_query_id", "current_connection_id",
    "current_transaction_id", "nextval", "currval", "setseed", "sleep_ms", "pg_sleep", "write_log",
    "json_serialize_plan", "json_serialize_sql", "json_deserialize_sql", "json_execute_serialized_sql",
    "parse_duckdb_log_message", "pg_get_viewdef", "pg_get_constraintdef", "format_type", "get_block_size",
})  # fmt: skip
# The DuckDB version the allow-list was last reviewed against (tests/schema/test_read_security.py checks it).
REVIEWED_DUCKDB = "1.5.5"
# Syntax-tree node types (json_serialize_sql) the checker knows; any other is refused, not guessed at.
_TABLE_REFS = {"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EXPRESSION_LIST", "EMPTY", "PIVOT", "SHOW_REF"}
_SHOW_TABLES = {'"tables"', "tables"}  # SHOW TABLES (SHOW ALL TABLES would list the catalog database's too)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def query(
    sql: str,
    params: Params = None,
    *,
    store: Store | None = None,
    timeout_s: float = 30.0,
    max_rows: int = 100_000,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pa.Table:
    """Run one read-only statement on the store (default: Store.open() from the environment)."""
    check_read_only(sql)
    return _run_in_read_process(sql, params, store or default_store(), timeout_s, max_rows, max_bytes)


def _run_in_read_process(
    sql: str, params: Params, store: Store, timeout_s: float, max_rows: int, max_bytes: int
) -> pa.Table:
    pool = _pool(store)
    deadline = time.monotonic() + timeout_s  # for reruns of a statement that met a busy catalog
    request = {"sql": sql, "params": params, "timeout_s": timeout_s, "max_rows": max_rows, "max_bytes": max_bytes}
    for attempt in itertools.count():
        try:
            return pool.run(request)
        except duckdb.Error as error:
            # A busy SQLite catalog ("database is locked") is transient: rerun while time is left.
            if not lake.is_retryable(error) or time.monotonic() + _retry_delay(attempt) >= deadline:
                raise
            time.sleep(_retry_delay(attempt))
            request["timeout_s"] = max(deadline - time.monotonic(), 0.0)
    raise AssertionError("unreachable")


def _retry_delay(attempt: int) -> float:
    return min(0.5, 0.01 * 2**attempt)


def one_line(error: BaseException) -> str:
    """An error as the one line a user sees (DuckDB's messages go on with the statement and a caret)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- checking a statement ------------------------------------------------------------------------


def check_read_only(sql: str) -> None:
    """Raise WriteRefusedError unless `sql` is one read that names only what the allow-list holds."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.ParserException as error:
        raise WriteRefusedError(f"not a readable statement: {one_line(error)}") from error
    if len(statements) != 1:
        raise WriteRefusedError(f"expected exactly one statement, got {len(statements)}")
    statement = statements[0]
    text = sql
    if statement.type == duckdb.StatementType.EXPLAIN:
        statement, text = _explained_statement(sql)
    if statement.type != duckdb.StatementType.SELECT:
        raise WriteRefusedError(f"only reads are allowed here; got a {statement.type.name} statement")
    tree = _syntax_tree(text)
    if tree.get("error"):
        raise WriteRefusedError(f"only plain reads are allowed here ({tree.get('error_message', 'not a SELECT')})")
    for node in tree["statements"]:
        _check_node(node["node"], frozenset())


def _explained_statement(sql: str) -> tuple[duckdb.Statement, str]:
    """The statement inside EXPLAIN [ANALYZE] and its text (EXPLAIN ANALYZE runs it, so it must be a read too)."""
    tokens = duckdb.tokenize(sql)  # [(offset, token type)], DuckDB's tokenizer
    words = [sql[offset:].split(None, 1)[0].upper() for offset, _ in tokens[:2]]
    skip = 2 if len(words) > 1 and words[1] == "ANALYZE" else 1
    text = sql[tokens[skip][0] :] if len(tokens) > skip else ""
    try:
        inner = duckdb.extract_statements(text) if text else []
    except duckdb.ParserException:  # EXPLAIN (FORMAT ...) and the like
        inner = []
    if len(inner) != 1:
        raise WriteRefusedError("EXPLAIN must wrap exactly one statement")
    return inner[0], text


_parser_lock = threading.Lock()


@functools.cache
def _parser() -> duckdb.DuckDBPyConnection:
    """A bare DuckDB (no extension loaded, no file access) that only parses: json_serialize_sql."""
    conn = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    conn.execute("SET enable_external_access = false")
    conn.execute("SET python_enable_replacements = false")
    conn.execute("SET lock_configuration = true")
    return conn


def _parsed(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with _parser_lock:
        return _parser().execute(sql, params).fetchall()


def _syntax_tree(sql: str) -> dict[str, Any]:
    return json.loads(_parsed("SELECT json_serialize_sql(?::VARCHAR)", [sql])[0][0])


@functools.cache
def allowed_functions() -> frozenset[str]:
    """Scalar, aggregate, window functions and scalar macros of DuckDB's core (a bare connection: no
    extension loaded; its built-ins are core_functions, icu, json and parquet), less DENIED_FUNCTIONS."""
    rows = _parsed(
        "SELECT DISTINCT lower(function_name) FROM duckdb_functions() WHERE function_type IN ('scalar', 'aggregate', "
        "'macro') AND NOT starts_with(function_name, '__')"
    )
    return (frozenset(row[0] for row in rows) | {"unnest"}) - DENIED_FUNCTIONS  # unnest: also a table function


@functools.cache
def readable_relations() -> frozenset[str]:
    """The store's tables and views: the only relations a statement may name (besides its own CTEs)."""
    from schema.relations import RECORD_TABLES, VIEW_DDL

    return frozenset(RECORD_TABLES) | {lake.view_name(ddl).lower() for ddl in VIEW_DDL}


@functools.lru_cache(maxsize=4096)
def _names_a_relation_elsewhere(name: str) -> bool:
    """Whether DuckDB resolves `name` without the lake (sqlite_master, pg_class, ...). A CTE may not take such a
    name: a reference outside the CTE's reach (DuckDB lets an earlier CTE name a later one) would read that instead."""
    try:
        _parsed(f'SELECT 1 FROM "{name}" LIMIT 0')
    except duckdb.Error:
        return False
    return True


def _check_node(node: Any, ctes: frozenset[str]) -> None:
    """Walk json_serialize_sql's tree; refuse what the allow-list does not hold."""
    if isinstance(node, list):
        for item in node:
            _check_node(item, ctes)
        return
    if not isinstance(node, dict):
        return
    if "cte_map" in node:
        ctes = ctes | _cte_names(node["cte_map"])
    if "class" not in node and isinstance(node.get("type"), str) and node["type"] in _TABLE_REFS:
        _check_table_ref(node, ctes)
        return
    if "table_name" in node:  # a relation reference of a kind the checker does not know
        raise WriteRefusedError(f"unsupported table reference {node.get('type')!r}")
    if "function_name" in node:
        _check_function(node, allowed_functions(), "function")
    for value in node.values():
        if isinstance(value, dict | list):
            _check_node(value, ctes)


def _cte_names(cte_map: dict[str, Any]) -> frozenset[str]:
    names = set()
    for entry in cte_map.get("map", []):
        name = str(entry["key"])
        if not _IDENTIFIER.fullmatch(name) or _names_a_relation_elsewhere(name):
            raise WriteRefusedError(f"a CTE may not be named {name!r}; use a plain name of your own")
        names.add(name.lower())
    return frozenset(names)


def _check_table_ref(node: dict[str, Any], ctes: frozenset[str]) -> None:
    kind = node["type"]
    if kind == "BASE_TABLE":
        _check_relation(node, ctes)
    elif kind == "TABLE_FUNCTION":
        function = node["function"]  # its arguments are checked as expressions, its name against TABLE_FUNCTIONS
        _check_function(function, TABLE_FUNCTIONS, "table function")
        _check_node([value for key, value in function.items()], ctes)
        _check_node([value for key, value in node.items() if key != "function"], ctes)
        return
    if kind == "SHOW_REF":
        if node.get("query") is None and str(node.get("table_name", "")).lower() not in _SHOW_TABLES:
            raise WriteRefusedError(f"SHOW {node.get('table_name')} is not a read of the store; try SHOW TABLES")
    _check_node(list(node.values()), ctes)


def _check_relation(node: dict[str, Any], ctes: frozenset[str]) -> None:
    name = str(node["table_name"]).lower()
    catalog, schema = str(node.get("catalog_name", "")).lower(), str(node.get("schema_name", "")).lower()
    if not catalog and not schema and name in ctes:
        return
    in_lake = (catalog, schema) in {("", ""), ("", "main"), ("", LAKE_ALIAS), (LAKE_ALIAS, ""), (LAKE_ALIAS, "main")}
    if not in_lake or name not in readable_relations():
        shown = ".".join(part for part in (catalog, schema, name) if part)
        raise WriteRefusedError(
            f"{shown!r} is not a relation of the store; reads see {', '.join(sorted(readable_relations()))}"
        )


def _check_function(node: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    name = str(node["function_name"]).lower()
    if node.get("catalog") or str(node.get("schema") or "main").lower() != "main":  # the parser writes main.list_value
        raise WriteRefusedError(f"{what} {node['function_name']!r} is qualified with a catalog or schema; not allowed")
    if name not in allowed:
        raise WriteRefusedError(f"{what} {node['function_name']!r} is not on the read path's allow-list")


# --- read processes ------------------------------------------------------------------------------

_FRAME = struct.Struct(">Q")
_START_TIMEOUT_S = 120.0  # a read process's start (imports, LOAD, ATTACH), apart from any query's time limit
_KILL_GRACE_S = 2.0  # past its time limit a statement has this long to answer its interrupt, then it is killed
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4GiB', '512MB', '2g', '1073741824' -> bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size like 4GiB or 512MB")
    number, unit, binary = match.groups()
    power = "kmgt".find(unit.lower()) + 1 if unit else 0
    return int(float(number) * (1024 if binary or not unit else 1000) ** power)


class _Gone(Exception):
    """The read process ended (killed, crashed, or it closed its pipe)."""


class _Overdue(Exception):
    """No answer by the deadline."""


class _Stale(Exception):
    """The read process had ended before it was given the statement."""


class _ReadProcess:
    """One running schema.read_worker: one statement at a time."""

    def __init__(self, config: StoreConfig, memory_limit: int) -> None:
        reader_config, password = config.reader_config()
        self.spill_dir = tempfile.mkdtemp(prefix="saegap-read-")
        self.alive = True
        self.owner = os.getpid()  # a forked copy of this object (multiprocessing) must not kill the process
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "schema.read_worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_process_env(self.spill_dir), cwd=self.spill_dir,
            )  # fmt: skip
        except OSError as error:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            raise ReadProcessError(f"cannot start a read process: {error}") from error
        with contextlib.suppress(OSError, AttributeError):  # Linux: 1 MiB pipes, fewer wakeups per large result
            fcntl.fcntl(self.popen.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        init = {
            "config": reader_config.model_dump(mode="json"), "memory_limit": memory_limit,
            "duckdb_memory_limit": max(memory_limit // 2, memory_limit - 768 * 2**20),
            "spill_dir": self.spill_dir, "spill_limit": memory_limit, "env": _secret_env(config, password),
        }  # fmt: skip
        try:
            self._send(pickle.dumps(init))
            header = self._receive_header(time.monotonic() + _START_TIMEOUT_S)
        except (_Gone, _Overdue) as problem:
            self.kill()
            reason = "it ended" if isinstance(problem, _Gone) else f"no answer in {_START_TIMEOUT_S:g} s"
            raise ReadProcessError(f"the read process did not start ({reason})") from None
        if header.get("status") != "ready":
            self.kill()
            raise _error_from(header, config)

    def run(self, request: dict[str, Any], deadline: float, config: StoreConfig) -> pa.Table:
        try:
            self._send(pickle.dumps(request))
        except _Gone:
            self.kill()
            raise _Stale from None
        try:
            header = self._receive_header(deadline + _KILL_GRACE_S)
            if header.get("status") != "ok":
                raise _error_from(header, config, request)
            payload = self._receive(deadline + _KILL_GRACE_S + 60.0)  # the result is done: only its transfer is left
        except _Overdue:
            self.kill()
            raise QueryTimeoutError(_timeout_message(request)) from None
        except _Gone:
            code = self.kill()
            raise ReadProcessError(
                f"the read process ended (exit status {code}) while running the query; the usual cause is the "
                f"read memory limit ({config.read_memory_limit}, SAEGAP_READ_MEMORY_LIMIT)"
            ) from None
        return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()

    def _send(self, payload: bytes) -> None:
        try:
            self.popen.stdin.write(_FRAME.pack(len(payload)) + payload)
            self.popen.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise _Gone from None

    def _receive_header(self, deadline: float) -> dict[str, Any]:
        return json.loads(self._receive(deadline))

    def _receive(self, deadline: float) -> bytearray:
        size = _FRAME.unpack(self._read_exact(_FRAME.size, deadline))[0]
        return self._read_exact(size, deadline)

    def _read_exact(self, size: int, deadline: float) -> bytearray:
        fd = self.popen.stdout.fileno()
        buffer = bytearray(size)
        view, done = memoryview(buffer), 0
        while done < size:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise _Overdue
            count = os.readv(fd, [view[done:]])
            if not count:
                raise _Gone
            done += count
        return buffer

    def kill(self) -> int | None:
        """Stop the process (SIGKILL: it may be stuck inside a function) and remove its spill dir."""
        self.alive = False
        if os.getpid() != self.owner:  # inherited through fork: the parent's to stop
            return None
        if self.popen.poll() is None:
            self.popen.kill()
        code = self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        return code


def _process_env(home: str) -> dict[str, str]:
    """A read process's whole environment: enough to run Python, and no secret. What opening the lake needs
    (the catalog password, libpq's PG* settings, AWS_* for an s3:// data path) travels in its first message
    instead (_secret_env), so /proc/<pid>/environ of the read process never holds it."""
    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["HOME"] = home
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this checkout's schema package
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _secret_env(config: StoreConfig, password: str | None) -> dict[str, str]:
    """Variables the read process sets for itself before it opens the lake: libpq's (PGPASSWORD the catalog
    password, PGSSLMODE, a service file ...) and, for an s3:// data path, AWS_* (they become a DuckDB secret and
    the read process drops them)."""
    env = {key: value for key, value in os.environ.items() if key.startswith("PG")}
    if config.uses_s3:
        env |= {key: value for key, value in os.environ.items() if key.startswith("AWS_")}
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def _timeout_message(request: dict[str, Any]) -> str:
    return f"query ran past its time limit (timeout_s={request['timeout_s']:g}) and was stopped"


def _error_from(header: dict[str, Any], config: StoreConfig, request: dict[str, Any] | None = None) -> Exception:
    """The exception a read process reported, as the caller's side raises it (the full text is in the log)."""
    kind, name, message = header.get("kind"), header.get("class", ""), header.get("message", "")
    if header.get("detail"):
        log.debug("read process error:\n%s", header["detail"])
    if kind == "timeout" and request is not None:
        return QueryTimeoutError(_timeout_message(request))
    if kind == "memory":
        return MemoryLimitError(
            f"query needed more memory than the read memory limit ({config.read_memory_limit}, "
            "SAEGAP_READ_MEMORY_LIMIT); aggregate more, or read fewer rows or columns"
        )
    if kind == "rows" and request is not None:
        return RowLimitError(
            f"query returned more than max_rows={request['max_rows']} rows; aggregate, add a LIMIT or raise max_rows"
        )
    if kind == "bytes" and request is not None:
        return ResultSizeError(
            f"query result is larger than max_bytes={request['max_bytes']} bytes; "
            "select fewer rows or columns, or raise max_bytes"
        )
    duckdb_class = getattr(duckdb, name, None)
    if kind in ("duckdb", "open") and isinstance(duckdb_class, type) and issubclass(duckdb_class, duckdb.Error):
        return duckdb_class(message)
    store_class = getattr(errors, name, None)
    if isinstance(store_class, type) and issubclass(store_class, StoreError):
        try:
            return store_class(message)
        except TypeError:  # a StoreError with arguments of its own
            pass
    prefix = "the read process could not open the store: " if kind == "open" else ""
    return ReadProcessError(f"{prefix}{name}: {one_line(Exception(message))}")


class _ReadPool:
    """The read processes of one store: up to config.read_processes, started on demand, reused."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.memory_limit = parse_size(config.read_memory_limit)
        if self.memory_limit < 256 * 2**20:
            raise ValueError(f"read_memory_limit {config.read_memory_limit!r} is below the 256MiB a read process needs")
        self._idle: list[_ReadProcess] = []
        self._started = 0
        self._changed = threading.Condition()
        self._closed = False

    def run(self, request: dict[str, Any]) -> pa.Table:
        """Run `request` on an idle read process (or a new one; starting it does not count against the time
        limit, waiting for a busy one does, up to the same limit)."""
        for attempt in range(2):
            process = self._acquire(time.monotonic() + request["timeout_s"], request)
            try:
                return process.run(request, time.monotonic() + request["timeout_s"], self.config)
            except _Stale:  # an idle process that died (killed from outside) before it got the statement
                if attempt:
                    raise ReadProcessError("two read processes in a row ended before they got the statement") from None
            finally:
                self._release(process)
        raise AssertionError("unreachable")

    def _acquire(self, deadline: float, request: dict[str, Any]) -> _ReadProcess:
        with self._changed:
            while True:
                if self._closed:
                    raise ReadProcessError("the store was closed")
                if self._idle:
                    return self._idle.pop()
                if self._started < self.config.read_processes:
                    self._started += 1
                    break
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise QueryTimeoutError(
                        f"all {self.config.read_processes} read processes stayed busy for the whole time limit "
                        f"(timeout_s={request['timeout_s']:g}); SAEGAP_READ_PROCESSES sets how many there are"
                    )
                self._changed.wait(wait)
        try:
            return _ReadProcess(self.config, self.memory_limit)
        except BaseException:
            with self._changed:
                self._started -= 1
                self._changed.notify()
            raise

    def _release(self, process: _ReadProcess) -> None:
        with self._changed:
            if process.alive and not self._closed:
                self._idle.append(process)
            else:
                self._started -= 1
                if process.alive:
                    process.kill()
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._changed.notify_all()
        for process in idle:
            process.kill()


_pools: weakref.WeakKeyDictionary[Store, _ReadPool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def _pool(store: Store) -> _ReadPool:
    with _pools_lock:
        pool = _pools.get(store)
        if pool is None:
            pool = _pools[store] = _ReadPool(store.config)
            weakref.finalize(store, pool.close)
            store_ref = weakref.ref(store)  # no strong reference back: the pool must not keep its store alive
            store.on_close(lambda: close_readers(store_ref()))
        return pool


def close_readers(store: Store | None) -> None:
    """Stop the store's read processes (run when the store closes: Store.on_close)."""
    if store is None:
        return
    with _pools_lock:
        pool = _pools.pop(store, None)
    if pool is not None:
        pool.close()


@atexit.register
def _close_all() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def default_store() -> Store:
    """The store of this process's environment (schema.store.process_store: one per process)."""
    return process_store()
