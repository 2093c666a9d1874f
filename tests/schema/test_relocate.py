"""Stores that move: a data dir moved or copied elsewhere opens there and reads the same rows."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from schema import read
from schema.config import StoreConfig
from schema.errors import StoreOpenError
from schema.spec import JobSpec
from schema.store import Store
from tests.schema.records import VERSIONS, run_meta, synthetic_shard

POSITIONS = 512  # enough rows per shard that DuckLake writes Parquet files rather than inlining them
INTERVENTIONS = ("sae", "eps_random")
TOTALS = "SELECT count(*) AS n, sum(kl::DOUBLE) AS kl FROM interventions"


def _fill(config: StoreConfig) -> dict[str, float]:
    """A store with one job of two shards; returns the interventions' count and KL sum."""
    with Store.open(config) as store:
        spec = JobSpec(model="tiny", saes=["tiny-res/blocks.0"], tokens="tiny", sequences_per_shard=2)
        job_id = store.create_job(spec, VERSIONS)
        [run_id] = store.add_runs(job_id, [run_meta(0)])
        for shard_id, (start, end) in zip(store.add_shards(job_id, [(0, 2), (2, 4)]), [(0, 2), (2, 4)], strict=True):
            store.write_shard(job_id, shard_id, {run_id: synthetic_shard(start, end, POSITIONS, INTERVENTIONS)})
        totals = read.query(TOTALS, store=store).to_pylist()[0]
    assert totals["n"] == 4 * POSITIONS * len(INTERVENTIONS)
    return totals


def _recorded_data_path(catalog: Path) -> str:
    with sqlite3.connect(catalog) as conn:
        return conn.execute("SELECT value FROM ducklake_metadata WHERE key = 'data_path'").fetchone()[0]


def _parquet_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet"))


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_data_dir_opens_where_it_lies(tmp_path: Path, how: str) -> None:
    before = StoreConfig(data_dir=tmp_path / "made-here")
    totals = _fill(before)
    # The layout every store made so far has: the catalog records the absolute data path it was made at.
    assert _recorded_data_path(before.sqlite_catalog_path()) == before.lake_data_path()
    assert _parquet_files(before.data_dir / "lake")

    after = StoreConfig(data_dir=tmp_path / "elsewhere" / "now-here")
    after.data_dir.parent.mkdir()
    (shutil.move if how == "move" else shutil.copytree)(before.data_dir, after.data_dir)
    with Store.open(after) as store:
        assert read.query(TOTALS, store=store).to_pylist()[0] == totals
        assert [job.id for job in store.list_jobs()] == [1]
        shard_id = store.add_shards(1, [(4, 6)])[0]  # and it takes new records, under its new location
        store.write_shard(1, shard_id, {1: synthetic_shard(4, 6, POSITIONS, INTERVENTIONS)})
        assert read.query(TOTALS, store=store).to_pylist()[0]["n"] == totals["n"] * 3 // 2
    if how == "copy":  # the original is untouched by its copy
        with Store.open(before) as store:
            assert read.query(TOTALS, store=store).to_pylist()[0] == totals


def test_a_store_moved_without_its_parquet_names_the_path_it_expected(tmp_path: Path) -> None:
    before = StoreConfig(data_dir=tmp_path / "made-here")
    _fill(before)
    after = StoreConfig(data_dir=tmp_path / "catalog-only")
    after.data_dir.mkdir()
    for name in ("jobs.sqlite", "lake.sqlite"):  # the Parquet under lake/ left behind (and then removed)
        shutil.move(before.data_dir / name, after.data_dir / name)
    shutil.rmtree(before.data_dir)
    with pytest.raises(StoreOpenError, match="expected under " + str(after.data_dir / "lake")):
        Store.open(after)


def test_moved_parquet_with_its_new_data_path_opens(tmp_path: Path, postgres_database: str) -> None:
    """PostgreSQL catalog, local Parquet: move the Parquet dir and point SAEGAP_DATA_PATH at it."""
    before = StoreConfig(data_dir=tmp_path / "d", database_url=postgres_database, data_path=str(tmp_path / "pq"))
    totals = _fill(before)
    shutil.move(tmp_path / "pq", tmp_path / "pq-moved")
    after = before.model_copy(update={"data_path": str(tmp_path / "pq-moved")})
    with Store.open(after) as store:
        assert read.query(TOTALS, store=store).to_pylist()[0] == totals
    wrong = before.model_copy(update={"data_path": str(tmp_path / "nowhere")})
    with pytest.raises(StoreOpenError, match="expected under " + str(tmp_path / "nowhere")):
        Store.open(wrong)


def test_an_unreadable_catalog_is_one_store_error_naming_it(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path / "store")
    config.data_dir.mkdir()
    config.sqlite_catalog_path().write_bytes(b"not a sqlite file" * 100)
    with pytest.raises(StoreOpenError, match=str(config.sqlite_catalog_path())):
        Store.open(config)
