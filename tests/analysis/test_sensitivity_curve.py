from __future__ import annotations

import numpy as np
import pytest

from analysis.sensitivity_curve import DEFAULT_INTERVENTIONS, Params, sensitivity_curve
from schema.read import query
from schema.relations import KL_BIN_RATIO
from tests.analysis import oracle
from tests.fixture_store import COS_RANDOM_SAE_NORM_SLOPE, COS_RANDOM_TRUE_NORM_SLOPE, SAE_A, Fixture


@pytest.fixture(scope="module")
def curve(fixture_store: Fixture):
    return sensitivity_curve(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pandas()


def test_bins_cover_every_token(curve) -> None:
    assert set(curve.intervention) == set(DEFAULT_INTERVENTIONS)
    assert (curve.groupby(["run_id", "intervention"]).n_tokens.sum() == 280).all()
    assert (curve.cos_lo <= curve.cos_sim_mean + 1e-9).all() and (curve.cos_sim_mean <= curve.cos_hi + 1e-9).all()
    assert curve.bin.between(0, 19).all()


@pytest.mark.parametrize(
    ("intervention", "slope"),
    [("cos_random_true_norm", COS_RANDOM_TRUE_NORM_SLOPE), ("cos_random_sae_norm", COS_RANDOM_SAE_NORM_SLOPE)],
)
def test_planted_linear_sensitivity(curve, intervention: str, slope: float) -> None:
    rows = curve[(curve.sae == SAE_A.format(layer=0)) & (curve.intervention == intervention)]
    # kl = slope * (1 - cos) per token, so per bin mean KL = slope * (1 - mean cos) exactly
    assert rows.kl_mean.to_numpy() == pytest.approx((slope * (1 - rows.cos_sim_mean)).to_numpy(), abs=1e-5)
    assert rows.kl_mean.is_monotonic_decreasing


def test_sae_points_sit_on_the_same_bins(curve) -> None:
    layer0 = curve[curve.sae == SAE_A.format(layer=0)]
    sae_bins = layer0[layer0.intervention == "sae"].set_index("bin")
    random_bins = layer0[layer0.intervention == "cos_random_true_norm"].set_index("bin")
    assert list(sae_bins.index) == list(random_bins.index)
    assert sae_bins.cos_sim_mean.to_numpy() == pytest.approx(random_bins.cos_sim_mean.to_numpy())


def test_every_draw_counts_not_only_the_first(fixture_store: Fixture) -> None:
    """Job "single" has 50 eps_random draws at the target: one bin's mean is the mean of all of them."""
    params = Params(job=fixture_store.job_ids["single"], scope=None, interventions=["eps_random"], bins=1)
    curve = sensitivity_curve(params, store=fixture_store.store).to_pylist()
    direct = query(
        "SELECT avg(i.kl) AS kl_mean, count(*) FILTER (WHERE i.sample = 0) AS n_tokens, count(*) AS draws"
        " FROM interventions i JOIN tokens t USING (run_id, sequence, position) JOIN runs r USING (run_id)"
        " WHERE r.job_id = $job AND i.intervention = 'eps_random' AND t.intervened",
        {"job": fixture_store.job_ids["single"]},
        store=fixture_store.store,
    ).to_pylist()[0]
    assert direct["draws"] == 50 * direct["n_tokens"] > 0
    assert [(row["n_tokens"], row["kl_mean"]) for row in curve] == [
        (direct["n_tokens"], pytest.approx(direct["kl_mean"], rel=1e-9))
    ]


def test_token_counts_within_the_fixed_bins_bound(curve) -> None:
    """Against pandas over the fixture's tokens: each run's cos_sim range is exact, and every cumulative count of
    tokens lies within what moving each token's 1 - cos_sim by a factor KL_BIN_RATIO (its cos_bins bin) allows."""
    tokens = oracle.tokens().query("job == 'all' and intervened").dropna(subset=["cos_sim"])
    for sae, rows in curve[curve.intervention == "sae"].groupby("sae"):
        cos = tokens.query("sae == @sae").cos_sim.to_numpy(np.float64)
        lo, hi = cos.min(), cos.max()
        assert rows.cos_lo.min() >= lo - 1e-7 and rows.cos_hi.max() <= hi + 1e-7
        assert (rows.cos_lo - rows.bin * (rows.cos_hi - rows.cos_lo)).to_numpy() == pytest.approx(lo)  # exact range
        counts = np.zeros(20, dtype=int)
        counts[rows.bin.to_numpy()] = rows.n_tokens.to_numpy()
        edges = lo + (np.arange(1, 20)) * (hi - lo) / 20
        highest = 1 - (1 - cos) / KL_BIN_RATIO + 1e-6  # the extremes each token's cos_sim may be moved to
        lowest = 1 - (1 - cos) * KL_BIN_RATIO - 1e-6
        must = np.array([(highest < edge).sum() for edge in edges])
        may = np.array([(lowest < edge).sum() for edge in edges])
        cumulative = np.cumsum(counts)[:-1]
        assert counts.sum() == len(cos)
        assert ((must <= cumulative) & (cumulative <= may)).all(), sae
