"""Alembic migrations of the job database, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from schema import migrations
from schema.config import StoreConfig
from schema.store import Store, job_engine
from schema.tables import Base

HEAD_REVISION = max(p.stem.split("_")[0] for p in (Path(migrations.__file__).parent / "versions").glob("0*.py"))


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_matches_the_models(store_config: StoreConfig) -> None:
    store_config.prepare_local_dirs()
    engine = job_engine(store_config)
    migrations.upgrade(engine)
    assert migrations.current_revision(engine) == HEAD_REVISION
    assert _tables(engine) == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        assert {c["name"] for c in inspect(engine).get_columns(name)} == {c.name for c in table.columns}, name
    engine.dispose()


def test_upgrade_from_previous_revision_keeps_rows_and_round_trips(store_config: StoreConfig) -> None:
    store_config.prepare_local_dirs()
    engine = job_engine(store_config)
    migrations.upgrade(engine, "0001")
    assert _tables(engine) == {"jobs", "runs", "shards"}
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (spec, status, seed, versions, created_at, shards_total, shards_done, tokens_done)"
            " VALUES ('{}', 'queued', 3, '{}', CURRENT_TIMESTAMP, 0, 0, 0)"
        ))  # fmt: skip
    migrations.upgrade(engine)
    assert _tables(engine) == set(Base.metadata.tables)
    migrations.downgrade(engine, "0001")
    assert _tables(engine) == {"jobs", "runs", "shards"}
    with Store.open(store_config) as store:  # open migrates back to head
        assert migrations.current_revision(store.engine) == HEAD_REVISION
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT seed FROM jobs")).scalar_one() == 3
    engine.dispose()
