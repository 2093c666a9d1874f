"""The rollups sequence_sums, kl_bins and token_sums, and tokens' per-intervention metrics: exact rows from a
hand-made shard, replaced on a retried shard, filled once on open for a lake from before them."""

from __future__ import annotations

import pyarrow as pa

from schema import read
from schema.relations import KL_BIN_COUNT, TOKEN_METRICS_SCHEMA
from schema.store import Store
from tests.schema.test_read import _tiny_shard

SEQUENCE_SUMS = (
    "SELECT sequence, intervention, n, n_sample0, kl_sum, loss_delta_n, loss_delta_sum, loss_n, loss_sum"
    " FROM sequence_sums ORDER BY sequence, intervention"
)
KL_BINS = "SELECT intervention, bin, n, n_sample0, kl_min, kl_max FROM kl_bins ORDER BY intervention, bin"

# _tiny_shard's interventions: sae kl 0.5 (pos 1), 1.0 (pos 2); eps_random kl 0.125 (pos 1),
# 0.0 and 9.0 (pos 2, samples 0 and 1); loss_delta (loss) only at position 1: 0.75 (2.75) sae, 0.25 (2.25) eps_random.
EXPECTED_SEQUENCE_SUMS = [
    (0, "eps_random", 3, 2, 9.125, 1, 0.25, 1, 2.25),  # both draws of position 2 summed, one counted as a token
    (0, "sae", 2, 2, 1.5, 1, 0.75, 1, 2.75),
]
# bin = floor((log10(kl) + 6) * 40): 0.125 -> 203, 9.0 -> 278, 0.5 -> 227, 1.0 -> 240; kl 0 clamps into 0
EXPECTED_KL_BINS = [
    ("eps_random", 0, 1, 1, 0.0, 0.0),
    ("eps_random", 203, 1, 1, 0.125, 0.125),
    ("eps_random", 278, 1, 0, 9.0, 9.0),  # sample 1 only
    ("sae", 227, 1, 1, 0.5, 0.5),
    ("sae", 240, 1, 1, 1.0, 1.0),
]


TOKEN_SUMS = (
    "SELECT n_tokens, clean_loss_n, clean_loss_sum, l0_sum, l1_sum, eps_sq_sum, cos_sim_sum, l2_ratio_n, l2_ratio_sum"
    " FROM token_sums"
)
# _tiny_shard's intervened tokens: positions 1 (clean loss 2.0, l0 12, l1 6.5, eps 1, cos 0.75, norm 4,
# sae_norm 3.5) and 2 (no clean loss, l0 20, l1 8, eps 2, cos 0.5, norm 5, sae_norm 4); BOS is not counted.
EXPECTED_TOKEN_SUMS = [(2, 1, 2.0, 32.0, 14.5, 5.0, 1.25, 2, 3.5 / 4 + 4 / 5)]

# tokens' per-intervention columns: sample 0 only (position 2's second eps_random draw, kl 9.0, is not one)
TOKEN_METRICS = (
    "SELECT position, kl_sae, loss_delta_sae, kl_eps_random, loss_delta_eps_random, kl_zero_ablation FROM tokens"
)
EXPECTED_TOKEN_METRICS = [
    (0, None, None, None, None, None),  # BOS: not intervened, no record
    (1, 0.5, 0.75, 0.125, 0.25, None),  # zero_ablation was not run
    (2, 1.0, None, 0.0, None, None),  # last position: no next token, no loss
]


def rows(sql: str, store: Store) -> list[tuple]:
    return [tuple(row.values()) for row in read.query(sql, store=store).to_pylist()]


def test_rollups_exact_rows(tmp_store: Store) -> None:
    _, run_id, shard_id = _tiny_shard(tmp_store)
    assert rows(SEQUENCE_SUMS, tmp_store) == EXPECTED_SEQUENCE_SUMS
    assert rows(KL_BINS, tmp_store) == EXPECTED_KL_BINS
    assert rows(TOKEN_SUMS, tmp_store) == EXPECTED_TOKEN_SUMS
    for table in ("sequence_sums", "kl_bins", "token_sums"):
        assert rows(f"SELECT DISTINCT run_id, shard_id FROM {table}", tmp_store) == [(run_id, shard_id)]


def test_rollups_agree_with_the_records(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    totals = "SELECT sum(n) AS n, sum(n_sample0) AS n0 FROM {table}"
    records = rows("SELECT count(*), count(*) FILTER (WHERE sample = 0) FROM interventions", tmp_store)
    for table in ("sequence_sums", "kl_bins"):
        assert rows(totals.format(table=table), tmp_store) == records


def test_retried_shard_replaces_its_rollup_rows_and_token_metrics(tmp_store: Store) -> None:
    job_id, run_id, shard_id = _tiny_shard(tmp_store)
    tokens = read.query("SELECT * EXCLUDE (run_id, shard_id) FROM tokens", store=tmp_store)
    retry = pa.Table.from_pylist(
        [{"sequence": 0, "position": 1, "intervention": "sae", "sample": 0, "kl": 500.0, "loss": 3.0,
          "loss_delta": 1.0}],
    )  # fmt: skip
    tmp_store.write_shard(job_id, shard_id, {run_id: (tokens, retry)})
    assert rows(SEQUENCE_SUMS, tmp_store) == [(0, "sae", 1, 1, 500.0, 1, 1.0, 1, 3.0)]
    assert rows(KL_BINS, tmp_store) == [("sae", KL_BIN_COUNT - 1, 1, 1, 500.0, 500.0)]  # above 1e2: last bin
    assert rows(f"{TOKEN_METRICS} ORDER BY position", tmp_store) == [  # tokens' metrics replaced too
        (0, None, None, None, None, None),
        (1, 500.0, 1.0, None, None, None),
        (2, None, None, None, None, None),
    ]


def test_rollups_filled_once_on_open_for_an_older_lake(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    for table in ("sequence_sums", "kl_bins", "token_sums"):  # a lake from before the rollups
        tmp_store.execute_write(f"DROP TABLE {table}")
    with Store.open(tmp_store.config) as reopened:
        assert rows(SEQUENCE_SUMS, reopened) == EXPECTED_SEQUENCE_SUMS
        assert rows(KL_BINS, reopened) == EXPECTED_KL_BINS
        assert rows(TOKEN_SUMS, reopened) == EXPECTED_TOKEN_SUMS
    with Store.open(tmp_store.config) as again:  # filled once: a second open adds nothing
        assert rows(KL_BINS, again) == EXPECTED_KL_BINS


def test_tokens_carry_each_interventions_sample0_metrics(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    assert rows(f"{TOKEN_METRICS} ORDER BY position", tmp_store) == EXPECTED_TOKEN_METRICS


def test_token_metrics_added_once_on_open_for_an_older_lake(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    metrics = ", ".join(TOKEN_METRICS_SCHEMA.names)
    for statement in (  # a lake from before tokens carried the metrics
        f"CREATE TABLE old_tokens AS SELECT * EXCLUDE ({metrics}) FROM tokens",
        "DROP TABLE tokens",
        "ALTER TABLE old_tokens RENAME TO tokens",
    ):
        tmp_store.execute_write(statement)
    assert not _has_column(tmp_store, "kl_sae")
    with Store.open(tmp_store.config) as reopened:
        assert rows(f"{TOKEN_METRICS} ORDER BY position", reopened) == EXPECTED_TOKEN_METRICS
        assert rows("SELECT position, kl_gap FROM token_gaps ORDER BY position", reopened) == [(1, 0.375), (2, 1.0)]


def _has_column(store: Store, name: str) -> bool:
    return name in read.query("DESCRIBE tokens", store=store).column("column_name").to_pylist()
