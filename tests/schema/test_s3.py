"""A store whose Parquet files live on a real S3 server (SeaweedFS), configured from the environment alone
as README describes: the CLI reads it, the secret never reaches a reader, bad S3 settings fail at open."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from saegap.cli import main
from schema import lake, read
from schema.config import StoreConfig
from schema.errors import ObjectStoreError, StoreError
from schema.store import Store
from tests.s3 import server as s3
from tests.schema.conftest import S3_BUCKET
from tests.schema.records import synthetic_shard
from tests.schema.test_read import _tiny_shard


@pytest.fixture
def s3_env(s3_server: s3.S3Server, postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SAEGAP_DATABASE_URL, SAEGAP_DATA_PATH=s3://... and AWS_*: the whole configuration; returns the data path."""
    data_path = f"s3://{S3_BUCKET}/{tmp_path.name}/lake/"
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "unused"))
    monkeypatch.setenv("SAEGAP_DATABASE_URL", postgres_database)
    for key, value in s3_server.env(data_path).items():
        monkeypatch.setenv(key, value)
    return data_path


def _objects(server: s3.S3Server, prefix: str) -> list[str]:
    """Object keys under prefix, listed by a plain DuckDB with its own secret (not the store's code)."""
    with duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}) as conn:
        conn.execute(f"LOAD '{lake.extension_path('duckdb_extension_httpfs', 'httpfs')}'")
        lake.create_s3_secret(conn, server.env(prefix))
        return [row[0] for row in conn.execute("SELECT file FROM glob(?)", [f"{prefix}**"]).fetchall()]


def test_cli_reads_an_s3_store_configured_by_env(s3_env: str, s3_server: s3.S3Server, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with Store.open() as store:
        job_id, run_id, _ = _tiny_shard(store)
        (big,) = store.add_shards(job_id, [(1, 3)])  # past DuckLake's inlining limit: Parquet files
        store.write_shard(job_id, big, {run_id: synthetic_shard(1, 3, 64, ("sae", "eps_random"), 0.0)})
    assert StoreConfig.from_env().uses_s3 and not (tmp_path / "unused").exists()  # nothing local
    assert any(key.endswith(".parquet") for key in _objects(s3_server, s3_env))  # the records are on S3
    sql = "SELECT position, kl_gap FROM token_gaps WHERE sequence = 0 ORDER BY position"
    assert main(["sql", sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"position": 1, "kl_gap": 0.375}, {"position": 2, "kl_gap": 1.0}]
    out = tmp_path / "out.duckdb"
    assert main(["export", "--to", str(out), "--job", str(job_id)]) == 0
    with duckdb.connect(str(out), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM tokens").fetchone() == (3 + 2 * 64,)
    assert main(["report", "sae_metrics", "--job", str(job_id), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)


def _read_or_refused(sql: str, store: Store) -> list[dict]:
    """The rows a reader gets, or none when the read path refuses the statement (as good here)."""
    try:
        return read.query(sql, store=store).to_pylist()
    except StoreError:
        return []


def test_the_s3_secret_is_redacted_for_readers(s3_env: str) -> None:
    with Store.open() as store:
        _tiny_shard(store)
        shown = _read_or_refused("SELECT secret_string FROM duckdb_secrets()", store)
        assert all(s3.SECRET not in row["secret_string"] for row in shown)
        assert all("secret=redacted" in row["secret_string"] for row in shown)
        with pytest.raises((StoreError, duckdb.Error)):
            read.query("SELECT * FROM duckdb_secrets(redact := false)", store=store)
        setting = _read_or_refused("SELECT current_setting('s3_secret_access_key') AS s", store)
        assert s3.SECRET not in str(setting)  # the secret is not in httpfs's env-filled settings either
        assert s3.SECRET not in str(_read_or_refused("SELECT * FROM duckdb_settings()", store))


BAD_SETTINGS = {
    "missing bucket": ({"SAEGAP_DATA_PATH": "s3://no-such-bucket/lake/"}, "NoSuchBucket"),
    "wrong secret": ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "403"),
    "unreachable endpoint": ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "connect"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_s3_settings_fail_at_open_and_write_nothing(
    case: str, s3_env: str, s3_server: s3.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes, reason = BAD_SETTINGS[case]
    for key, value in changes.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ObjectStoreError, match="SAEGAP_DATA_PATH s3://") as raised:
        Store.open()
    assert reason.lower() in str(raised.value).lower() and "\n" not in str(raised.value)
    assert _objects(s3_server, s3_env) == []  # nothing reached the bucket
    assert main(["sql", "SELECT 1"]) == 2  # the CLI says the same in one line instead of a traceback
