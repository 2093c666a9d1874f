"""Job-level functions: loading from local directories, pairing checks, shards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from schema.spec import JobSpec, SingleTokenScope
from tests.worker.conftest import TINY_HOOKS
from worker.errors import BadInput
from worker.prepare import evaluate_shard, prepare_job, shard_ranges


def spec_for(assets, **overrides) -> JobSpec:
    base = dict(model=assets["model"], saes=[assets[h] for h in TINY_HOOKS], tokens=assets["tokens"], fit_sequences=8)
    return JobSpec(**(base | overrides))


def test_prepare_job_loads_everything_from_local_dirs(tiny_assets):
    job = prepare_job(spec_for(tiny_assets))
    assert [r.hook_name for r in job.runs] == list(TINY_HOOKS)
    assert [r.layer for r in job.runs] == [1, 2, 1]
    assert job.runs[2].hook_point == "attn_z" and job.runs[0].architecture == "standard"
    assert job.tokens.shape == (16, 24)


def test_shards_concatenate_to_the_whole(tiny_assets):
    job = prepare_job(spec_for(tiny_assets))
    whole = evaluate_shard(job, 0, 8)
    parts = [evaluate_shard(job, a, b) for a, b in shard_ranges(8, 3)]
    assert shard_ranges(8, 3) == [(0, 3), (3, 6), (6, 8)]
    order = [(c, "ascending") for c in ("intervention", "sample", "sequence", "position")]
    for run_index, records in enumerate(whole):
        joined = pa.concat_tables([p[run_index].interventions for p in parts]).sort_by(order)
        expected = records.interventions.sort_by(order)
        assert joined.drop(["kl", "loss", "loss_delta"]).equals(expected.drop(["kl", "loss", "loss_delta"]))
        np.testing.assert_allclose(joined["kl"].to_numpy(), expected["kl"].to_numpy(), rtol=1e-4, atol=1e-7)


def test_single_token_job(tiny_assets):
    job = prepare_job(spec_for(tiny_assets, scope=SingleTokenScope(position=12, window=4), samples=5))
    records = evaluate_shard(job, 0, 2)[0]
    assert records.tokens.num_rows == 2 * 5
    assert records.interventions.num_rows == (5 + 5 * 5) * 2 * 5
    assert job.runs[0].target_position == 12 and job.runs[0].window == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(n_sequences=99), "n_sequences=99"),
        (dict(tokens="/nonexistent.npy"), "unknown token set"),
        (dict(saes=["/nonexistent-sae"]), "unknown SAE"),
        (dict(model="gpt2"), "trained on model"),
        (dict(scope=SingleTokenScope(position=40)), None),
    ],
)
def test_bad_jobs_fail_with_their_message(tiny_assets, overrides, message):
    if message is None:  # position beyond the context fails at the first shard, before anything is written
        with pytest.raises(BadInput, match="beyond the context"):
            evaluate_shard(prepare_job(spec_for(tiny_assets, **overrides)), 0, 2)
        return
    with pytest.raises(BadInput, match=message):
        prepare_job(spec_for(tiny_assets, **overrides))


def test_shard_outside_the_job_is_refused(tiny_assets):
    with pytest.raises(BadInput, match="outside"):
        evaluate_shard(prepare_job(spec_for(tiny_assets)), 10, 20)
