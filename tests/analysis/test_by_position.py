from __future__ import annotations

import pytest

from analysis.by_position import Params, by_position
from tests.analysis import oracle
from tests.fixture_store import Fixture


def test_exact_rows_against_pandas(fixture_store: Fixture) -> None:
    table = by_position(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pandas()
    records = oracle.interventions().query("job == 'all'")
    expected = records.groupby(["sae", "intervention", "position"]).agg(
        kl_mean=("kl", lambda kl: kl.astype(float).mean()), n_tokens=("kl", "size")
    )
    got = table.set_index(["sae", "intervention", "position"]).sort_index()
    assert list(got.index) == list(expected.index)
    assert got.kl_mean.to_numpy() == pytest.approx(expected.kl_mean.to_numpy(), rel=1e-6)
    assert (got.n_tokens == expected.n_tokens).all()
    assert got.loc[(got.index.get_level_values("position") == 7)].loss_delta_mean.isna().all()  # no next token


def test_intervention_filter(fixture_store: Fixture) -> None:
    params = Params(job=fixture_store.job_ids["all"], layer=0, interventions=["sae"])
    table = by_position(params, store=fixture_store.store).to_pandas()
    assert set(table.intervention) == {"sae"} and sorted(table.position) == list(range(1, 8))
