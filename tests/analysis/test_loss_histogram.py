from __future__ import annotations

import pytest

from analysis.loss_histogram import Params, loss_histogram
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
