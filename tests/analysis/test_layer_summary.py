from __future__ import annotations

import numpy as np
import pytest

from analysis.layer_summary import SCHEMA, Params, layer_summary
from schema.relations import KL_BIN_RATIO
from tests.analysis import oracle
from tests.fixture_store import (
    EPS_KL_MEAN,
    LAYERS,
    PLANTED_EPS_CI_WIDTH,
    PLANTED_KL_RATIO,
    PLANTED_KL_RATIO_B,
    SAE_A,
    SAE_B,
    SEQUENCES,
    Fixture,
)


@pytest.fixture(scope="module")
def summary(fixture_store: Fixture):
    table = layer_summary(Params(job=fixture_store.job_ids["all"], n_boot=2000), store=fixture_store.store)
    return table.to_pandas().set_index(["sae", "intervention"])


def test_columns_and_one_row_per_run_and_intervention(summary, fixture_store: Fixture) -> None:
    assert list(summary.reset_index()[SCHEMA.names].columns) == SCHEMA.names
    assert len(summary) == 4 * 10  # 4 runs of job "all" x every intervention
    assert summary.index.is_unique


def test_intervals_contain_their_point_estimates(summary) -> None:
    for stat in ("kl_mean", "loss_delta_mean", "kl_ratio"):
        assert (summary[f"{stat}_lo"] <= summary[stat] + 1e-12).all()
        assert (summary[stat] <= summary[f"{stat}_hi"] + 1e-12).all()


@pytest.mark.parametrize("layer", LAYERS)
def test_planted_ratio_to_eps_random(summary, layer: int) -> None:
    row = summary.loc[(SAE_A.format(layer=layer), "sae")]
    assert row.kl_ratio == pytest.approx(PLANTED_KL_RATIO[layer], rel=1e-6)
    assert row.kl_mean == pytest.approx(PLANTED_KL_RATIO[layer] * EPS_KL_MEAN, rel=1e-6)
    assert row.kl_ratio_lo < PLANTED_KL_RATIO[layer] < row.kl_ratio_hi
    assert summary.loc[(SAE_A.format(layer=layer), "eps_random")].kl_ratio == 1.0


def test_second_sae_ratio(summary) -> None:
    assert summary.loc[(SAE_B, "sae")].kl_ratio == pytest.approx(PLANTED_KL_RATIO_B, rel=1e-6)


def test_bootstrap_ci_width_matches_the_planted_sequence_spread(summary) -> None:
    row = summary.loc[(SAE_A.format(layer=0), "eps_random")]
    assert row.kl_mean == pytest.approx(EPS_KL_MEAN, rel=1e-6)
    assert row.kl_mean_hi - row.kl_mean_lo == pytest.approx(PLANTED_EPS_CI_WIDTH, rel=0.15)


def test_resampling_unit_is_the_sequence(summary) -> None:
    # eps_random KL is constant within a sequence: resampling tokens would shrink the CI by
    # sqrt(7); sequences give the planted width (checked above), and constant columns give none.
    row = summary.loc[(SAE_A.format(layer=0), "zero_ablation")]
    assert row.kl_mean_lo == row.kl_mean_hi == pytest.approx(5.0)
    assert row.kl_median == row.kl_p999 == 5.0  # a bin holding one distinct KL gives it exactly
    assert (summary.n_sequences == SEQUENCES).all()
    assert (summary.n_tokens == SEQUENCES * 7).all()


def test_order_statistics_and_loss_match_pandas(summary) -> None:
    records = oracle.interventions().query("job == 'all'")
    for (sae, intervention), rows in records.groupby(["sae", "intervention"]):
        row = summary.loc[(sae, intervention)]
        kl = rows.kl.astype(float).to_numpy()
        # read off the store's kl_bins: within the exact quantile's bin, a factor of KL_BIN_RATIO
        for value, q in ((row.kl_median, 0.5), (row.kl_p999, 0.999)):
            exact = np.quantile(kl, q)
            assert exact / KL_BIN_RATIO <= value <= exact * KL_BIN_RATIO
        assert row.loss_delta_mean == pytest.approx(rows.loss_delta.astype(float).mean(), rel=1e-6)


def test_same_seed_same_intervals(fixture_store: Fixture) -> None:
    params = Params(job=fixture_store.job_ids["all"], layer=0, interventions=["sae", "eps_random"], n_boot=200)
    first = layer_summary(params, store=fixture_store.store)
    assert first.equals(layer_summary(params, store=fixture_store.store))
    assert first.num_rows == 2


def test_filters_narrow_the_rows(fixture_store: Fixture) -> None:
    params = Params(layer=1, interventions=["sae"], n_boot=100)
    table = layer_summary(params, store=fixture_store.store).to_pandas()
    assert sorted(table.sae) == sorted([SAE_A.format(layer=1), SAE_B])
    assert table.kl_ratio.isna().all()  # eps_random filtered out: no baseline to divide by
