"""A lake written before issue 16's columns (the error-part interventions on tokens, the error fit
on runs) opens and gains them as NULL columns, its own values kept."""

from __future__ import annotations

from schema import read
from schema.relations import RUN_COLUMNS_ADDED
from schema.spec import ERROR_PART_NAMES
from schema.store import Store
from tests.schema.test_read import _tiny_shard

_NEW_TOKEN_COLUMNS = [f"{metric}_{name}" for name in ERROR_PART_NAMES for metric in ("kl", "loss_delta")]


def _columns(store: Store, table: str) -> list[str]:
    return read.query(f"DESCRIBE {table}", store=store).column("column_name").to_pylist()


def test_lake_from_before_the_error_parts_gains_their_columns(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    before = read.query("SELECT position, kl_sae, kl_eps_random FROM tokens ORDER BY position", store=tmp_store)
    for column in [*_NEW_TOKEN_COLUMNS]:
        tmp_store.execute_write(f"ALTER TABLE tokens DROP COLUMN {column}")
    for column in RUN_COLUMNS_ADDED:
        tmp_store.execute_write(f"ALTER TABLE runs DROP COLUMN {column}")
    assert not set(_NEW_TOKEN_COLUMNS) & set(_columns(tmp_store, "tokens"))
    with Store.open(tmp_store.config) as reopened:
        assert set(_NEW_TOKEN_COLUMNS) <= set(_columns(reopened, "tokens"))
        assert set(RUN_COLUMNS_ADDED) <= set(_columns(reopened, "runs"))
        after = read.query("SELECT position, kl_sae, kl_eps_random FROM tokens ORDER BY position", store=reopened)
        assert after.to_pylist() == before.to_pylist()
        nulls = read.query(f"SELECT count({_NEW_TOKEN_COLUMNS[0]}) AS n FROM tokens", store=reopened)
        assert nulls.column("n").to_pylist() == [0]
        runs = read.query(f"SELECT {', '.join(RUN_COLUMNS_ADDED)} FROM runs", store=reopened).to_pylist()
        assert runs and all(value is None for row in runs for value in row.values())
        gaps = read.query("SELECT count(*) AS n FROM token_gaps", store=reopened)
        assert gaps.column("n").to_pylist()[0] > 0


def test_lake_from_before_amplification_gains_an_empty_amplification_sums(tmp_store: Store) -> None:
    """amplification_sums comes from the engine, not from the lake's tables: an older lake gets it empty, and a
    shard written afterwards without amplification (a joint run) leaves it empty."""
    _tiny_shard(tmp_store)
    tmp_store.execute_write("DROP TABLE amplification_sums")
    assert "amplification_sums" not in read.query("SHOW TABLES", store=tmp_store).column("name").to_pylist()
    with Store.open(tmp_store.config) as reopened:
        assert _columns(reopened, "amplification_sums") == ["run_id", "shard_id", "sequence", "intervention", "layer",
                                                            "n", "r_sum", "r_sq_sum"]  # fmt: skip
        assert read.query("SELECT count(*) AS n FROM amplification_sums", store=reopened).to_pylist() == [{"n": 0}]
        _tiny_shard(reopened)
        assert read.query("SELECT count(*) AS n FROM amplification_sums", store=reopened).to_pylist() == [{"n": 0}]
