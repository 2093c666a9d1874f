from __future__ import annotations

import pyarrow as pa
import pytest

from analysis.cross_layer import Params, _aligned, _pairwise, cross_layer
from tests.fixture_store import PLANTED_CROSS_LAYER_CORR, SAE_A, Fixture


@pytest.fixture(scope="module")
def matrix(fixture_store: Fixture):
    table = cross_layer(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pandas()
    return table.set_index(["sae_a", "sae_b"])


def test_full_symmetric_matrix_with_unit_diagonal(matrix) -> None:
    assert len(matrix) == 4 * 4 and (matrix.n == 280).all()
    for (a, b), row in matrix.iterrows():
        assert row.pearson == pytest.approx(matrix.loc[(b, a)].pearson, abs=1e-12)
        if a == b:
            assert row.pearson == pytest.approx(1.0)


@pytest.mark.parametrize(("pair", "expected"), PLANTED_CROSS_LAYER_CORR.items())
def test_planted_correlations(matrix, pair: tuple[int, int], expected: float) -> None:
    a, b = (SAE_A.format(layer=layer) for layer in pair)
    assert matrix.loc[(a, b)].pearson == pytest.approx(expected, abs=1e-5)


def test_layer_filter_picks_one_row_of_the_matrix(fixture_store: Fixture) -> None:
    table = cross_layer(Params(job=fixture_store.job_ids["all"], layer=2), store=fixture_store.store).to_pandas()
    assert set(table.layer_a) == {2} and len(table) == 4


def test_jobs_are_never_paired(fixture_store: Fixture) -> None:
    table = cross_layer(Params(), store=fixture_store.store).to_pandas()
    assert len(table) == 4 * 4 + 1  # job "single" pairs its one run with itself only


def test_runs_with_different_tokens_pair_on_the_shared_ones() -> None:
    """Keys are (sequence << 16) + position; run b lacks one of run a's tokens and has one of its own."""
    key = lambda sequence, position: (sequence << 16) + position  # noqa: E731
    a = [(key(3, 1), 1.0), (key(3, 2), 2.0), (key(4, 1), 3.0), (key(4, 2), 5.0)]
    b = [(key(3, 1), 2.0), (key(3, 2), 4.0), (key(4, 1), 6.0), (key(5, 7), 100.0)]
    runs = pa.table({"tokens": [[{"key": k, "gap": g} for k, g in run] for run in (a, b)]})
    counts, r = _pairwise(_aligned(runs))
    assert counts.tolist() == [[4, 3], [3, 4]]
    assert r[0, 1] == pytest.approx(1.0)  # on the three shared tokens b = 2a


def test_max_tokens_reads_one_hash_sample_of_keys_for_every_run(fixture_store: Fixture) -> None:
    job = fixture_store.job_ids["all"]
    sampled = cross_layer(Params(job=job, max_tokens=140), store=fixture_store.store).to_pandas()
    (n,) = set(sampled.n)  # the same keys in every run: every pair has the whole sample
    assert 70 < n < 210  # about 140 of the 280 tokens
    assert sampled[sampled.run_a == sampled.run_b].pearson.to_numpy() == pytest.approx(1.0)
    everything = cross_layer(Params(job=job, max_tokens=10_000), store=fixture_store.store).to_pandas()
    assert (everything.n == 280).all()
