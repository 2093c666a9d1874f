"""The job API the CLI and the UI call. Torch-free: importing it loads no model library.

submit() creates a job and hands it to the queue (SAEGAP_BROKER_URL set) or runs it in
this process; enqueue() only queues; run_embedded() only runs here. Reads (get_job,
list_jobs, progress) go straight to the store. Every function takes an optional Store;
None opens the one the environment describes (schema.config.StoreConfig.from_env).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from schema.jobs import JobInfo, Progress
from schema.spec import JobSpec
from schema.store import Store

log = logging.getLogger(__name__)

# Distribution names of the libraries a job's results depend on (stored with the job).
_VERSIONED = {"torch": "torch", "transformer_lens": "transformer-lens", "sae_lens": "sae-lens", "saegap": "saegap"}
INSPECT_TIMEOUT_S = 300.0
# next_token_distributions' columns, one row per token in the union of the three top-k sets.
NEXT_TOKEN_SCHEMA = pa.schema(
    [("token_id", pa.int64()), ("token_text", pa.string()), ("logprob_clean", pa.float32()),
     ("logprob_sae", pa.float32()), ("logprob_eps_random", pa.float32()), ("rank", pa.int32())]
)  # fmt: skip


class QueueNotConfigured(RuntimeError):
    """enqueue() or a queued call without SAEGAP_BROKER_URL."""


def queue_configured() -> bool:
    return bool(os.environ.get("SAEGAP_BROKER_URL"))


@cache
def _default_store() -> Store:
    return Store.open()


def _store(store: Store | None) -> Store:
    return store if store is not None else _default_store()


def model_queue(model: str) -> str:
    """The queue of one model's tasks: workers started with `--models <model>` take them."""
    from worker.celery_app import DEFAULT_QUEUE

    return f"{DEFAULT_QUEUE}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', model).strip('_')}"


def versions() -> dict[str, Any]:
    """Installed versions (read from package metadata, so without importing torch)."""
    found: dict[str, Any] = {}
    for key, dist in _VERSIONED.items():
        try:
            found[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[key] = "not installed"
    found["git"] = _git_hash()
    return found


def _git_hash() -> str | None:
    """Commit of the saegap checkout, so a result traces to the code that made it; None outside git."""
    repo = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def create(spec: JobSpec, store: Store | None = None) -> int:
    """Store a job (status queued) without running it."""
    job_id = _store(store).create_job(spec, versions())
    log.info("job %d created: model %s, SAEs %s", job_id, spec.model, ", ".join(spec.saes))
    return job_id


def submit(spec: JobSpec, *, store: Store | None = None) -> int:
    """Create a job; queue it when a broker is configured, else run it here (blocking). Returns its id."""
    if queue_configured():
        return enqueue(spec, store=store)
    job_id = create(spec, store)
    run_embedded(job_id, store=store)
    return job_id


def enqueue(spec: JobSpec, store: Store | None = None) -> int:
    """Create a job and send its plan_job task to the model's queue; never runs it here."""
    if not queue_configured():
        raise QueueNotConfigured("no queue: set SAEGAP_BROKER_URL (e.g. redis://localhost:6379/0)")
    from worker.tasks import plan_job_task

    job_id = create(spec, store)
    plan_job_task.apply_async(args=[job_id], queue=model_queue(spec.model))
    return job_id


def run_embedded(job_id: int, store: Store | None = None) -> JobInfo:
    """Plan and run a stored job in this process (imports torch); returns it finished."""
    from worker.embedded import run_job

    return run_job(job_id, _store(store))


def get_job(job_id: int, store: Store | None = None) -> JobInfo:
    return _store(store).get_job(job_id)


def list_jobs(store: Store | None = None, limit: int = 100) -> list[JobInfo]:
    """Newest first."""
    return _store(store).list_jobs(limit=limit)


def progress(job_id: int, store: Store | None = None) -> Progress:
    return _store(store).progress(job_id)


def cancel(job_id: int, store: Store | None = None) -> None:
    """Mark a job cancelled: workers skip its remaining shards; finished shards' records stay."""
    _store(store).cancel_job(job_id)
    log.info("job %d cancelled", job_id)


def next_token_distributions(
    job_id: int, run_id: int, sequence: int, position: int, top_k: int = 25, store: Store | None = None
) -> pa.Table:
    """Top-k next tokens at one position: clean vs SAE vs eps_random log-probs (NEXT_TOKEN_SCHEMA).

    Computed by a worker of the job's model when a broker is configured, else here.
    """
    job = get_job(job_id, store)
    if queue_configured():
        from worker.tasks import inspect_task

        args = [job.spec.model_dump(mode="json"), _run_index(job_id, run_id, store), sequence, position, top_k]
        rows = inspect_task.apply_async(args=args, queue=model_queue(job.spec.model)).get(timeout=INSPECT_TIMEOUT_S)
        return pa.Table.from_pylist(rows, schema=NEXT_TOKEN_SCHEMA)
    from worker.inspect import next_token_table

    return next_token_table(job.spec, _run_index(job_id, run_id, store), sequence, position, top_k)


def _run_index(job_id: int, run_id: int, store: Store | None) -> int:
    """Position of a run among its job's runs (= PreparedJob.runs index; runs are stored in that order)."""
    run_ids = sorted(_store(store).job_run_ids(job_id))
    if run_id not in run_ids:
        raise ValueError(f"run {run_id} is not a run of job {job_id} (its runs: {run_ids})")
    return run_ids.index(run_id)
