from __future__ import annotations

import numpy as np
import pytest

from analysis.gap_correlates import VARIABLES, Params, gap_correlates
from tests.analysis import oracle
from tests.fixture_store import LAYERS, PLANTED_GAP_COS_CORR, PLANTED_GAP_POSITION_CORR, SAE_A, SAE_B, Fixture


@pytest.fixture(scope="module")
def correlates(fixture_store: Fixture):
    table = gap_correlates(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pandas()
    return table.set_index(["sae", "variable"])


def test_one_row_per_run_and_variable(correlates) -> None:
    assert len(correlates) == 4 * len(VARIABLES) and correlates.index.is_unique
    assert (correlates.n == 280).all()
    assert correlates[["pearson", "spearman"]].abs().le(1 + 1e-9).all().all()


def test_planted_position_correlation(correlates) -> None:
    assert correlates.loc[(SAE_A.format(layer=0), "position")].pearson == pytest.approx(
        PLANTED_GAP_POSITION_CORR, abs=1e-5
    )


@pytest.mark.parametrize("layer", LAYERS)
def test_planted_cos_sim_correlation(correlates, layer: int) -> None:
    row = correlates.loc[(SAE_A.format(layer=layer), "cos_sim")]
    assert row.pearson == pytest.approx(PLANTED_GAP_COS_CORR, abs=1e-5)
    assert row.spearman == pytest.approx(PLANTED_GAP_COS_CORR, abs=1e-9)  # monotone: exact ranks


@pytest.mark.parametrize("variable", ["l0", "norm", "eps", "position", "token_frequency"])
def test_pearson_and_spearman_match_pandas(correlates, variable: str) -> None:
    gaps = oracle.gaps("all", SAE_B)
    gaps["token_frequency"] = gaps.groupby("token_id").token_id.transform("size")
    x, y = gaps.kl_gap, gaps[variable].astype(float)
    row = correlates.loc[(SAE_B, variable)]
    assert row.pearson == pytest.approx(x.corr(y), abs=1e-5)
    assert row.spearman == pytest.approx(x.rank().corr(y.rank()), abs=1e-5)  # average ranks for ties


def test_sampled_spearman_within_its_standard_error(fixture_store: Fixture, correlates) -> None:
    """A hash sample of about half the tokens: Spearman within 4 of its documented standard errors of the exact
    (all-token) answer, Pearson still exact."""
    params = Params(job=fixture_store.job_ids["all"], spearman_tokens=140)
    sampled = gap_correlates(params, store=fixture_store.store).to_pandas().set_index(["sae", "variable"])
    assert sampled.spearman_n.between(70, 210).all()
    bound = 4 * np.sqrt(1.06 / (sampled.spearman_n - 3))
    assert ((sampled.spearman - correlates.spearman).abs() <= bound).all()
    assert sampled.pearson.to_numpy() == pytest.approx(correlates.pearson.to_numpy(), abs=1e-12)
