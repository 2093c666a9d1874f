from __future__ import annotations

from analysis.runs import Params, runs
from tests.fixture_store import LAYERS, SAE_A, SAE_B, Fixture


def test_a_jobs_runs_in_layer_order(fixture_store: Fixture) -> None:
    table = runs(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pylist()
    assert [(row["layer"], row["sae"]) for row in table] == [
        (0, SAE_A.format(layer=0)), (1, SAE_A.format(layer=1)), (1, SAE_B), (2, SAE_A.format(layer=2)),
    ]  # fmt: skip
    assert {row["scope"] for row in table} == {"all_tokens"} and len(LAYERS) == 3


def test_single_token_runs_carry_their_target(fixture_store: Fixture) -> None:
    (row,) = runs(Params(job=fixture_store.job_ids["single"]), store=fixture_store.store).to_pylist()
    assert row["scope"] == "single_token" and row["target_position"] is not None


def test_unknown_job_has_no_runs(fixture_store: Fixture) -> None:
    assert runs(Params(job=999), store=fixture_store.store).num_rows == 0
