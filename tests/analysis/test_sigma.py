from __future__ import annotations

import pytest

from analysis.sigma import Params, sigma
from analysis.sigma_draws import Params as DrawParams
from analysis.sigma_draws import sigma_draws
from tests.fixture_store import DRAW_MEAN, DRAW_STD, PLANTED_Z, SAMPLES, TARGET_POSITION, Fixture


def test_planted_z_scores(fixture_store: Fixture) -> None:
    table = sigma(Params(job=fixture_store.job_ids["single"]), store=fixture_store.store).to_pandas()
    assert list(table.sequence) == list(range(len(PLANTED_Z)))  # only the intervened token of each sequence
    assert (table.position == TARGET_POSITION).all() and (table.n_draws == SAMPLES).all()
    assert table.z.to_numpy() == pytest.approx(PLANTED_Z, abs=1e-4)
    assert table.draw_mean.to_numpy() == pytest.approx([DRAW_MEAN] * 4, rel=1e-6)
    assert table.draw_std.to_numpy() == pytest.approx([DRAW_STD] * 4, rel=1e-5)
    assert (table.draw_p05 <= table.draw_median).all() and (table.draw_median <= table.draw_p95).all()


def test_fraction_of_draws_above_the_sae(fixture_store: Fixture) -> None:
    table = sigma(Params(job=fixture_store.job_ids["single"]), store=fixture_store.store).to_pandas()
    draws = sigma_draws(DrawParams(job=fixture_store.job_ids["single"]), store=fixture_store.store).to_pandas()
    expected = draws.assign(above=draws.kl >= draws.kl_sae).groupby("sequence").above.mean()
    assert table.fraction_draws_above.to_numpy() == pytest.approx(expected.to_numpy())
    assert table.fraction_draws_above.iloc[1] > table.fraction_draws_above.iloc[0]  # z -0.5 vs z 3


def test_min_samples_excludes_tokens(fixture_store: Fixture) -> None:
    params = Params(job=fixture_store.job_ids["single"], min_samples=SAMPLES + 1)
    assert sigma(params, store=fixture_store.store).num_rows == 0
    assert sigma(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).num_rows == 0  # one draw


def test_draws_for_one_token(fixture_store: Fixture) -> None:
    params = DrawParams(job=fixture_store.job_ids["single"], sequence=1, position=TARGET_POSITION)
    draws = sigma_draws(params, store=fixture_store.store).to_pandas()
    assert list(draws["sample"]) == list(range(SAMPLES))
    assert draws.kl.mean() == pytest.approx(DRAW_MEAN, rel=1e-6)
    assert draws.kl_sae.unique() == pytest.approx([DRAW_MEAN + PLANTED_Z[1] * DRAW_STD])
