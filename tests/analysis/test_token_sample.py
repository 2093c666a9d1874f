"""token_sample: the same hash sample whichever SQL shape answers it, and the optional columns against pandas."""

from __future__ import annotations

import pytest

from analysis.token_sample import Params, token_sample
from tests.analysis import oracle
from tests.fixture_store import SAE_A, Fixture


def _sample(fixture: Fixture, **params):
    run = oracle.run_id(fixture, "all", SAE_A.format(layer=0))
    return token_sample(Params(run=run, limit=10_000, **params), store=fixture.store).to_pandas()


def test_token_frequency_counts_the_runs_intervened_tokens(fixture_store: Fixture) -> None:
    sample = _sample(fixture_store, x="token_frequency", y="kl_sae")
    gaps = oracle.gaps("all", SAE_A.format(layer=0))
    expected = gaps.groupby("token_id").size()
    assert len(sample) == len(gaps) == 280
    assert (sample.x.to_numpy() == expected.loc[sample.token_id].to_numpy()).all()


def test_other_runs_gap_is_the_same_tokens_gap(fixture_store: Fixture) -> None:
    other = oracle.run_id(fixture_store, "all", SAE_A.format(layer=1))
    sample = _sample(fixture_store, x="kl_gap_other_run", y="kl_gap", other_run=other)
    gaps = oracle.gaps("all", SAE_A.format(layer=1)).set_index(["sequence", "position"]).kl_gap
    expected = gaps.loc[list(zip(sample.sequence, sample.position, strict=True))].to_numpy()
    assert len(sample) == 280 and sample.x.to_numpy() == pytest.approx(expected, rel=1e-6)


def test_the_sample_does_not_depend_on_the_columns_read(fixture_store: Fixture) -> None:
    """The frequency window and the other-run join are added only when asked: the sampled tokens stay the same."""
    keys = ["run_id", "sequence", "position"]
    run = oracle.run_id(fixture_store, "all", SAE_A.format(layer=0))
    small = {"run": run, "limit": 50, "seed": 3}
    default = token_sample(Params(**small), store=fixture_store.store).to_pandas()[keys]
    frequency = token_sample(Params(x="token_frequency", **small), store=fixture_store.store).to_pandas()[keys]
    assert len(default) == 50 and default.equals(frequency)


def test_token_facts_alone_keep_to_tokens_with_records(fixture_store: Fixture) -> None:
    """Both token facts: still only the intervened tokens with a record (token_gaps' rows), with their values."""
    sample = _sample(fixture_store, x="position", y="cos_sim")
    gaps = oracle.gaps("all", SAE_A.format(layer=0)).set_index(["sequence", "position"])
    assert len(sample) == len(gaps) == 280
    expected = gaps.cos_sim.loc[list(zip(sample.sequence, sample.position, strict=True))].to_numpy()
    assert sample.y.to_numpy() == pytest.approx(expected, rel=1e-6)
