from __future__ import annotations

import pytest

from analysis.top_tokens import Params, top_tokens
from tests.analysis import oracle
from tests.fixture_store import PLANTED_TOP_TOKEN, RARE_COUNT, RARE_TOKEN, SAE_A, ZEBRA_COUNT, Fixture


def _top(fixture: Fixture, **params: int):
    table = top_tokens(Params(job=fixture.job_ids["all"], layer=2, **params), store=fixture.store).to_pandas()
    return table[table.sae == SAE_A.format(layer=2)].reset_index(drop=True)


def test_planted_top_token(fixture_store: Fixture) -> None:
    table = _top(fixture_store)
    assert table.token_text.iloc[0] == PLANTED_TOP_TOKEN and table.n.iloc[0] == ZEBRA_COUNT
    assert RARE_TOKEN not in set(table.token_text)  # seen 3 times < min_count 5
    assert len(table) == 20 and (table.n >= 5).all()
    assert table.kl_gap_mean.is_monotonic_decreasing


def test_min_count_lets_the_rare_token_in(fixture_store: Fixture) -> None:
    table = _top(fixture_store, min_count=RARE_COUNT, top=2)
    assert list(table.token_text) == [RARE_TOKEN, PLANTED_TOP_TOKEN]


def test_spread_and_count_match_pandas(fixture_store: Fixture) -> None:
    gaps = oracle.gaps("all", SAE_A.format(layer=2))
    expected = gaps.groupby("token_text").kl_gap.agg(["mean", "std", "size"])
    for row in _top(fixture_store).itertuples():
        assert row.kl_gap_mean == pytest.approx(expected.loc[row.token_text, "mean"], rel=1e-6)
        assert row.kl_gap_std == pytest.approx(expected.loc[row.token_text, "std"], rel=1e-5)
        assert row.n == expected.loc[row.token_text, "size"]
