from __future__ import annotations

import pytest

from analysis.sae_metrics import Params, sae_metrics
from tests.analysis import oracle
from tests.fixture_store import (
    CLEAN_LOSS,
    LAYERS,
    PLANTED_CE_LOSS_SCORE,
    PLANTED_KL_DIV_SCORE,
    SAE_A,
    SAE_LOSS_DELTA,
    ZERO_ABLATION_KL,
    Fixture,
)


@pytest.fixture(scope="module")
def metrics(fixture_store: Fixture):
    return sae_metrics(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pandas().set_index("sae")


@pytest.mark.parametrize("layer", LAYERS)
def test_planted_scores(metrics, layer: int) -> None:
    row = metrics.loc[SAE_A.format(layer=layer)]
    assert row.kl_div_with_ablation == pytest.approx(ZERO_ABLATION_KL)
    assert row.kl_div_score == pytest.approx(PLANTED_KL_DIV_SCORE[layer], rel=1e-6)
    assert row.ce_loss_without_sae == pytest.approx(CLEAN_LOSS)
    assert row.ce_loss_with_sae == pytest.approx(CLEAN_LOSS + SAE_LOSS_DELTA, rel=1e-6)
    assert row.ce_loss_score == pytest.approx(PLANTED_CE_LOSS_SCORE, rel=1e-5)


def test_reconstruction_means_match_pandas(metrics) -> None:
    tokens = oracle.tokens().query("job == 'all' and intervened")
    for sae, rows in tokens.groupby("sae"):
        row = metrics.loc[sae]
        assert row.n_tokens == len(rows)
        assert row.l0 == pytest.approx(rows.l0.mean())
        assert row.l1 == pytest.approx(rows.l1.astype(float).mean(), rel=1e-6)
        assert row.cossim == pytest.approx(rows.cos_sim.astype(float).mean(), rel=1e-6)
        assert row.mse == pytest.approx((rows.eps.astype(float) ** 2).mean(), rel=1e-5)
        assert row.l2_ratio == pytest.approx((rows.sae_norm.astype(float) / rows.norm.astype(float)).mean(), rel=1e-6)


def test_single_token_runs_only_when_asked(fixture_store: Fixture) -> None:
    store = fixture_store.store
    assert sae_metrics(Params(job=fixture_store.job_ids["single"]), store=store).num_rows == 0
    single = sae_metrics(Params(job=fixture_store.job_ids["single"], scope="single_token"), store=store)
    row = single.to_pylist()[0]
    assert row["n_tokens"] == 4 and row["kl_div_with_sae"] is not None
    assert row["kl_div_with_ablation"] is None and row["kl_div_score"] is None  # job "single" ran no zero_ablation
