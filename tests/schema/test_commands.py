"""`saegap sql` and `saegap export` end to end, on a local store named by SAEGAP_DATA."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest

from saegap.cli import main
from schema.config import StoreConfig
from schema.relations import RECORD_TABLES
from schema.store import Store
from tests.schema.test_read import _tiny_shard


@pytest.fixture
def env_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, int]:
    """A store at $SAEGAP_DATA holding the tiny shard of test_read; yields it and its job id."""
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("SAEGAP_DATABASE_URL", raising=False)
    monkeypatch.delenv("SAEGAP_DATA_PATH", raising=False)
    store = Store.open(StoreConfig.from_env())
    job_id, _, _ = _tiny_shard(store)
    yield store, job_id
    store.close()


def test_sql_reads_in_each_format(env_store, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT position, kl_gap FROM token_gaps ORDER BY position"
    assert main(["sql", sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"position": 1, "kl_gap": 0.375}, {"position": 2, "kl_gap": 1.0}]
    assert main(["sql", sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"position","kl_gap"', "1,0.375", "2,1"]
    assert main(["sql", sql]) == 0
    assert capsys.readouterr().out.splitlines() == ["position | kl_gap", "---------+-------", "1        | 0.375",
                                                    "2        | 1.0", "(2 rows)"]  # fmt: skip


def test_sql_refuses_writes_without_flag(env_store, capsys, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["sql", "DELETE FROM interventions"]) == 2
    assert "add --write" in caplog.text
    assert main(["sql", "SELECT count(*) AS n FROM interventions", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == [{"n": 5}]
    assert main(["sql", "DELETE FROM interventions WHERE sample = 1", "--write"]) == 0
    capsys.readouterr()
    assert main(["sql", "SELECT count(*) AS n FROM interventions", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 4}]


def test_export_duckdb_file_opens_without_saegap(env_store, tmp_path: Path) -> None:
    _, job_id = env_store
    out = tmp_path / "out.duckdb"
    assert main(["export", "--to", str(out), "--job", str(job_id)]) == 0
    with duckdb.connect(str(out), read_only=True) as conn:  # a plain DuckDB, no extension loaded
        assert conn.sql("SELECT position, kl_gap FROM token_gaps ORDER BY 1").fetchall() == [(1, 0.375), (2, 1.0)]
        assert conn.sql("SELECT count(*) FROM token_records").fetchone() == (5,)
        assert conn.sql("SELECT job_id, status FROM jobs").fetchall() == [(job_id, "queued")]
    assert main(["export", "--to", str(out)]) == 2  # never overwrites


def test_export_parquet_with_views_script(env_store, tmp_path: Path) -> None:
    directory = tmp_path / "parquet"
    assert main(["export", "--parquet", str(directory)]) == 0
    tables = (*RECORD_TABLES, "jobs")  # every lake table (rollups included) and the job table
    assert {p.name for p in directory.iterdir()} == {f"{t}.parquet" for t in tables} | {"views.sql"}
    cwd = os.getcwd()
    os.chdir(directory)  # views.sql names the files relative to DIR, as `duckdb -init views.sql` run there would
    try:
        with duckdb.connect() as conn:
            conn.execute((directory / "views.sql").read_text())
            assert conn.sql("SELECT position, kl_gap FROM token_gaps ORDER BY 1").fetchall() == [(1, 0.375), (2, 1.0)]
    finally:
        os.chdir(cwd)


def test_export_unknown_job_is_refused(env_store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["export", "--to", str(tmp_path / "x.duckdb"), "--job", "999"]) == 2
    assert "unknown job id 999" in caplog.text
    assert not (tmp_path / "x.duckdb").exists()
