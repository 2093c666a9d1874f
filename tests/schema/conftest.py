"""Store fixtures for the schema tests: every store test runs on both catalog families.

`store_config` is parametrised over a local store (SQLite files) and a PostgreSQL one
(real server at 127.0.0.1:5432, user postgres, trust auth). Each PostgreSQL test gets
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


@pytest.fixture(params=["sqlite", "postgres"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    if request.param == "sqlite":
        return StoreConfig(data_dir=tmp_path / "store")
    url = request.getfixturevalue("postgres_database")
    return StoreConfig(data_dir=tmp_path / "store", database_url=url, data_path=str(tmp_path / "parquet"))


@pytest.fixture
def store(store_config: StoreConfig) -> Iterator[Store]:
    opened = Store.open(store_config)
    yield opened
    opened.close()
