"""The rollups (sequence_sums, kl_bins, token_sums, loss_bins, cos_bins, gap_sums, gap_pair_sums, gap_signs) and tokens'
per-intervention metrics: exact rows from a hand-made shard, replaced on a retried shard, filled once on open for
a lake from before them."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from schema import read
from schema.relations import KL_BIN_COUNT, LOSS_BINS_SELECT, TOKEN_METRICS_SCHEMA
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


# Sample-0 loss_delta at position 1: sae 0.75 -> bin floor((log10(0.75) + 6) * 40) = 235, eps_random 0.25 -> 215.
LOSS_BINS = "SELECT intervention, bin, n, loss_delta_min, loss_delta_max, loss_delta_sum FROM loss_bins ORDER BY ALL"
EXPECTED_LOSS_BINS = [("eps_random", 215, 1, 0.25, 0.25, 0.25), ("sae", 235, 1, 0.75, 0.75, 0.75)]

# Every draw at an intervened token, binned on 1 - cos_sim: position 1 (cos 0.75 -> 0.25 -> bin 215), position 2
# (cos 0.5 -> 0.5 -> bin 227) with both eps_random draws (kl 0 and 9).
COS_BINS = (
    "SELECT intervention, bin, n, n_sample0, kl_sum, kl_sq_sum, cos_sim_sum, cos_sim_min, cos_sim_max"
    " FROM cos_bins ORDER BY ALL"
)
EXPECTED_COS_BINS = [
    ("eps_random", 215, 1, 1, 0.125, 0.015625, 0.75, 0.75, 0.75),
    ("eps_random", 227, 2, 1, 9.0, 81.0, 1.0, 0.5, 0.5),
    ("sae", 215, 1, 1, 0.5, 0.25, 0.75, 0.75, 0.75),
    ("sae", 227, 1, 1, 1.0, 1.0, 0.5, 0.5, 0.5),
]

# Gaps kl_sae - kl_eps_random (sample 0): 0.375 at position 1 (l0 12, norm 4, eps 1, cos 0.75), 1.0 at 2 (l0 20,
# norm 5, eps 2, cos 0.5). Sums: n, y, y^2, then x, x^2, x*y for position, cos_sim, l0, norm, eps.
GAP_SUMS = (
    "SELECT n, sy, syy, sx_position, sxx_position, sxy_position, sx_cos_sim, sxx_cos_sim, sxy_cos_sim,"
    " sx_l0, sxx_l0, sxy_l0, sx_norm, sxx_norm, sxy_norm, sx_eps, sxx_eps, sxy_eps FROM gap_sums"
)
EXPECTED_GAP_SUMS = [
    (2, 1.375, 1.140625, 3.0, 5.0, 2.375, 1.25, 0.8125, 0.78125, 32.0, 544.0, 24.5, 9.0, 41.0, 6.5, 3.0, 5.0, 2.375)
]
# One run: its pair with itself over both tokens.
GAP_PAIR_SUMS = "SELECT run_a = run_b, n, sa, sb, saa, sbb, sab FROM gap_pair_sums"
EXPECTED_GAP_PAIR_SUMS = [(True, 2, 1.375, 1.375, 1.140625, 1.140625, 1.140625)]
# Both gapped tokens: kl_sae 0.5 > kl_eps_random 0.125 (position 1), 1.0 > 0.0 (position 2).
GAP_SIGNS = "SELECT n, n_sae_above FROM gap_signs"
EXPECTED_GAP_SIGNS = [(2, 2)]

# Rollup -> (its rows as read, the tiny shard's expected rows)
NEW_ROLLUPS = {
    "loss_bins": (LOSS_BINS, EXPECTED_LOSS_BINS),
    "cos_bins": (COS_BINS, EXPECTED_COS_BINS),
    "gap_sums": (GAP_SUMS, EXPECTED_GAP_SUMS),
    "gap_pair_sums": (GAP_PAIR_SUMS, EXPECTED_GAP_PAIR_SUMS),
    "gap_signs": (GAP_SIGNS, EXPECTED_GAP_SIGNS),
}


def rows(sql: str, store: Store) -> list[tuple]:
    return [tuple(row.values()) for row in read.query(sql, store=store).to_pylist()]


def test_rollups_exact_rows(tmp_store: Store) -> None:
    _, run_id, shard_id = _tiny_shard(tmp_store)
    assert rows(SEQUENCE_SUMS, tmp_store) == EXPECTED_SEQUENCE_SUMS
    assert rows(KL_BINS, tmp_store) == EXPECTED_KL_BINS
    assert rows(TOKEN_SUMS, tmp_store) == EXPECTED_TOKEN_SUMS
    for table, (sql, expected) in NEW_ROLLUPS.items():
        assert rows(sql, tmp_store) == expected, table
    for table in ("sequence_sums", "kl_bins", "token_sums", "loss_bins", "cos_bins", "gap_sums", "gap_signs"):
        assert rows(f"SELECT DISTINCT run_id, shard_id FROM {table}", tmp_store) == [(run_id, shard_id)]
    assert rows("SELECT DISTINCT run_a, run_b, shard_id FROM gap_pair_sums", tmp_store) == [(run_id, run_id, shard_id)]


def test_loss_bins_sign_and_clamp() -> None:
    """Negative loss increases get bins -1 - log_bin(|x|); |x| below 1e-6 (zero too) bin 0 or -1; above 1e2 the last."""
    values = "(VALUES (-0.25), (0.0), (-1e-9), (1e-9), (1e3), (-1e3)) v(loss_delta)"
    source = f"(SELECT 1 AS run_id, 1 AS shard_id, 'sae' AS intervention, 0 AS sample, loss_delta FROM {values})"
    got = duckdb.sql(LOSS_BINS_SELECT.format(interventions=source)).fetchall()
    assert sorted((row[3], row[4]) for row in got) == [
        (-KL_BIN_COUNT, 1),  # -1e3
        (-216, 1),  # -0.25: -1 - 215
        (-1, 1),  # -1e-9
        (0, 2),  # 0 and 1e-9
        (KL_BIN_COUNT - 1, 1),  # 1e3
    ]


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
    assert rows(LOSS_BINS, tmp_store) == [("sae", 240, 1, 1.0, 1.0, 1.0)]  # 1.0: bin 240
    assert rows(COS_BINS, tmp_store) == [("sae", 215, 1, 1, 500.0, 250000.0, 0.75, 0.75, 0.75)]
    assert rows(GAP_SUMS, tmp_store) == rows(GAP_PAIR_SUMS, tmp_store) == []  # no eps_random left: no gap
    assert rows(GAP_SIGNS, tmp_store) == []
    assert rows(f"{TOKEN_METRICS} ORDER BY position", tmp_store) == [  # tokens' metrics replaced too
        (0, None, None, None, None, None),
        (1, 500.0, 1.0, None, None, None),
        (2, None, None, None, None, None),
    ]


def test_retried_shard_recounts_gap_signs(tmp_store: Store) -> None:
    job_id, run_id, shard_id = _tiny_shard(tmp_store)
    tokens = read.query("SELECT * EXCLUDE (run_id, shard_id) FROM tokens", store=tmp_store)
    draws = [(1, "sae", 0.5), (1, "eps_random", 2.0), (2, "sae", 1.0), (2, "eps_random", 0.25)]  # SAE above at 2 only
    retry = pa.Table.from_pylist(
        [{"sequence": 0, "position": position, "intervention": name, "sample": 0, "kl": kl, "loss": 3.0,
          "loss_delta": 1.0} for position, name, kl in draws],
    )  # fmt: skip
    tmp_store.write_shard(job_id, shard_id, {run_id: (tokens, retry)})
    assert rows(GAP_SIGNS, tmp_store) == [(2, 1)]


def test_rollups_filled_once_on_open_for_an_older_lake(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    for table in ("sequence_sums", "kl_bins", "token_sums", *NEW_ROLLUPS):  # a lake from before the rollups
        tmp_store.execute_write(f"DROP TABLE {table}")
    with Store.open(tmp_store.config) as reopened:
        assert rows(SEQUENCE_SUMS, reopened) == EXPECTED_SEQUENCE_SUMS
        assert rows(KL_BINS, reopened) == EXPECTED_KL_BINS
        assert rows(TOKEN_SUMS, reopened) == EXPECTED_TOKEN_SUMS
        for table, (sql, expected) in NEW_ROLLUPS.items():
            assert rows(sql, reopened) == expected, table
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
