"""Job API on both catalog families: lifecycle, progress, cancel, bad input."""

from __future__ import annotations

import pydantic
import pytest

from schema import read
from schema.errors import JobStateError, UnknownJobError, UnknownRunError, UnknownShardError
from schema.jobs import RunInfo
from schema.relations import RUN_SCHEMA
from schema.spec import JobSpec
from schema.store import Store
from tests.schema.records import VERSIONS, run_meta, synthetic_shard


def test_run_info_fields_are_run_schema_minus_ids() -> None:
    assert list(RunInfo.model_fields) == [f.name for f in RUN_SCHEMA if f.name not in ("run_id", "job_id")]


def test_job_lifecycle_counts_progress_and_finishes(store: Store) -> None:
    job_id = store.create_job(JobSpec(seed=7), VERSIONS | {"git": "abc123"})
    job = store.get_job(job_id)
    assert (job.status, job.seed, job.versions["git"], job.spec) == ("queued", 7, "abc123", JobSpec(seed=7))
    run_ids = store.add_runs(job_id, [run_meta(0), run_meta(3)])
    shard_ids = store.add_shards(job_id, [(0, 2), (2, 4)])
    assert [s.index for s in store.list_shards(job_id)] == [0, 1]

    assert store.start_shard(shard_ids[0], "w1") == 1
    assert store.start_shard(shard_ids[0], "w2") == 2  # a retry: attempts counts up
    assert store.get_job(job_id).status == "running"
    for shard_id, (start, end) in zip(shard_ids, [(0, 2), (2, 4)], strict=True):
        written = store.write_shard(job_id, shard_id, {r: synthetic_shard(start, end, 4, ("sae",)) for r in run_ids})
        store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)
    store.finish_shard(shard_ids[1], rows_written=0, tokens=8)  # finishing twice counts once

    progress = store.progress(job_id)
    assert (progress.status, progress.shards_done, progress.shards_total, progress.tokens_done) == ("done", 2, 2, 16)
    assert progress.tokens_per_second > 0 and progress.eta_seconds is None
    shard = store.get_shard(shard_ids[0])
    assert (shard.status, shard.attempts, shard.worker, shard.rows_written) == ("done", 2, "w2", 2 * (8 + 8))
    mirrored = read.query("SELECT run_id, job_id, layer FROM runs ORDER BY run_id", store=store).to_pylist()
    assert mirrored == [
        {"run_id": run_ids[0], "job_id": job_id, "layer": 0},
        {"run_id": run_ids[1], "job_id": job_id, "layer": 3},
    ]


def test_cancel_keeps_finished_shards_and_refuses_new_ones(store: Store) -> None:
    job_id = store.create_job(JobSpec(), VERSIONS)
    (run_id,) = store.add_runs(job_id, [run_meta(0)])
    first, second = store.add_shards(job_id, [(0, 1), (1, 2)])
    store.start_shard(first, "w")
    written = store.write_shard(job_id, first, {run_id: synthetic_shard(0, 1, 4, ("sae",))})
    store.finish_shard(first, rows_written=written.rows, tokens=written.tokens)
    store.cancel_job(job_id)

    assert store.get_job(job_id).status == "cancelled"
    with pytest.raises(JobStateError, match="cancelled"):
        store.start_shard(second, "w")
    assert read.query("SELECT count(*) AS n FROM tokens", store=store).to_pylist() == [{"n": 4}]
    assert store.progress(job_id).shards_done == 1


def test_failures_are_recorded(store: Store) -> None:
    job_id = store.create_job(JobSpec(), VERSIONS)
    (shard_id,) = store.add_shards(job_id, [(0, 1)])
    store.start_shard(shard_id, "w")
    store.fail_shard(shard_id, "CUDA out of memory")
    store.set_job_status(job_id, "failed", error="shard 0 failed")
    shard, job = store.get_shard(shard_id), store.get_job(job_id)
    assert (shard.status, shard.error) == ("failed", "CUDA out of memory")
    assert (job.status, job.error, job.finished_at is not None) == ("failed", "shard 0 failed", True)
    assert [j.id for j in store.list_jobs(status="failed")] == [job_id]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_job(999),
        lambda s: s.progress(999),
        lambda s: s.cancel_job(999),
        lambda s: s.set_job_status(999, "running"),
        lambda s: s.add_runs(999, [run_meta(0)]),
        lambda s: s.add_shards(999, [(0, 1)]),
        lambda s: s.list_shards(999),
    ],
)
def test_unknown_job_is_one_clear_error(store: Store, call) -> None:
    with pytest.raises(UnknownJobError, match="unknown job id 999"):
        call(store)


def test_malformed_spec_names_the_field_and_stores_nothing(store: Store) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        store.create_job({"model": "demo", "samples": 0}, VERSIONS)
    assert caught.value.errors()[0]["loc"] == ("samples",)
    with pytest.raises(pydantic.ValidationError, match="sae_lens"):
        store.create_job(JobSpec(), {"torch": "2", "transformer_lens": "3", "saegap": "0"})
    assert store.list_jobs() == []


def test_write_shard_refuses_foreign_shards_runs_and_bad_columns(store: Store) -> None:
    job_a, job_b = store.create_job(JobSpec(), VERSIONS), store.create_job(JobSpec(), VERSIONS)
    (run_a,), (run_b,) = store.add_runs(job_a, [run_meta(0)]), store.add_runs(job_b, [run_meta(0)])
    (shard_a,) = store.add_shards(job_a, [(0, 1)])
    good = synthetic_shard(0, 1, 4, ("sae",))
    with pytest.raises(UnknownShardError, match=f"belongs to job {job_a}"):
        store.write_shard(job_b, shard_a, {run_b: good})
    with pytest.raises(UnknownRunError, match=f"not runs of job {job_a}"):
        store.write_shard(job_a, shard_a, {run_b: good})
    with pytest.raises(UnknownShardError):
        store.write_shard(job_a, 12345, {run_a: good})
    with pytest.raises(ValueError, match="lacks columns \\['kl'\\]"):
        store.write_shard(job_a, shard_a, {run_a: (good[0], good[1].drop_columns(["kl"]))})
    assert read.query("SELECT count(*) AS n FROM interventions", store=store).to_pylist() == [{"n": 0}]
