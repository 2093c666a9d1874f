from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from analysis.kl_histogram import Params, kl_histogram
from schema.relations import KL_BIN_RATIO
from tests.analysis import oracle
from tests.fixture_store import SAE_A, SEQUENCES, Fixture


@pytest.fixture(scope="module")
def histogram(fixture_store: Fixture):
    return kl_histogram(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pandas()


def test_counts_cover_every_token_once(histogram) -> None:
    totals = histogram.groupby(["run_id", "intervention"]).n.sum()
    assert (totals == SEQUENCES * 7).all()
    assert len(totals) == 4 * 10
    assert histogram.groupby(["run_id", "intervention"]).fraction.sum().round(9).eq(1.0).all()


def test_bins_are_log_spaced_and_contiguous(histogram) -> None:
    edges = np.geomspace(1e-4, 1.0, 41)
    assert np.allclose(histogram.bin_lo, edges[histogram.bin])
    assert np.allclose(histogram.bin_hi, edges[histogram.bin + 1])


def test_tails_are_clamped_into_the_end_bins(histogram) -> None:
    zero = histogram[histogram.intervention == "zero_ablation"]  # KL 5.0 > kl_max
    mean = histogram[histogram.intervention == "mean_ablation"]  # KL 1e-6 < kl_min
    assert set(zero.bin) == {39} and set(mean.bin) == {0}
    assert zero.kl_p999.eq(5.0).all()


def test_exact_rows_for_one_layer(histogram) -> None:
    sae = SAE_A.format(layer=0)
    kl = oracle.interventions().query("job == 'all' and sae == @sae and intervention == 'eps_random'").kl
    clamped = np.clip(kl.astype(float), 1e-4, 1.0 - 1e-12)
    expected, _ = np.histogram(clamped, bins=np.geomspace(1e-4, 1.0, 41))
    rows = histogram[(histogram.sae == sae) & (histogram.intervention == "eps_random")]
    assert dict(zip(rows.bin, rows.n, strict=True)) == {b: c for b, c in enumerate(expected) if c}
    # kl_p999 is read off the store's kl_bins: within a factor of KL_BIN_RATIO of the exact one
    exact = np.quantile(kl.astype(float), 0.999)
    assert exact / KL_BIN_RATIO <= rows.kl_p999.iloc[0] <= exact * KL_BIN_RATIO


def test_off_grid_bins_still_count_every_token_once(fixture_store: Fixture) -> None:
    # edges off the rollup's 40-per-decade grid: each fixed bin goes whole to one requested bin
    params = Params(job=fixture_store.job_ids["all"], bins=7, kl_min=3e-5, kl_max=2.0, interventions=["eps_random"])
    table = kl_histogram(params, store=fixture_store.store).to_pandas()
    assert (table.groupby("run_id").n.sum() == SEQUENCES * 7).all()
    assert set(table.bin) <= set(range(7))


def test_bad_range_is_one_clear_error() -> None:
    with pytest.raises(ValidationError, match="kl_min"):
        Params(kl_min=1.0, kl_max=0.5)
