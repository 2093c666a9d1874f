from __future__ import annotations

import pytest

from analysis.downstream import Params, downstream
from tests.fixture_store import PLANTED_DOWNSTREAM, SAMPLES, SINGLE_SEQUENCES, TARGET_POSITION, WINDOW, Fixture


def test_planted_kl_per_offset(fixture_store: Fixture) -> None:
    table = downstream(Params(job=fixture_store.job_ids["single"]), store=fixture_store.store).to_pandas()
    assert (table.target_position == TARGET_POSITION).all()
    for intervention, expected in PLANTED_DOWNSTREAM.items():
        rows = table[table.intervention == intervention].sort_values("offset")
        assert list(rows.offset) == list(range(WINDOW + 1))
        assert rows.kl_mean.to_numpy() == pytest.approx(expected, rel=1e-6)
        assert (rows.n_sequences == SINGLE_SEQUENCES).all()
    draws = table[table.intervention == "eps_random"]
    assert (draws.n_records == SINGLE_SEQUENCES * SAMPLES).all()


def test_all_token_runs_have_no_downstream(fixture_store: Fixture) -> None:
    assert downstream(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).num_rows == 0
