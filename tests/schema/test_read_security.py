"""The read path is read-only (issue 11, docs/security.md): every statement of the family below, on
a SQLite, a PostgreSQL and an S3 store, through schema.read.query, `saegap sql` and the UI's SQL
console, is refused, and no file of the store (nor its catalog) changes; the limits stop what
they promise to stop; the read processes hold no credential a statement could select.

"No file changed": every file under the data dir and the Parquet path, byte for byte, except
SQLite databases, compared by their SQL dump (a reader's SQLite connection writes the -shm index
and may fold the -wal into the database; neither changes a row), and saegap.log (the command's own
log). A PostgreSQL catalog is compared by every row of every table; an S3 data path by the MD5 of
every object. One store per catalog kind serves the whole module.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psycopg
import pytest

from saegap.cli import main
from schema import lake, read
from schema.config import StoreConfig
from schema.errors import MemoryLimitError, QueryTimeoutError, ResultSizeError, WriteRefusedError
from schema.store import Store
from tests.schema.conftest import _SESSION_TOKEN, PG_ADMIN, S3_BUCKET
from tests.schema.test_read import _tiny_shard

CANARY = "canary-pw-7c1e9"  # the catalog password in the PostgreSQL stores' URL (trust auth ignores it)
MEMORY_LIMIT = "1GiB"  # the module's stores: small, so the memory tests are quick
_databases = itertools.count()


def _extension_table_functions() -> list[str]:
    """Every table function and table macro the lake's extensions (ducklake, sqlite, postgres, httpfs) add."""
    conn = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for package, name in (*lake._EXTENSIONS, lake._HTTPFS):
        conn.execute(f"LOAD '{lake.extension_path(package, name)}'")
    bare = {row[0] for row in duckdb.connect().execute("SELECT function_name FROM duckdb_functions()").fetchall()}
    rows = conn.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type IN ('table', 'table_macro')"
    ).fetchall()
    return sorted(row[0] for row in rows if row[0] not in bare)


# The family (issue 11). {jobs} / {catalog}: the store's own SQLite files; {outside}: a CSV outside the
# store; {pg}: the PostgreSQL server's admin database; {parquet}: one of the lake's own Parquet files.
FAMILY: dict[str, str] = {
    **{f"{name}(lake)": f"SELECT * FROM {name}('lake')" for name in _extension_table_functions()},
    "merge via CALL": "CALL ducklake_merge_adjacent_files('lake')",
    "expire snapshots": "SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())",
    "orphans now": "SELECT * FROM ducklake_delete_orphaned_files('lake', cleanup_all => true)",
    "checkpoint()": "SELECT * FROM checkpoint()",
    "checkpoint(lake)": "SELECT * FROM checkpoint('lake')",
    "force_checkpoint()": "SELECT * FROM force_checkpoint()",
    "CHECKPOINT": "CHECKPOINT lake",
    "FORCE CHECKPOINT": "FORCE CHECKPOINT",
    "sqlite_scan catalog": "SELECT * FROM sqlite_scan('{catalog}', 'ducklake_snapshot')",
    "sqlite_scan jobs": "SELECT * FROM sqlite_scan('{jobs}', 'jobs')",
    "sqlite_scan passwd": "SELECT * FROM sqlite_scan('/etc/passwd', 'x')",
    "sqlite_attach": "SELECT * FROM sqlite_attach('{jobs}')",
    "sqlite_attach CALL": "CALL sqlite_attach('{jobs}', overwrite => true)",
    "sqlite_query recursive": "SELECT * FROM sqlite_query('__ducklake_metadata_lake', "
    "'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r')",
    "postgres_scan other db": "SELECT * FROM postgres_scan('{pg}', 'pg_catalog', 'pg_database')",
    "postgres_query read file": "SELECT * FROM postgres_query('__ducklake_metadata_lake', "
    "'SELECT pg_read_file(''/etc/hostname'')')",
    "postgres_query write": "SELECT * FROM postgres_query('__ducklake_metadata_lake', "
    "'CREATE TABLE ducklake.leak AS SELECT 1 RETURNING *')",
    "postgres_execute": "CALL postgres_execute('__ducklake_metadata_lake', 'DROP SCHEMA ducklake CASCADE')",
    "postgres_attach": "SELECT * FROM postgres_attach('{pg}')",
    "metadata catalog table": "SELECT * FROM __ducklake_metadata_lake.main.ducklake_data_file",
    "metadata catalog pg": "SELECT * FROM __ducklake_metadata_lake.ducklake.ducklake_data_file",
    "read_text outside": "SELECT * FROM read_text('/etc/passwd')",
    "read_text store file": "SELECT * FROM read_text('{jobs}')",
    "read_blob outside": "SELECT * FROM read_blob('/etc/hostname')",
    "read_csv outside": "SELECT * FROM read_csv('{outside}')",
    "read_csv_auto outside": "SELECT * FROM read_csv_auto('/etc/passwd')",
    "read_parquet outside": "SELECT * FROM read_parquet('/tmp/**/*.parquet')",
    "read_parquet lake file": "SELECT * FROM read_parquet('{parquet}')",
    "read_json outside": "SELECT * FROM read_json('/etc/hostname')",
    "glob outside": "SELECT * FROM glob('/etc/*')",
    "glob store": "SELECT * FROM glob('{data}/**')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('{parquet}')",
    "replacement scan csv": "SELECT * FROM '{outside}'",
    "replacement scan passwd": "FROM '/etc/passwd'",
    "http": "SELECT * FROM read_text('http://127.0.0.1:9/x')",
    "duckdb_databases()": "SELECT database_name, path FROM duckdb_databases()",
    "duckdb_databases view": "SELECT * FROM duckdb_databases",
    "SHOW DATABASES": "SHOW DATABASES",
    "duckdb_settings()": "SELECT name, value FROM duckdb_settings()",
    "duckdb_secrets()": "SELECT * FROM duckdb_secrets()",
    "duckdb_secrets unredacted": "SELECT * FROM duckdb_secrets(redact := false)",
    "which_secret": "SELECT * FROM which_secret('s3://x/y', 's3')",
    "duckdb_extensions()": "SELECT * FROM duckdb_extensions()",
    "duckdb_temporary_files": "SELECT * FROM duckdb_temporary_files()",
    "pragma_database_list": "SELECT * FROM pragma_database_list",
    "information_schema": "SELECT * FROM information_schema.tables",
    "getenv": "SELECT getenv('SAEGAP_DATABASE_URL')",
    "getenv in a lambda": "SELECT list_transform(['PGPASSWORD'], x -> getenv(x))",
    "current_setting": "SELECT current_setting('allowed_directories')",
    "current_setting s3": "SELECT current_setting('s3_secret_access_key')",
    "getvariable": "SELECT getvariable('x')",
    "query() delete": "SELECT * FROM query('DELETE FROM tokens RETURNING *')",
    "query() copy": "SELECT * FROM query('COPY tokens TO ''/tmp/saegap-leak.csv''')",
    "query() merge": "SELECT * FROM query('SELECT * FROM ducklake_merge_adjacent_files(''lake'')')",
    "query_table()": "SELECT * FROM query_table('tokens')",
    "json_execute_serialized_sql": "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "json_serialize_plan": "SELECT json_serialize_plan('SELECT * FROM read_csv(''/etc/passwd'')')",
    "write_log": "SELECT write_log('x', level := 'error')",
    "CTE shadowing": "WITH a AS (SELECT * FROM sqlite_master), sqlite_master AS (SELECT 1) SELECT * FROM a",
    "subquery": "SELECT (SELECT count(*) FROM read_text('/etc/passwd')) AS n",
    "DESCRIBE a scan": "DESCRIBE SELECT * FROM sqlite_scan('{jobs}', 'jobs')",
    "EXPLAIN ANALYZE a merge": "EXPLAIN ANALYZE SELECT * FROM ducklake_merge_adjacent_files('lake')",
    "lake macro call": "SELECT * FROM lake.snapshots()",
    "PRAGMA": "PRAGMA database_list",
    "SET": "SET enable_external_access = true",
    "ATTACH": "ATTACH '{jobs}' AS jobs (TYPE sqlite)",
}


@dataclass
class SecureStore:
    """A store for the module: its kind, the open Store, the environment that names it, its PostgreSQL DSN."""

    kind: str
    store: Store
    env: dict[str, str]
    pg_dsn: str | None = None
    outside: Path = field(default_factory=Path)

    def fill(self, template: str) -> str:
        config = self.store.config
        parquet = _one_parquet_file(self.store)
        return template.format(
            jobs=(config.data_dir / "jobs.sqlite").resolve(), catalog=config.sqlite_catalog_path(),
            outside=self.outside, pg="dbname=postgres host=127.0.0.1 user=postgres", parquet=parquet,
            data=config.data_dir.resolve(),
        )  # fmt: skip


def _one_parquet_file(store: Store) -> str:
    row = store.writer().execute("SELECT data_file FROM ducklake_list_files('lake', 'tokens') LIMIT 1").fetchone()
    return row[0] if row else "/nonexistent.parquet"


@pytest.fixture(scope="module", params=["sqlite", "postgres", "s3"])
def secure(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStore]:
    """One store per catalog kind for the whole module: two jobs' shards, a small read memory limit."""
    root = tmp_path_factory.mktemp(f"secure-{request.param}")
    outside = root / "outside.csv"
    outside.write_text("secret\nnot the store's\n")
    env = {"SAEGAP_DATA": str(root / "store"), "SAEGAP_READ_MEMORY_LIMIT": MEMORY_LIMIT}
    database = None
    patch = pytest.MonkeyPatch()
    if request.param != "sqlite":
        admin = request.getfixturevalue("postgres_admin")
        database = f"saegap_sec_{_SESSION_TOKEN}_{next(_databases)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        env["SAEGAP_DATABASE_URL"] = f"postgresql+psycopg://postgres:{CANARY}@127.0.0.1:5432/{database}"
        env["SAEGAP_DATA_PATH"] = str(root / "parquet")
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        env["SAEGAP_DATA_PATH"] = f"s3://{S3_BUCKET}/secure-{_SESSION_TOKEN}-{next(_databases)}/"
        env |= server.env(env["SAEGAP_DATA_PATH"])
    for key in ("SAEGAP_DATABASE_URL", "SAEGAP_DATA_PATH"):
        patch.delenv(key, raising=False)
    for key, value in env.items():
        patch.setenv(key, value)
    store = Store.open(StoreConfig.from_env())
    try:
        _tiny_shard(store)
        _tiny_shard(store)  # two shards: ducklake_merge_adjacent_files would have files to merge
        dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={database}" if database else None
        yield SecureStore(request.param, store, env, dsn, outside)
    finally:
        store.close()
        patch.undo()
        if database:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def store_state(secure: SecureStore) -> dict[str, str]:
    """A digest of every file of the store and of its catalog (see the module docstring)."""
    config = secure.store.config
    roots = [config.data_dir]
    if "://" not in config.lake_data_path():
        roots.append(Path(config.lake_data_path()))
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.endswith(("-wal", "-shm")) or path.name == "saegap.log":
                continue
            state[str(path)] = _sqlite_digest(path) if path.suffix == ".sqlite" else _file_digest(path)
    if secure.pg_dsn:
        state["postgres catalog and job tables"] = _postgres_digest(secure.pg_dsn)
    if config.uses_s3:
        objects = secure.store.writer().execute(
            "SELECT filename, md5(content) FROM read_blob(?) ORDER BY 1", [config.lake_data_path() + "**"]
        )
        state["s3 objects"] = hashlib.sha256(repr(objects.fetchall()).encode()).hexdigest()
    return state


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sqlite_digest(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()


def _postgres_digest(dsn: str) -> str:
    digest = hashlib.sha256()
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
            digest.update(f"{schema}.{table}:{sorted(map(repr, rows))}".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def unchanged(secure: SecureStore) -> Iterator[None]:
    before = store_state(secure)
    yield
    after = store_state(secure)
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    assert changed == [], f"the statement changed {changed}"


# --- the family, three ways in ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_is_refused_by_the_read_function(secure: SecureStore, name: str) -> None:
    with unchanged(secure), pytest.raises(WriteRefusedError):
        read.query(secure.fill(FAMILY[name]), store=secure.store, timeout_s=10)


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_is_refused_by_saegap_sql(
    secure: SecureStore, name: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    if secure.kind == "s3":
        pytest.skip("the CLI and the console run on the SQLite and PostgreSQL stores; S3 shares postgres' catalog")
    with unchanged(secure), caplog.at_level(logging.ERROR):
        assert main(["sql", secure.fill(FAMILY[name]), "--timeout", "10"]) == 2
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage(), errors
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def console(secure: SecureStore) -> Iterator[Callable[[str, float], list[str]]]:
    """The UI's SQL console on the module's store: run(sql, time limit) -> the error messages it shows."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import schema.store
    from tests.ui.conftest import APP, join_warm_up

    schema.store.forget_process_stores()
    st.cache_data.clear()
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.switch_page("views/sql_console.py").run()
    assert not app.exception, app.exception

    def run(sql: str, timeout_s: float = 10.0) -> list[str]:
        app.text_area[0].set_value(sql)
        app.number_input[0].set_value(timeout_s)
        app.button[0].click().run()
        assert not app.exception, app.exception
        return [error.value for error in app.error]

    yield run
    join_warm_up()  # the app's warm-up reads the module's store: done before it closes
    with contextlib.suppress(Exception):
        read.default_store().close()
    schema.store.forget_process_stores()
    st.cache_data.clear()


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_is_refused_by_the_ui_console(secure: SecureStore, console: Callable[..., list[str]], name: str) -> None:
    if secure.kind == "s3":
        pytest.skip("the CLI and the console run on the SQLite and PostgreSQL stores; S3 shares postgres' catalog")
    with unchanged(secure):
        errors = console(secure.fill(FAMILY[name]))
    assert len(errors) == 1 and errors[0].startswith("Refused") and "\n" not in errors[0], errors


def test_a_read_still_reads_on_every_path(
    secure: SecureStore, console: Callable[..., list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT count(*) AS n FROM tokens"
    with unchanged(secure):
        assert read.query(sql, store=secure.store).to_pylist() == [{"n": 6}]
        if secure.kind != "s3":
            assert main(["sql", sql, "--format", "csv"]) == 0
            assert capsys.readouterr().out.splitlines() == ['"n"', "6"]
            assert console(sql) == []


def test_the_checksum_sees_what_the_issue_saw(tmp_store: Store) -> None:
    """The old read path (a READ_ONLY attach, statement type checked only) let a SELECT write Parquet files;
    the same statement through the store's in-process read-only connection still does, and the digest sees it."""
    _tiny_shard(tmp_store)
    secure = SecureStore("sqlite", tmp_store, {})
    before = store_state(secure)
    cursor = tmp_store.reader().cursor()
    with contextlib.suppress(duckdb.Error):  # "Failed to delete flushed inlined data": after writing the files
        cursor.execute("USE lake").execute("SELECT * FROM ducklake_flush_inlined_data('lake')").fetchall()
    new = sorted(Path(key).name for key in store_state(secure).keys() - before.keys())
    assert new and all(name.endswith(".parquet") for name in new)
    with pytest.raises(WriteRefusedError):
        read.query("SELECT * FROM ducklake_flush_inlined_data('lake')", store=tmp_store)


# --- the read process itself: even a statement the allow-list would refuse finds nothing ------------


def _unchecked(secure: SecureStore, sql: str) -> list[dict[str, object]]:
    """Run `sql` in the store's read process WITHOUT the allow-list: what the process itself holds."""
    return read._run_in_read_process(sql, None, secure.store, 10.0, 10_000, 10**7).to_pylist()


def test_the_read_process_holds_no_selectable_credential(secure: SecureStore) -> None:
    paths = " ".join(str(row["path"]) for row in _unchecked(secure, "SELECT path FROM duckdb_databases()"))
    assert CANARY not in paths and "password" not in paths
    settings = {row["name"]: row["value"] for row in _unchecked(secure, "SELECT name, value FROM duckdb_settings()")}
    assert CANARY not in str(settings)
    assert settings["enable_external_access"] == "false" and settings["lock_configuration"] == "true"
    with pytest.raises(duckdb.CatalogException, match="getenv does not exist"):
        _unchecked(secure, "SELECT getenv('PGPASSWORD')")
    with pytest.raises(duckdb.PermissionException):
        _unchecked(secure, "SELECT * FROM read_text('/etc/passwd')")
    with pytest.raises(duckdb.Error):
        _unchecked(secure, "SET lock_configuration = false")


def test_the_read_process_environment_is_scrubbed(secure: SecureStore) -> None:
    read.query("SELECT 1", store=secure.store)
    pool = read._pools[secure.store]
    environ = Path(f"/proc/{pool._idle[0].popen.pid}/environ").read_bytes()
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    harmless = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "HOME", "PYTHONPATH"}
    assert names <= harmless | {"PYTHONDONTWRITEBYTECODE"}, names
    assert CANARY.encode() not in environ


def test_errors_do_not_show_the_password(secure: SecureStore, console: Callable[..., list[str]]) -> None:
    with pytest.raises(duckdb.Error) as raised:
        read.query("SELECT no_such_column FROM tokens", store=secure.store)
    assert CANARY not in str(raised.value)
    if secure.kind != "s3":
        assert all(CANARY not in error for error in console("SELECT no_such_column FROM tokens"))


# --- limits: each breach is one line naming the limit, and the next read works ----------------------

RECURSIVE = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
UNINTERRUPTIBLE = "SELECT levenshtein(repeat('a', 300000), repeat('b', 300000))"  # one call, minutes long
HUGE_STRING = "SELECT length(repeat('x', 2000000000)) AS n"  # 2 GB in one value: past the 1 GiB limit
HUGE_LIST = "SELECT len(range(500000000)) AS n"  # 4 GB in one list: this killed the whole process before
BIG_RESULT = "SELECT repeat('x', 30000000) AS s"


def _one_line_naming(error: BaseException, words: str) -> None:
    assert "\n" not in str(error) and words in str(error), str(error)


@pytest.mark.parametrize(
    ("sql", "seconds"), [(RECURSIVE, 1.0), (UNINTERRUPTIBLE, 1.0)], ids=["recursive CTE", "uninterruptible"]
)
def test_the_time_limit_stops_any_statement(secure: SecureStore, sql: str, seconds: float) -> None:
    start = time.monotonic()
    with unchanged(secure), pytest.raises(QueryTimeoutError) as raised:
        read.query(sql, store=secure.store, timeout_s=seconds)
    assert time.monotonic() - start < seconds + read._KILL_GRACE_S + 5
    _one_line_naming(raised.value, f"time limit (timeout_s={seconds:g})")
    assert read.query("SELECT 1 AS one", store=secure.store).to_pylist() == [{"one": 1}]


@pytest.mark.parametrize("sql", [HUGE_STRING, HUGE_LIST], ids=["huge string", "huge list"])
def test_the_memory_limit_stops_what_duckdb_does_not_count(secure: SecureStore, sql: str) -> None:
    with unchanged(secure), pytest.raises(MemoryLimitError) as raised:
        read.query(sql, store=secure.store, timeout_s=60)
    _one_line_naming(raised.value, f"read memory limit ({MEMORY_LIMIT}, SAEGAP_READ_MEMORY_LIMIT)")
    assert read.query("SELECT 1 AS one", store=secure.store).to_pylist() == [{"one": 1}]


def test_the_byte_cap_refuses_a_large_result(secure: SecureStore) -> None:
    with pytest.raises(ResultSizeError) as raised:
        read.query(BIG_RESULT, store=secure.store, max_bytes=10_000_000)
    _one_line_naming(raised.value, "max_bytes=10000000")
    assert read.query(BIG_RESULT, store=secure.store, max_bytes=40_000_000).num_rows == 1


def test_limits_through_saegap_sql(secure: SecureStore, caplog: pytest.LogCaptureFixture) -> None:
    if secure.kind == "s3":
        pytest.skip("the CLI and the console run on the SQLite and PostgreSQL stores")
    cases = [
        (["--timeout", "1", RECURSIVE], "time limit"),
        ([HUGE_STRING], "read memory limit"),
        (["--max-bytes", "1000000", BIG_RESULT], "max_bytes=1000000"),
        (["--max-rows", "5", "SELECT * FROM range(10)"], "max_rows=5"),
    ]
    for argv, words in cases:
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert main(["sql", *argv]) == 2
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        assert len(errors) == 1 and words in errors[0] and "\n" not in errors[0], errors


def test_limits_in_the_ui_console(secure: SecureStore, console: Callable[..., list[str]]) -> None:
    if secure.kind == "s3":
        pytest.skip("the CLI and the console run on the SQLite and PostgreSQL stores")
    over_64_mib = "SELECT " + ", ".join(f"repeat('{c}', 30000000) AS {c}" for c in "abc")  # the console's byte cap
    cases = [(RECURSIVE, 1.0, "time limit"), (HUGE_STRING, 30.0, "read memory limit"), (over_64_mib, 30.0, "max_bytes")]
    for sql, seconds, words in cases:
        with unchanged(secure):
            errors = console(sql, seconds)
        assert len(errors) == 1 and words in errors[0] and "\n" not in errors[0], errors


# --- the read processes: concurrency, replacement ------------------------------------------------------


def test_more_readers_than_processes_queue_and_all_answer(secure: SecureStore) -> None:
    if secure.kind != "sqlite":
        pytest.skip("pool behaviour does not depend on the catalog")
    from concurrent.futures import ThreadPoolExecutor

    config = secure.store.config
    limited = Store.open(config.model_copy(update={"read_processes": 2}))
    try:
        sql = "SELECT count(*) AS n FROM tokens, range(200000)"
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: read.query(sql, store=limited).to_pylist(), range(6)))
        assert results == [[{"n": 6 * 200000}]] * 6
        assert read._pools[limited]._started <= 2
    finally:
        limited.close()


def test_a_read_process_killed_while_idle_is_replaced(secure: SecureStore) -> None:
    if secure.kind != "sqlite":
        pytest.skip("pool behaviour does not depend on the catalog")
    read.query("SELECT 1", store=secure.store)
    for process in read._pools[secure.store]._idle:
        os.kill(process.popen.pid, 9)
        process.popen.wait()
    assert read.query("SELECT 2 AS two", store=secure.store).to_pylist() == [{"two": 2}]


# --- the allow-list ----------------------------------------------------------------------------------


def test_the_allow_list_was_reviewed_for_this_duckdb() -> None:
    """A DuckDB upgrade adds functions: review them (DENIED_FUNCTIONS, TABLE_FUNCTIONS), then bump REVIEWED_DUCKDB."""
    assert duckdb.__version__ == read.REVIEWED_DUCKDB


def test_no_extension_function_is_allowed() -> None:
    loaded = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for package, name in (*lake._EXTENSIONS, lake._HTTPFS):
        loaded.execute(f"LOAD '{lake.extension_path(package, name)}'")
    bare = {row[0] for row in duckdb.connect().execute("SELECT function_name FROM duckdb_functions()").fetchall()}
    added = {row[0] for row in loaded.execute("SELECT function_name FROM duckdb_functions()").fetchall()} - bare
    assert added and not added & (read.allowed_functions() | read.TABLE_FUNCTIONS)
    assert not read.DENIED_FUNCTIONS & read.allowed_functions()


def test_core_macros_on_the_allow_list_call_only_allowed_functions() -> None:
    """A macro runs its body unchecked: its body must pass the allow-list too (current_database() is a macro over
    "system".main.current_database(), the function of the same name: that qualification is the macro's own)."""
    rows = duckdb.connect().execute(
        "SELECT function_name, macro_definition FROM duckdb_functions() WHERE function_type = 'macro'"
    )
    checked = 0
    for name, definition in rows.fetchall():
        if name.lower() in read.allowed_functions() and definition:
            read.check_read_only("SELECT " + definition.replace('"system".main.', ""))
            checked += 1
    assert checked > 50


ALLOWED = [
    "WITH t AS (SELECT 2 AS x) SELECT x FROM t",
    "FROM runs SELECT layer",
    "SHOW TABLES",
    "DESCRIBE token_gaps",
    "SUMMARIZE runs",
    "EXPLAIN ANALYZE SELECT count(*) FROM tokens",
    "SELECT * FROM lake.main.tokens AT (VERSION => 1)",
    "SELECT layer, quantile_cont(kl, [0.5, 0.9]) FROM interventions JOIN runs USING (run_id) GROUP BY ALL",
    "SELECT row_number() OVER (PARTITION BY run_id ORDER BY kl) FROM interventions QUALIFY row_number() OVER () < 3",
    "SELECT * FROM (PIVOT interventions ON intervention IN ('sae', 'eps_random') USING avg(kl) GROUP BY run_id)",
    "SELECT [x * 2 FOR x IN range(3)], list_transform([1, 2], x -> x + 1), unnest([1, 2])",
    "SELECT * FROM range(3) t(x), generate_series(1, 2) s(y)",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT sum(n) FROM r",
    "SELECT regexp_extract(token_text, '\\w+'), strftime(now(), '%Y') FROM tokens LIMIT 1",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_reads_on_the_allow_list_are_accepted(sql: str) -> None:
    read.check_read_only(sql)
