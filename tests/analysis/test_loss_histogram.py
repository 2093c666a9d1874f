from __future__ import annotations

import numpy as np
import pytest

from analysis.loss_histogram import Params, loss_histogram
from schema.relations import KL_BIN_RATIO
from tests.analysis import oracle
from tests.fixture_store import POSITIONS, SAE_LOSS_DELTA, SEQUENCES, ZERO_ABLATION_LOSS_DELTA, Fixture

# Job "all": positions 1..POSITIONS-2 have a next token, so a loss increase: sae's is
# SAE_LOSS_DELTA and zero ablation's ZERO_ABLATION_LOSS_DELTA at every one of them.
TOKENS_WITH_LOSS = SEQUENCES * (POSITIONS - 2)


def test_planted_loss_deltas_fall_in_the_end_bins(fixture_store: Fixture) -> None:
    params = Params(job=fixture_store.job_ids["all"], layer=0, interventions=["sae", "zero_ablation"], bins=2)
    rows = loss_histogram(params, store=fixture_store.store).to_pylist()
    picked = [(row["intervention"], row["bin"], row["n"], row["fraction"]) for row in rows]
    assert picked == [("sae", 0, TOKENS_WITH_LOSS, 1.0), ("zero_ablation", 1, TOKENS_WITH_LOSS, 1.0)]
    assert rows[0]["bin_lo"] == pytest.approx(SAE_LOSS_DELTA)
    assert rows[1]["bin_hi"] == pytest.approx(ZERO_ABLATION_LOSS_DELTA)


def test_no_records_give_no_rows(fixture_store: Fixture) -> None:
    assert loss_histogram(Params(job=999), store=fixture_store.store).num_rows == 0


def _cumulative_bounds(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per upper edge: how many values must, and how many may, lie in the bins up to it when each value may be
    placed anywhere within a factor KL_BIN_RATIO of itself (the fixed loss_bins' bound, |x| >= 1e-6)."""
    spread = np.abs(values) * (KL_BIN_RATIO - 1) + 1e-6
    must = np.array([(values + spread < edge).sum() for edge in edges])
    may = np.array([(values - spread < edge).sum() for edge in edges])
    return must, may


def test_counts_within_the_fixed_bins_bound(fixture_store: Fixture) -> None:
    """Against pandas over the fixture's own records: the range is exact and every cumulative count lies within
    what moving each token by its fixed bin's width (a factor KL_BIN_RATIO) allows."""
    names = ["eps_random", "eps_cov_random", "cos_random_true_norm", "sae"]
    job = fixture_store.job_ids["all"]
    table = loss_histogram(Params(job=job, interventions=names, bins=40), store=fixture_store.store).to_pandas()
    records = oracle.interventions().query("job == 'all' and sample == 0 and intervention in @names")
    records = records.dropna(subset=["loss_delta"])
    lo, hi = records.loss_delta.min(), records.loss_delta.max()
    width = (table.bin_hi - table.bin_lo).to_numpy()
    assert (table.bin_lo - table.bin * width).to_numpy() == pytest.approx(lo)  # the range is exact
    assert (table.bin_hi + (39 - table.bin) * width).to_numpy() == pytest.approx(hi)
    for (sae, name), rows in table.groupby(["sae", "intervention"]):
        values = records.query("sae == @sae and intervention == @name").loss_delta.to_numpy(np.float64)
        counts = np.zeros(40, dtype=int)
        counts[rows.bin.to_numpy()] = rows.n.to_numpy()
        edges = lo + (np.arange(40) + 1) * (hi - lo) / 40
        must, may = _cumulative_bounds(values, edges[:-1])
        cumulative = np.cumsum(counts)[:-1]
        assert counts.sum() == len(values)
        assert ((must <= cumulative) & (cumulative <= may)).all(), (sae, name)
