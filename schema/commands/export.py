"""Export the results store to a portable DuckDB file or to Parquet files.

--to out.duckdb writes tables runs, tokens, interventions, jobs and the views
token_records, token_gaps into one DuckDB file (open it with the plain duckdb CLI).
--parquet DIR writes one Parquet file per table plus views.sql, which defines the
tables as views over those files and the record views:  duckdb -init DIR/views.sql
--job N exports one job only. The export reads one lake snapshot.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pyarrow as pa

from schema import lake
from schema.errors import StoreError
from schema.relations import RECORD_TABLES, VIEW_DDL
from schema.store import Store

log = logging.getLogger(__name__)
JOBS_SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("status", pa.string()), ("seed", pa.int64()), ("spec", pa.string()),
     ("versions", pa.string()), ("created_at", pa.timestamp("us", "UTC")), ("finished_at", pa.timestamp("us", "UTC"))]
)  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", type=Path, metavar="OUT.duckdb", help="write one portable DuckDB file")
    target.add_argument("--parquet", type=Path, metavar="DIR", help="write Parquet files and views.sql")
    parser.add_argument("--job", type=int, help="export only this job")


def run(args: argparse.Namespace) -> int:
    try:
        with Store.open() as store:
            if args.to is not None:
                export_duckdb(store, args.to, args.job)
            else:
                export_parquet(store, args.parquet, args.job)
    except (StoreError, FileExistsError) as error:
        log.error("%s", error)
        return 2
    log.info("exported %s", args.to or args.parquet)
    return 0


def _selects(store: Store, job_id: int | None) -> dict[str, str]:
    """SELECT per exported table, restricted to one job when asked (an unknown job raises)."""
    if job_id is None:
        return {table: f"SELECT * FROM lake.{table}" for table in RECORD_TABLES}
    store.get_job(job_id)
    runs_of_job = f"IN (SELECT run_id FROM lake.runs WHERE job_id = {int(job_id)})"
    return {
        table: f"SELECT * FROM lake.{table} WHERE {_run_key(store, table)} {runs_of_job}" for table in RECORD_TABLES
    }


def _run_key(store: Store, table: str) -> str:
    """The column naming a table's run: run_id, or run_a for rollups over pairs of runs (both runs of a pair
    belong to one job, so one side decides)."""
    columns = {row[0] for row in store.reader().execute(f"DESCRIBE lake.{table}").fetchall()}
    return "run_id" if "run_id" in columns else "run_a"


def jobs_table(store: Store, job_id: int | None) -> pa.Table:
    """The job rows (spec and versions as JSON text) for the export."""
    jobs = [store.get_job(job_id)] if job_id is not None else store.list_jobs(limit=1_000_000)
    return pa.Table.from_pylist(
        schema=JOBS_SCHEMA,
        mapping=[{"job_id": j.id, "status": j.status, "seed": j.seed, "spec": j.spec.model_dump_json(),
          "versions": json.dumps(j.versions), "created_at": j.created_at, "finished_at": j.finished_at} for j in jobs]
    )  # fmt: skip


def export_duckdb(store: Store, out: Path, job_id: int | None) -> None:
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another name")
    selects, jobs = _selects(store, job_id), jobs_table(store, job_id)  # validates the job before any file exists
    conn = lake.connect(store.config, read_only=True)
    try:
        conn.execute("BEGIN TRANSACTION")  # one snapshot for every table
        conn.execute(f"ATTACH '{out}' AS out")
        for table, select in selects.items():
            conn.execute(f"CREATE TABLE out.{table} AS {select}")
        conn.register("export_jobs", jobs)
        conn.execute("CREATE TABLE out.jobs AS SELECT * FROM export_jobs")
        conn.execute("USE out")
        for ddl in VIEW_DDL:
            conn.execute(ddl)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        out.unlink(missing_ok=True)  # no half-written export left behind
        raise
    conn.close()


def export_parquet(store: Store, directory: Path, job_id: int | None) -> None:
    selects, jobs = _selects(store, job_id), jobs_table(store, job_id)
    directory.mkdir(parents=True, exist_ok=True)
    conn = lake.connect(store.config, read_only=True)
    try:
        conn.execute("BEGIN TRANSACTION")
        for table, select in selects.items():
            conn.execute(f"COPY ({select}) TO '{directory / table}.parquet' (FORMAT parquet, COMPRESSION zstd)")
        conn.register("export_jobs", jobs)
        conn.execute(f"COPY (SELECT * FROM export_jobs) TO '{directory / 'jobs'}.parquet' (FORMAT parquet)")
        conn.execute("COMMIT")
    finally:
        conn.close()
    (directory / "views.sql").write_text(_views_script())


def _views_script() -> str:
    """Views over the Parquet files (relative paths: run duckdb from DIR) and the record views."""
    tables = [f"CREATE OR REPLACE VIEW {t} AS FROM '{t}.parquet';" for t in (*RECORD_TABLES, "jobs")]
    return "\n".join(tables + [ddl.strip() + ";" for ddl in VIEW_DDL]) + "\n"
