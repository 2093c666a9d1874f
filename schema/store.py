"""The store: job tables (SQLAlchemy) plus per-token records (DuckLake), opened together.

store = Store.open()                      # SAEGAP_DATA / SAEGAP_DATABASE_URL / SAEGAP_DATA_PATH
job_id = store.create_job(spec, versions)
run_ids = store.add_runs(job_id, runs)    # also mirrored into the lake's `runs`
shard_ids = store.add_shards(job_id, [(0, 32), (32, 64)])
store.start_shard(shard_ids[0], "worker-1")
written = store.write_shard(job_id, shard_ids[0], {run_id: (tokens, interventions), ...})
store.finish_shard(shard_ids[0], rows_written=written.rows, tokens=written.tokens)
schema.read.query("SELECT layer, avg(kl) FROM token_records GROUP BY layer", store=store)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, event

from schema import lake, locks, migrations
from schema.config import LAKE_ALIAS, StoreConfig
from schema.errors import RecordSchemaError, UnknownRunError, UnknownShardError
from schema.jobs import JobTables, RunInfo
from schema.records import AMPLIFICATION_SCHEMA, INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.relations import (
    ENGINE_ROLLUPS,
    ROLLUPS,
    RUN_SCHEMA,
    STORE_KEYS,
    TOKENS_WITH_METRICS_SELECT,
    rollup_sources,
)

log = logging.getLogger(__name__)

ShardRecords = dict[int, tuple[pa.Table, pa.Table]]  # run_id -> (tokens, interventions), engine columns
ShardAmplification = dict[int, pa.Table]  # run_id -> schema.records.AMPLIFICATION_SCHEMA rows (the engine's sums)


class ShardWrite(BaseModel):
    """What write_shard stored for one shard."""

    token_rows: int  # over all runs
    intervention_rows: int
    tokens: int  # token positions of the shard (the largest run's token rows)

    @property
    def rows(self) -> int:
        return self.token_rows + self.intervention_rows


class Store(JobTables):
    """One store: the job API (JobTables) plus the lake's records. Not shared across threads for writes."""

    def __init__(self, config: StoreConfig, engine: Engine) -> None:
        super().__init__(engine)
        self.config = config
        self._writer: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._close_callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()  # one DuckDB connection per store: serialise this process's writes

    @classmethod
    def open(cls, config: StoreConfig | None = None) -> Store:
        """Open (and create or migrate) the store described by `config`, default StoreConfig.from_env()."""
        config = config or StoreConfig.from_env()
        config.prepare_local_dirs()
        engine = job_engine(config)
        store = cls(config, engine)
        try:
            with _opening(config, engine):  # one opener creates or migrates; the others wait, then find it done
                migrations.upgrade(engine)
                lake.ensure_relations(store.writer())
        except BaseException:
            store.close()
            raise
        return store

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` when this store closes (schema.read stops the store's read processes this way)."""
        self._close_callbacks.append(callback)

    def close(self) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback()
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def writer(self) -> duckdb.DuckDBPyConnection:
        if self._writer is None:
            self._writer = lake.connect(self.config, read_only=False)
        return self._writer

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A read-only lake connection in this process, for the store's own code. Statements from users go
        through schema.read.query, which runs them in separate read processes instead (docs/security.md)."""
        if self._reader is None:
            self._reader = lake.connect(self.config, read_only=True)
            lake.confine(self._reader, self.config)
        return self._reader

    def add_runs(self, job_id: int, runs: list[RunInfo | dict[str, Any]]) -> list[int]:
        """Store the job's runs and mirror them into the lake's `runs` (both or, on error, the job rows roll back)."""
        from sqlalchemy.orm import Session

        with Session(self.engine) as session, session.begin():
            run_ids = self._insert_runs(session, job_id, runs)
            mirrored = [
                {"run_id": rid, "job_id": job_id, **RunInfo.model_validate(r).model_dump()}
                for rid, r in zip(run_ids, runs, strict=True)
            ]
            self._mirror_runs(mirrored)
        return run_ids

    def _mirror_runs(self, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows, schema=RUN_SCHEMA)
        ids = [row["run_id"] for row in rows]
        conn = self.writer()

        def replace() -> None:  # replace: a rolled-back job transaction may have left ids behind
            conn.execute(f"DELETE FROM {LAKE_ALIAS}.runs WHERE run_id IN (SELECT unnest(?))", [ids])
            _insert_arrow(conn, "runs", table)

        with self._lock, self._lake_lock():
            lake.with_retries(conn, replace)

    def write_shard(
        self, job_id: int, shard_id: int, records: ShardRecords, amplification: ShardAmplification | None = None
    ) -> ShardWrite:
        """Write one shard's records for all its runs in ONE lake transaction.

        `records` maps run_id -> (tokens, interventions) with schema.records' columns;
        `amplification` run_id -> the engine's amplification sums (`amplification_sums`); the
        store adds run_id and shard_id. A retried shard replaces its earlier attempt
        (delete by shard_id, then insert, same transaction); readers see all of a shard
        or none of it. Simultaneous writes of one shard (a redelivered shard still running
        elsewhere) queue on a lock: each deletes what the one before committed, so exactly one
        copy stays, the last to commit. Other conflicts are retried with backoff.
        """
        self._check_shard(job_id, shard_id, set(records) | set(amplification or {}))
        tokens = _keyed_concat([(run_id, pair[0]) for run_id, pair in records.items()], shard_id, TOKEN_SCHEMA)
        interventions = _keyed_concat(
            [(run_id, pair[1]) for run_id, pair in records.items()], shard_id, INTERVENTION_SCHEMA
        )
        amplified = _keyed_concat(list((amplification or {}).items()), shard_id, AMPLIFICATION_SCHEMA)
        conn = self.writer()

        def replace() -> None:
            for table in ("tokens", "interventions", *ROLLUPS, *ENGINE_ROLLUPS):
                conn.execute(f"DELETE FROM {LAKE_ALIAS}.{table} WHERE shard_id = ?", [shard_id])
            _insert_records(conn, tokens, interventions)
            if amplified.num_rows:
                _insert_arrow(conn, "amplification_sums", amplified)

        with self._lock, self._lake_lock():
            lake.with_retries(conn, replace)
        largest_run = max((pair[0].num_rows for pair in records.values()), default=0)
        return ShardWrite(token_rows=tokens.num_rows, intervention_rows=interventions.num_rows, tokens=largest_run)

    def _check_shard(self, job_id: int, shard_id: int, run_ids: set[int]) -> None:
        shard = self.get_shard(shard_id)
        if shard.job_id != job_id:
            raise UnknownShardError(f"shard {shard_id} belongs to job {shard.job_id}, not job {job_id}")
        unknown = run_ids - self.job_run_ids(job_id)
        if unknown:
            raise UnknownRunError(f"run ids {sorted(unknown)} are not runs of job {job_id}")

    def execute_write(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run any statement on the lake in one transaction (admin use: `saegap sql --write`)."""
        conn = self.writer()
        with self._lock, self._lake_lock():
            return lake.with_retries(conn, lambda: _arrow_or_empty(conn.execute(sql, params)))

    def _lake_lock(self) -> AbstractContextManager[None]:
        """What a lake write holds across processes, so commits happen one at a time and none starves in
        optimistic retries (four PostgreSQL writers under load once exhausted 40): the data dir's file lock
        on a local store, the lake's advisory lock on PostgreSQL (every host's writers queue on it). Two
        writes of one shard therefore run one after the other, and the last to commit wins."""
        if not self.config.uses_postgres:
            return locks.file_lock(self.config.lock_path())
        return locks.advisory_lock(self.engine, locks.LAKE_NAMESPACE, 0)


def _insert_arrow(conn: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append an Arrow table to a lake table in the open transaction (one vectorised INSERT, no row loop)."""
    view = f"_saegap_insert_{table}"
    conn.register(view, rows)  # registering reads the lake's snapshot too: keep it inside the retried work
    try:
        conn.execute(f"INSERT INTO {LAKE_ALIAS}.{table} SELECT * FROM {view}")
    finally:
        conn.unregister(view)


def _insert_records(conn: duckdb.DuckDBPyConnection, tokens: pa.Table, interventions: pa.Table) -> None:
    """The shard's tokens (with their per-intervention metrics), interventions and rollup rows,
    each one vectorised INSERT ... SELECT by DuckDB over the shard's Arrow tables, in the open transaction."""
    sources = {"tokens": "_saegap_shard_tokens", "interventions": "_saegap_shard_interventions"}
    conn.register(sources["tokens"], tokens)  # registering reads the lake's snapshot too: keep it in the retried work
    conn.register(sources["interventions"], interventions)
    try:
        conn.execute(f"INSERT INTO {LAKE_ALIAS}.tokens {TOKENS_WITH_METRICS_SELECT.format(**sources)}")
        conn.execute(f"INSERT INTO {LAKE_ALIAS}.interventions SELECT * FROM {sources['interventions']}")
        for table, rollup in ROLLUPS.items():
            conn.execute(f"INSERT INTO {LAKE_ALIAS}.{table} {rollup.select.format(**rollup_sources(**sources))}")
    finally:
        for view in sources.values():
            conn.unregister(view)


def _arrow_or_empty(result: duckdb.DuckDBPyConnection) -> pa.Table:
    return result.to_arrow_table() if result.description else pa.table({})


def _keyed_concat(per_run: list[tuple[int, pa.Table]], shard_id: int, schema: pa.Schema) -> pa.Table:
    """Engine tables of all runs -> one table with run_id, shard_id prepended (relations' column order)."""
    keyed_schema = pa.schema(list(STORE_KEYS) + list(schema))
    parts = [_keyed(table, run_id, shard_id, schema, keyed_schema) for run_id, table in per_run]
    return pa.concat_tables(parts) if parts else keyed_schema.empty_table()


def _keyed(table: pa.Table, run_id: int, shard_id: int, schema: pa.Schema, keyed_schema: pa.Schema) -> pa.Table:
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise RecordSchemaError(f"run {run_id}: record table lacks columns {missing} (schema.records)")
    try:
        body = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise RecordSchemaError(f"run {run_id}: record columns do not cast to schema.records: {error}") from error
    keys = [_constant(run_id, table.num_rows), _constant(shard_id, table.num_rows)]
    return pa.Table.from_arrays(keys + body.columns, schema=keyed_schema)


def _constant(value: int, length: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.int64()), length)


@contextlib.contextmanager
def _opening(config: StoreConfig, engine: Engine) -> Iterator[None]:
    """Serialise store opens (creation, migration, the lake's relations) across processes."""
    if config.uses_postgres:
        with locks.advisory_lock(engine, locks.OPEN_NAMESPACE, 0):
            yield
    else:
        with locks.file_lock(config.lock_path()):
            yield


def job_engine(config: StoreConfig) -> Engine:
    """SQLAlchemy engine of the job database; SQLite gets WAL and a busy timeout for many processes."""
    url = config.job_database_url()
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


@functools.cache
def _opened(config: StoreConfig) -> Store:
    return Store.open(config)


_first_open = threading.Lock()  # functools.cache alone lets two threads' first calls both open a store


def process_store() -> Store:
    """The one store of this process: opened from the environment (StoreConfig.from_env) on first use
    and kept; the job API, the Celery tasks and the read path all use it."""
    with _first_open:
        return _opened(StoreConfig.from_env())


def forget_process_stores() -> None:
    """Drop the kept stores (tests that point the environment at another data dir); closes nothing."""
    _opened.cache_clear()
