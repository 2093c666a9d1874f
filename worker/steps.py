"""A job's steps as plain functions over the store, and the in-process runner built on them.

`plan_job` and `run_shard` are what the Celery tasks (worker/tasks.py) wrap; `run_job`
runs both in this process, one shard after another (no broker: `saegap evaluate`).
Both steps are idempotent, so a redelivered message never duplicates a row: planning
reuses runs and shards already stored, and a shard's write replaces its earlier attempt.
So a job whose process died resumes (`saegap resume`) by running its unfinished shards.

Every failure ends the job: BadInput at once, anything else after the caller's retries
(`run_job` has none). The job's error is one line; the traceback goes to the log.
While a step works, a heartbeat thread stamps the job every HEARTBEAT_S seconds, and a
running shard records its tokens done at most every PROGRESS_EVERY_S seconds (progress inside it).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from schema.config import StoreConfig
from schema.errors import JobStateError
from schema.jobs import JobInfo, Progress, ShardInfo
from schema.spec import JobSpec
from schema.store import Store
from schema.tables import FINISHED_STATUSES
from worker.errors import BadInput, describe
from worker.prepare import PreparedJob, evaluate_shard, prepare_job, shard_ranges

log = logging.getLogger(__name__)

ShardCallback = Callable[[Progress], None]
HEARTBEAT_S = 30.0  # how often a working process stamps its job (worker/api.py STALE_AFTER_S reads it)
PROGRESS_EVERY_S = 1.0  # at most this often a running shard writes its tokens done (one short UPDATE)

_PREPARED: dict[tuple[str, str], PreparedJob] = {}  # (spec JSON, store) -> this process's one prepared job


def prepared(spec: JobSpec, store: StoreConfig | None = None) -> PreparedJob:
    """prepare_job once per process, spec and store (a worker keeps one model; a new spec replaces it).

    `store` is where a tokenized set is cached and catalogued; None: the store SAEGAP_DATA describes."""
    config = store or StoreConfig.from_env()
    key = (spec.model_dump_json(), config.model_dump_json())
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = prepare_job(spec, config)
    return _PREPARED[key]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def heartbeat(store: Store, job_id: int, worker: str) -> Iterator[None]:
    """Stamp the job now and every HEARTBEAT_S seconds until the block ends (a daemon thread)."""
    store.touch_job(job_id, worker)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                store.touch_job(job_id, worker)
            except Exception:  # a missed beat is harmless; the next one may land
                log.debug("heartbeat of job %d failed", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class ShardTokens:
    """The engine's on_tokens for one shard: writes its tokens done to the shard's row, throttled.

    The first report and the last (done == planned) always land; between them at most one write per
    PROGRESS_EVERY_S. A failed write only costs that report (progress is advisory).
    """

    def __init__(self, store: Store, shard_id: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.shard_id, self.clock = store, shard_id, clock
        self.last_write: float | None = None

    def __call__(self, done: int, planned: int) -> None:
        now = self.clock()
        if done < planned and self.last_write is not None and now - self.last_write < PROGRESS_EVERY_S:
            return
        self.last_write = now
        try:
            self.store.shard_tokens(self.shard_id, done, planned)
        except Exception:
            log.debug("progress of shard %d not recorded", self.shard_id, exc_info=True)


def plan_job(job_id: int, store: Store, worker: str | None = None) -> list[ShardInfo]:
    """Prepare the job, store its runs and shards; returns the shards still to run.

    BadInput fails the job with its message (nothing written); a cancelled job plans nothing.
    """
    job = store.get_job(job_id)
    if job.status in FINISHED_STATUSES:
        log.info("job %d is %s: not planned", job_id, job.status)
        return []
    store.set_job_status(job_id, "planning")
    try:
        with heartbeat(store, job_id, worker or worker_name()):
            ready = prepared(job.spec, store.config)
    except BadInput as error:
        fail_job(job_id, None, error, store)
        return []
    if ready.warnings:  # shown beside the results by status, the report and the UI
        store.set_job_warnings(job_id, list(ready.warnings))
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
        with heartbeat(store, job_id, worker):
            records = evaluate_shard(
                prepared(job.spec, store.config), shard.seq_start, shard.seq_end, ShardTokens(store, shard_id)
            )
    except BadInput as error:
        fail_job(job_id, shard_id, error, store)
        return False
    run_ids = sorted(store.job_run_ids(job_id))  # RunRecords.key indexes the runs in insertion (= id) order
    amplification = {run_ids[r.key]: r.amplification for r in records if r.amplification is not None}
    written = store.write_shard(
        job_id, shard_id, {run_ids[r.key]: (r.tokens, r.interventions) for r in records}, amplification
    )
    store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)
    log.info("shard %d of job %d: %d rows, %d tokens", shard_id, job_id, written.rows, written.tokens)
    return True


def fail_job(job_id: int, shard_id: int | None, error: BaseException | str, store: Store) -> None:
    """Record a final failure on the shard (if any) and the job: one line there, the traceback in the log."""
    message = error if isinstance(error, str) else describe(error)
    if shard_id is not None:
        store.fail_shard(shard_id, message)
    store.set_job_status(job_id, "failed", message)
    log.error("job %d failed: %s", job_id, message, exc_info=_traceback_worth_logging(error))


def _traceback_worth_logging(error: BaseException | str) -> BaseException | None:
    """Unexpected errors and wrapped load errors keep their traceback; a plain BadInput says it all."""
    if isinstance(error, str) or (isinstance(error, BadInput) and error.__cause__ is None):
        return None
    return error


def run_job(job_id: int, store: Store, on_shard: ShardCallback | None = None) -> JobInfo:
    """Plan and run every shard of a job in this process; `on_shard` gets the progress after each.

    Returns the job finished: done, cancelled, or failed with the first error (never raises for one).
    """
    worker = worker_name()
    shard_id: int | None = None
    try:
        for shard in plan_job(job_id, store, worker):
            if store.get_job(job_id).status in FINISHED_STATUSES:
                break
            shard_id = shard.id
            run_shard(job_id, shard.id, store, worker)
            shard_id = None
            if on_shard is not None:
                on_shard(store.progress(job_id))
    except Exception as error:
        fail_job(job_id, shard_id, error, store)
    return store.get_job(job_id)
