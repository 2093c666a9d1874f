"""The shared pieces: the gaps CTE against the token_gaps view, and the sequence bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.base import GAPS, SELECTED_RUNS, Filters
from analysis.bootstrap import bootstrap_means, percentile_interval, resample_weights
from schema.read import query
from tests.fixture_store import Fixture

_COLUMNS = "run_id, sequence, position, kl_sae, kl_eps_random, kl_gap"
_ORDER = "ORDER BY run_id, sequence, position"


def test_gaps_cte_equals_the_token_gaps_view(fixture_store: Fixture) -> None:
    bound = {**Filters().bind(), "scope": None}
    mine = query(f"WITH {SELECTED_RUNS}, {GAPS} SELECT {_COLUMNS} FROM gaps {_ORDER}", bound, store=fixture_store.store)
    view = query(f"SELECT {_COLUMNS} FROM token_gaps WHERE kl_gap IS NOT NULL {_ORDER}", store=fixture_store.store)
    assert mine.num_rows == view.num_rows == 4 * 280 + 4 * 4  # job "all" tokens, job "single" target..window
    assert mine.to_pylist() == view.to_pylist()


def test_resample_weights_draw_whole_sequences() -> None:
    weights = resample_weights(7, 500, np.random.default_rng(0))
    assert weights.shape == (500, 7) and (weights.sum(axis=1) == 7).all()
    assert weights.mean() == pytest.approx(1.0) and (weights == np.round(weights)).all()


def test_bootstrap_of_equal_sequences_has_no_spread() -> None:
    sums, counts = np.full((10, 2), 3.0), np.full((10, 2), 2.0)  # every sequence: mean 1.5
    replicates = bootstrap_means(sums, counts, 300, seed=1)
    low, high = percentile_interval(replicates, 0.95)
    assert np.allclose(replicates, 1.5) and np.allclose(low, 1.5) and np.allclose(high, 1.5)


def test_bootstrap_interval_width_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(3)
    means = rng.normal(1.0, 0.2, 400)  # per-sequence means, 5 tokens each
    replicates = bootstrap_means((means * 5)[:, None], np.full((400, 1), 5.0), 4000, seed=2)
    low, high = percentile_interval(replicates, 0.95)
    assert (high - low)[0] == pytest.approx(2 * 1.96 * means.std() / np.sqrt(400), rel=0.1)
