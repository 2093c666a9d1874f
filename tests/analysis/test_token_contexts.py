"""token_contexts ranks on the gap's two KL columns when enough tokens have a gap, and on token_gaps otherwise:
either way the answer is token_gaps' ranking (its SQL, read directly)."""

from __future__ import annotations

import pytest

from analysis.base import read
from analysis.token_contexts import GAPPED_SQL, SQL, Params, token_contexts
from tests.fixture_store import Fixture


@pytest.mark.parametrize(("job", "limit"), [("all", 1), ("all", 7), ("all", 50), ("single", 3)])
def test_gapped_ranking_is_token_gaps_ranking(fixture_store: Fixture, job: str, limit: int) -> None:
    params = Params(job=fixture_store.job_ids[job], limit=limit)
    ours = token_contexts(params, store=fixture_store.store)
    assert ours.num_rows == limit
    assert read(GAPPED_SQL, params.bind(), fixture_store.store).num_rows == limit  # the fast path answered
    assert ours.equals(read(SQL, params.bind(), fixture_store.store))


@pytest.mark.parametrize("job", ["all", "single"])
def test_fewer_gaps_than_the_limit_reads_token_gaps(fixture_store: Fixture, job: str) -> None:
    params = Params(job=fixture_store.job_ids[job], limit=10_000)
    gapped = read(GAPPED_SQL, params.bind(), fixture_store.store).num_rows
    ours = token_contexts(params, store=fixture_store.store)
    assert 0 < gapped < params.limit
    assert ours.equals(read(SQL, params.bind(), fixture_store.store))
    assert ours.num_rows >= gapped
    assert ours.column("context").to_pylist()[0].count("[[") == 1  # the token marked once in its window
