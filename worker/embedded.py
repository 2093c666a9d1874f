"""A job's steps as plain functions over the store, and the in-process runner built on them.

`plan_job` and `run_shard` are what the Celery tasks (worker/tasks.py) wrap; `run_job`
runs both in this process, one shard after another (no broker: `saegap evaluate`).
Both steps are idempotent, so a redelivered message never duplicates a row: planning
reuses runs and shards already stored, and a shard's write replaces its earlier attempt.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from schema.errors import JobStateError
from schema.jobs import JobInfo, Progress, ShardInfo
from schema.spec import JobSpec
from schema.store import Store
from schema.tables import FINISHED_STATUSES
from worker.errors import BadInput
from worker.evaluate import PreparedJob, evaluate_shard, prepare_job, shard_ranges

log = logging.getLogger(__name__)

ShardCallback = Callable[[Progress], None]

_PREPARED: dict[str, PreparedJob] = {}  # spec JSON -> this process's one prepared job


def prepared(spec: JobSpec) -> PreparedJob:
    """prepare_job once per process and spec (a worker keeps one model; a new spec replaces it)."""
    key = spec.model_dump_json()
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = prepare_job(spec)
    return _PREPARED[key]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def plan_job(job_id: int, store: Store) -> list[ShardInfo]:
    """Prepare the job, store its runs and shards; returns the shards still to run.

    BadInput fails the job with its message (nothing written); a cancelled job plans nothing.
    """
    job = store.get_job(job_id)
    if job.status in FINISHED_STATUSES:
        log.info("job %d is %s: not planned", job_id, job.status)
        return []
    store.set_job_status(job_id, "planning")
    try:
        ready = prepared(job.spec)
    except BadInput as error:
        store.set_job_status(job_id, "failed", str(error))
        log.error("job %d failed: %s", job_id, error)
        return []
    if not store.job_run_ids(job_id):  # a redelivered plan keeps the runs it stored
        store.add_runs(job_id, ready.runs)
    if not store.list_shards(job_id):
        store.add_shards(job_id, shard_ranges(len(ready.tokens), job.spec.sequences_per_shard))
    return [shard for shard in store.list_shards(job_id) if shard.status != "done"]


def run_shard(job_id: int, shard_id: int, store: Store, worker: str) -> bool:
    """Evaluate one shard and write its records; returns False when skipped (job finished, shard done).

    BadInput fails the job (retrying cannot help); other errors propagate for the caller to retry.
    """
    job = store.get_job(job_id)
    shard = store.get_shard(shard_id)
    if job.status in FINISHED_STATUSES or shard.status == "done":
        log.info("shard %d of job %d skipped: job %s, shard %s", shard_id, job_id, job.status, shard.status)
        return False
    try:
        store.start_shard(shard_id, worker)
    except JobStateError as error:  # cancelled between the check and the start
        log.info("%s", error)
        return False
    try:
        records = evaluate_shard(prepared(job.spec), shard.seq_start, shard.seq_end)
    except BadInput as error:
        fail_job(job_id, shard_id, str(error), store)
        return False
    run_ids = sorted(store.job_run_ids(job_id))  # RunRecords.key indexes the runs in insertion (= id) order
    written = store.write_shard(job_id, shard_id, {run_ids[r.key]: (r.tokens, r.interventions) for r in records})
    store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)
    log.info("shard %d of job %d: %d rows, %d tokens", shard_id, job_id, written.rows, written.tokens)
    return True


def fail_job(job_id: int, shard_id: int | None, error: str, store: Store) -> None:
    """Record a final failure on the shard (if any) and the job."""
    if shard_id is not None:
        store.fail_shard(shard_id, error)
    store.set_job_status(job_id, "failed", error)
    log.error("job %d failed: %s", job_id, error)


def run_job(job_id: int, store: Store, on_shard: ShardCallback | None = None) -> JobInfo:
    """Plan and run every shard of a job in this process; `on_shard` gets the progress after each."""
    shards = plan_job(job_id, store)
    worker = worker_name()
    for shard in shards:
        if store.get_job(job_id).status in FINISHED_STATUSES:
            break
        try:
            run_shard(job_id, shard.id, store, worker)
        except Exception as error:
            fail_job(job_id, shard.id, f"{type(error).__name__}: {error}", store)
            raise
        if on_shard is not None:
            on_shard(store.progress(job_id))
    return store.get_job(job_id)
