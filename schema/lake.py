"""DuckLake connections: the record tables live in a DuckLake (catalog in SQLite or
PostgreSQL, data in Parquet). Every process opens its own in-memory DuckDB, LOADs the
extensions shipped inside the PyPI packages (never INSTALL from the network) and
ATTACHes the lake as `lake`. Each DuckLake transaction reads one snapshot, so readers
never block writers; concurrent commits that conflict raise and are retried here.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa
from sqlalchemy.engine import make_url

from schema.config import LAKE_ALIAS, LAKE_METADATA_SCHEMA, StoreConfig
from schema.errors import ObjectStoreError, StoreOpenError, WriteConflictError
from schema.relations import (
    LAKE_ROLLUP_SOURCES,
    RECORD_TABLES,
    ROLLUPS,
    RUN_COLUMNS_ADDED,
    RUN_SCHEMA,
    TOKEN_METRICS_SCHEMA,
    TOKENS_WITH_METRICS_SELECT,
    VIEW_DDL,
    columns_sql,
    table_ddl,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# (package, extension) pairs; the package ships extensions/v<duckdb version>/<name>.duckdb_extension
_EXTENSIONS = (
    ("duckdb_extension_sqlite_scanner", "sqlite_scanner"),
    ("duckdb_extension_postgres_scanner", "postgres_scanner"),
    ("duckdb_extension_ducklake", "ducklake"),
)
_HTTPFS = ("duckdb_extension_httpfs", "httpfs")  # loaded only for an s3:// data path
# Settings httpfs fills from the AWS_* variables when it loads, readable by current_setting(): blanked
# once the redacted secret holds the credentials.
_HTTPFS_ENV_SETTINGS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token")
# Messages of the errors a retry can cure: DuckLake commit conflicts, a busy SQLite catalog.
_RETRYABLE = ("conflict", "database is locked", "database is busy", "could not serialize", "deadlock")


def extension_path(package: str, name: str) -> Path:
    module = importlib.import_module(package)
    path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise FileNotFoundError(f"DuckDB extension {name} not found at {path}; install {package}=={duckdb.__version__}")
    return path


def connect(config: StoreConfig, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached as `lake` and selected (USE lake)."""
    conn = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    for package, name in _EXTENSIONS:
        conn.execute(f"LOAD '{extension_path(package, name)}'")
    if config.uses_s3:
        conn.execute(f"LOAD '{extension_path(*_HTTPFS)}'")
        create_s3_secret(conn)
        check_data_path(conn, config)
    if not config.uses_postgres:
        _prepare_sqlite_catalog(config.sqlite_catalog_path())
    options = [f"DATA_PATH '{config.lake_data_path()}'", "OVERRIDE_DATA_PATH true"]  # a moved store: see _attach
    if config.uses_postgres:
        options.append(f"METADATA_SCHEMA '{LAKE_METADATA_SCHEMA}'")
    if read_only:
        options.append("READ_ONLY")
    _attach(conn, config, options)
    conn.execute(f"USE {LAKE_ALIAS}")
    return conn


def _attach(conn: duckdb.DuckDBPyConnection, config: StoreConfig, options: list[str]) -> None:
    """ATTACH the lake; any failure is one StoreOpenError naming the catalog.

    DuckLake records the absolute data path it was created with and stores file paths relative
    to it. A store moved or copied elsewhere (its data dir, or its Parquet and SAEGAP_DATA_PATH)
    is opened with OVERRIDE_DATA_PATH at the path configured now, once its files are found there.
    """
    try:
        conn.execute(f"ATTACH '{config.lake_catalog()}' AS {LAKE_ALIAS} ({', '.join(options)})")
    except duckdb.Error as error:
        conn.close()
        reason = _without_password(_first_line(error), config)
        raise StoreOpenError(f"cannot open the lake catalog {config.catalog_label()}: {reason}") from None
    recorded = conn.execute(
        "SELECT value FROM ducklake_options(?) WHERE option_name = 'data_path'", [LAKE_ALIAS]
    ).fetchone()
    if recorded and recorded[0] != config.lake_data_path():
        _check_moved_files(conn, config, recorded[0])


def _check_moved_files(conn: duckdb.DuckDBPyConnection, config: StoreConfig, recorded: str) -> None:
    """The catalog was made at `recorded`: its files must be under the configured data path now."""
    expected = config.lake_data_path()
    for table in RECORD_TABLES:
        row = conn.execute("SELECT data_file FROM ducklake_list_files(?, ?) LIMIT 1", [LAKE_ALIAS, table]).fetchone()
        if row and "://" not in expected and not Path(row[0]).exists():
            conn.close()
            raise StoreOpenError(
                f"the lake's Parquet files are expected under {expected} (the catalog was made at {recorded}),"
                f" but {row[0]} is missing: move or copy the whole data dir, or set SAEGAP_DATA_PATH to where they are"
            )
    log.info("lake made at %s opened at %s", recorded, expected)


def _without_password(message: str, config: StoreConfig) -> str:
    """DuckDB's ATTACH errors quote the whole libpq conninfo, password included: mask it before the message
    reaches a terminal, a log or a job's error column."""
    masked = re.sub(r"password=\S+?(?=[\"'\s]|$)", "password=***", message)
    password = make_url(config.database_url).password if config.database_url else None
    return masked.replace(password, "***") if password else masked


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def create_s3_secret(conn: duckdb.DuckDBPyConnection, env: dict[str, str] | None = None) -> None:
    """The one place S3 credentials enter DuckDB: a temporary (in-memory) secret from the usual AWS_*
    variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
    AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for a non-AWS server, which gets
    path-style URLs). No key id: no secret (a public bucket). duckdb_secrets() shows it redacted and
    readers cannot unredact it (allow_unredacted_secrets stays off; confine() locks the configuration).
    """
    env = os.environ if env is None else env
    for setting in _HTTPFS_ENV_SETTINGS:  # httpfs copies AWS_* into plain, readable settings on LOAD: blank them
        conn.execute(f"SET GLOBAL {setting} = ''")
    if not env.get("AWS_ACCESS_KEY_ID"):
        return
    options = {
        "KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "SECRET": env.get("AWS_SECRET_ACCESS_KEY", ""),
        "REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
    }
    if env.get("AWS_SESSION_TOKEN"):
        options["SESSION_TOKEN"] = env["AWS_SESSION_TOKEN"]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.rstrip("/").partition("://")
        options |= {"ENDPOINT": host or scheme, "URL_STYLE": "path", "USE_SSL": str(scheme != "http").lower()}
    rendered = ", ".join(f"{key} '{value.replace(chr(39), chr(39) * 2)}'" for key, value in options.items())
    conn.execute(f"CREATE OR REPLACE TEMPORARY SECRET saegap_s3 (TYPE s3, {rendered})")


def check_data_path(conn: duckdb.DuckDBPyConnection, config: StoreConfig) -> None:
    """List the S3 data path once (nothing written): an unreachable endpoint, wrong credentials or a
    missing bucket raise ObjectStoreError here, at store open, before any compute."""
    path = config.lake_data_path()
    try:
        conn.execute("SELECT count(*) FROM glob(?)", [f"{path}_saegap_probe*"]).fetchall()
    except duckdb.Error as error:
        lines = str(error).split("LINE 1:")[0].splitlines()  # DuckDB's message, without its SQL pointer
        reason = "; ".join(line.strip() for line in lines if line.strip())[:400]
        hint = "check the bucket, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL"
        raise ObjectStoreError(f"SAEGAP_DATA_PATH {path} is not usable ({hint}): {reason}") from None


def confine(conn: duckdb.DuckDBPyConnection, config: StoreConfig) -> None:
    """Readers may touch only the lake's files: no reading /etc/passwd through read_csv."""
    allowed = [config.lake_data_path()]
    if config.database_url is None:
        allowed.append(str(config.data_dir.resolve()) + "/")
    conn.execute("SET allowed_directories = ?", [allowed])
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def _prepare_sqlite_catalog(path: Path) -> None:
    """Put the SQLite catalog in WAL mode (a file property, set once): readers then never block the
    committing writer. In the default rollback-journal mode a reader's lock made commits fail with
    'database is locked' and DuckLake's retries back off for seconds."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as catalog:
            if catalog.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                catalog.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as error:
        raise StoreOpenError(f"cannot open the lake catalog {path}: {error}") from None


def is_retryable(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.TransactionException) or any(m in str(error).lower() for m in _RETRYABLE)


def with_retries(conn: duckdb.DuckDBPyConnection, work: Callable[[], T], *, attempts: int = 40) -> T:
    """Run `work` inside BEGIN/COMMIT; on a retryable conflict roll back, back off and rerun it.

    `work` must be safe to rerun from scratch (it is: a shard write deletes before inserting).
    Backoff doubles from 10 ms with jitter, capped at 1 s (about 35 s over all attempts). SQLite
    catalogs need this often: a commit whose read snapshot went stale fails at once with
    'database is locked' (SQLITE_BUSY_SNAPSHOT; a busy timeout cannot help), i.e. optimistic
    concurrency, and the rerun succeeds.
    """
    for attempt in range(attempts):
        try:
            conn.execute("BEGIN TRANSACTION")
            result = work()
            conn.execute("COMMIT")
            return result
        except duckdb.Error as error:
            _rollback_quietly(conn)
            if not is_retryable(error):
                raise
            delay = min(1.0, 0.01 * 2**attempt) * random.uniform(0.5, 1.5)
            log.debug("lake transaction conflict (attempt %d): %s; retrying in %.2fs", attempt + 1, error, delay)
            time.sleep(delay)
    raise WriteConflictError(f"lake transaction still conflicted after {attempts} attempts")


def _rollback_quietly(conn: duckdb.DuckDBPyConnection) -> None:
    try:
        conn.execute("ROLLBACK")
    except duckdb.Error:  # no transaction open: the failure came from BEGIN or COMMIT itself
        pass


def ensure_relations(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the record tables and views once (idempotent; views replaced only when their SQL changed)."""
    if _relations_current(conn):
        return

    def create() -> None:
        existing = _lake_tables(conn)  # empty for a new lake: nothing to fill
        missing_rollups = [
            name
            for name, rollup in ROLLUPS.items()
            if {LAKE_ROLLUP_SOURCES[source] for source in rollup.sources} <= existing and name not in existing
        ]
        for statement in table_ddl():
            conn.execute(statement)
        _add_run_columns(conn)
        metric_columns = set(TOKEN_METRICS_SCHEMA.names) & _columns(conn, "tokens")
        if not metric_columns:
            _add_token_metrics(conn)
        elif metric_columns != set(TOKEN_METRICS_SCHEMA.names):
            _add_columns(conn, "tokens", TOKEN_METRICS_SCHEMA)
        for name in missing_rollups:  # a lake from before this rollup existed: fill it once from its records
            log.info("filling rollup %s from the lake's records (once)", name)
            conn.execute(f"INSERT INTO {name} {ROLLUPS[name].select.format(**LAKE_ROLLUP_SOURCES)}")
        for statement in VIEW_DDL:
            conn.execute(statement)

    with_retries(conn, create)


def _add_token_metrics(conn: duckdb.DuckDBPyConnection) -> None:
    """A lake from before tokens carried each intervention's metrics: rebuild tokens once with them."""
    log.info("adding the per-intervention metrics to the lake's tokens (once)")
    select = TOKENS_WITH_METRICS_SELECT.format(tokens="tokens", interventions="interventions")
    conn.execute(f"CREATE TABLE _saegap_tokens_rebuilt AS {select}")
    conn.execute("DROP TABLE tokens")
    conn.execute("ALTER TABLE _saegap_tokens_rebuilt RENAME TO tokens")


def _add_run_columns(conn: duckdb.DuckDBPyConnection) -> None:
    """A lake from before runs carried the error fit: add those columns (NULL for its runs)."""
    added = _schema_subset(RUN_SCHEMA, RUN_COLUMNS_ADDED)
    _add_columns(conn, "runs", added)


def _add_columns(conn: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema) -> None:
    """ADD COLUMN each of `schema`'s fields the table lacks (NULL in its rows).

    For tokens: a lake with some intervention columns already holds no records of the newer
    interventions (writing one needs this build, which adds the columns first), so NULL is right.
    """
    present = _columns(conn, table)
    for field in schema:
        if field.name not in present:
            log.info("adding column %s to the lake's %s (once)", field.name, table)
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {columns_sql(pa.schema([field]))}")


def _schema_subset(schema: pa.Schema, names: tuple[str, ...]) -> pa.Schema:
    return pa.schema([schema.field(name) for name in names])


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?", [LAKE_ALIAS, table]
    ).fetchall()
    return {row[0] for row in rows}


def _lake_tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE_ALIAS]).fetchall()
    return {row[0] for row in rows}


def _relations_current(conn: duckdb.DuckDBPyConnection) -> bool:
    if not set(RECORD_TABLES) <= _lake_tables(conn):
        return False
    if not set(TOKEN_METRICS_SCHEMA.names) <= _columns(conn, "tokens"):
        return False
    if not set(RUN_COLUMNS_ADDED) <= _columns(conn, "runs"):
        return False
    return all(_stored_view_body(conn, ddl) == _rendered_view_body(conn, ddl) for ddl in VIEW_DDL)


def view_name(ddl: str) -> str:
    return ddl.split("VIEW", 1)[1].split()[0]


def _stored_view_body(conn: duckdb.DuckDBPyConnection, ddl: str) -> str | None:
    row = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = ? AND view_name = ?", [LAKE_ALIAS, view_name(ddl)]
    ).fetchone()
    return row[0].split(" AS ", 1)[1] if row else None


def _rendered_view_body(conn: duckdb.DuckDBPyConnection, ddl: str) -> str:
    """DuckDB re-renders a view's SQL; render ours the same way (as a temp view) to compare bodies."""
    conn.execute(ddl.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1))
    row = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = 'temp' AND view_name = ?", [view_name(ddl)]
    ).fetchone()
    conn.execute(f"DROP VIEW temp.{view_name(ddl)}")
    return row[0].split(" AS ", 1)[1]
