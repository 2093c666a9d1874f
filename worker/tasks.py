"""Celery tasks: thin wrappers over worker.steps's plain functions and worker.next_token.

Torch is imported inside the task bodies, so the job API can import this module to send
tasks without loading a model library. plan_job fans out one run_shard per shard, to the
same model queue it arrived on, so a worker takes the shards of the model it holds.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from schema.store import Store, process_store
from worker.celery_app import app

log = logging.getLogger(__name__)

MAX_RETRIES = 5
# Transient failures (a lost database/broker connection, a lake write conflict, CUDA OOM
# from a neighbour) retry with exponential backoff; BadInput never reaches here (the plain
# functions record it on the job and return).
_RETRY = dict(autoretry_for=(Exception,), retry_backoff=2, retry_backoff_max=120, retry_jitter=True)


def worker_store() -> Store:
    """This worker process's store (schema.store.process_store: opened on first use, from the environment)."""
    return process_store()


class _ShardTask(Task):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Retries exhausted: the shard and its job fail with the last error."""
        from worker.steps import fail_job

        job_id, shard_id = args[0], args[1] if len(args) > 1 else None
        fail_job(job_id, shard_id, exc, worker_store())


@app.task(name="saegap.plan_job", bind=True, base=_ShardTask, max_retries=MAX_RETRIES, **_RETRY)
def plan_job_task(self: Task, job_id: int) -> int:
    """Plan a job and enqueue one run_shard per shard; returns the number of shards sent."""
    from worker.queues import model_queue
    from worker.steps import plan_job

    store = worker_store()
    shards = plan_job(job_id, store, self.request.hostname or None)
    queue = model_queue(store.get_job(job_id).spec.model)
    for shard in shards:
        run_shard_task.apply_async(args=[job_id, shard.id], queue=queue)
    return len(shards)


@app.task(name="saegap.run_shard", bind=True, base=_ShardTask, max_retries=MAX_RETRIES, **_RETRY)
def run_shard_task(self: Task, job_id: int, shard_id: int) -> bool:
    """Evaluate and write one shard; False when skipped (job cancelled or finished, shard done)."""
    from worker.steps import run_shard, worker_name

    return run_shard(job_id, shard_id, worker_store(), f"{self.request.hostname or worker_name()}")


@app.task(name="saegap.inspect", max_retries=0)
def inspect_task(spec: dict[str, Any], run_index: int, sequence: int, position: int, top_k: int) -> list[dict]:
    """worker.next_token.next_token_table as JSON rows (the result travels through the result backend)."""
    from schema.spec import JobSpec
    from worker.next_token import next_token_table

    return next_token_table(JobSpec.model_validate(spec), run_index, sequence, position, top_k).to_pylist()
