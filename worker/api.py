"""The job API the CLI, the UI and the Python API call. Torch-free: importing it loads no model library.

start() is the one place that decides "queue it or run it here": it hands a job to the queue
when a broker is configured (SAEGAP_BROKER_URL) and runs it in this process otherwise, waiting
for it or not; `saegap evaluate`, `saegap submit`, the UI and `saegap.evaluate` all call it.
enqueue() only queues (and stores nothing if the broker cannot take the job); run_embedded()
only runs here; resume() reruns the unfinished shards of a job whose worker
died, and stale_reason() tells whether a running job's worker is gone or silent. Reads (get_job,
list_jobs, progress) go straight to the store. Every function takes an optional Store;
None opens the one the environment describes (schema.config.StoreConfig.from_env).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from schema.errors import JobStateError
from schema.jobs import JobInfo, Progress, Versions, as_utc
from schema.records import NEXT_TOKEN_SCHEMA as NEXT_TOKEN_SCHEMA  # next_token_distributions' columns
from schema.spec import JobSpec
from schema.store import Store, process_store
from schema.tables import FINISHED_STATUSES
from schema.tables import UNFINISHED_STATUSES as UNFINISHED_STATUSES  # the job API names them for the UI
from worker.errors import BadInput, QueueUnavailable, one_line
from worker.queues import model_queue as model_queue  # the job API names it for the worker command

log = logging.getLogger(__name__)

INSPECT_TIMEOUT_S = 300.0
BROKER_TIMEOUT_S = 5.0  # how long enqueue waits for the broker before refusing the job
# A planning/running job whose worker has not reported for this long is stale (its process
# reports every worker.steps.HEARTBEAT_S = 30 s while it works); SAEGAP_STALE_AFTER_S overrides.
STALE_AFTER_S = 600.0
ACTIVE_STATUSES = ("planning", "running")
POLL_S = 1.0  # how often start(wait=True) reads a queued job's progress


class QueueNotConfigured(RuntimeError):
    """enqueue() or a queued call without SAEGAP_BROKER_URL."""


def queue_configured() -> bool:
    return bool(os.environ.get("SAEGAP_BROKER_URL"))


def _default_store() -> Store:
    return process_store()


def _store(store: Store | None) -> Store:
    return store if store is not None else _default_store()


def versions() -> dict[str, Any]:
    """Installed versions of schema.jobs.Versions' libraries (package metadata: no torch import), and git."""
    libraries = [name for name in Versions.model_fields if name != "git"]
    return {**{name: _installed(name.replace("_", "-")) for name in libraries}, "git": _git_hash()}


def _installed(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


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


ProgressCallback = Callable[[Progress], None]
# Where start() runs a job: "auto" queues it when a broker is configured, else runs it here;
# "queue" refuses without a broker (`saegap submit`); "here" never queues (in-memory objects).
Where = Literal["auto", "queue", "here"]


@dataclass(frozen=True)
class Started:
    """What start() did: the job, and whether it went to the workers' queue (else it runs here)."""

    job: JobInfo
    queued: bool

    @property
    def job_id(self) -> int:
        return self.job.id


_THREADS: list[threading.Thread] = []  # jobs start(wait=False) runs in this process's daemon threads


def start(
    spec: JobSpec,
    *,
    store: Store | None = None,
    where: Where = "auto",
    wait: bool = True,
    on_progress: ProgressCallback | None = None,
) -> Started:
    """Create a job and start it: the one function that decides "queue it or run it here".

    Queued when `where` is "queue", or "auto" with a broker configured; else run in this process.
    wait=True returns the job finished (`on_progress` gets its progress per shard, or per poll of a
    queued job); wait=False returns it at once (a job run here then runs in a daemon thread, which
    dies with the process). Raises QueueNotConfigured / QueueUnavailable (nothing stored) when it
    should queue and cannot.
    """
    opened = _store(store)
    queued = where == "queue" or (where == "auto" and queue_configured())
    job_id = enqueue(spec, store=opened) if queued else create(spec, opened)
    if queued:
        job = wait_for(job_id, opened, on_progress) if wait else opened.get_job(job_id)
    elif wait:
        job = run_embedded(job_id, store=opened, on_shard=on_progress)
    else:
        _run_in_thread(job_id, opened)
        job = opened.get_job(job_id)
    return Started(job, queued)


def submit(spec: JobSpec, *, store: Store | None = None) -> int:
    """start() and wait: queued when a broker is configured, else run here. Returns the job's id."""
    return start(spec, store=store).job_id


def wait_for(job_id: int, store: Store | None = None, on_progress: ProgressCallback | None = None) -> JobInfo:
    """Poll a job's progress every POLL_S until it finishes (done, failed or cancelled); returns it."""
    opened = _store(store)
    while (state := opened.progress(job_id)).status not in FINISHED_STATUSES:
        if on_progress is not None:
            on_progress(state)
        time.sleep(POLL_S)
    if on_progress is not None:
        on_progress(state)
    return opened.get_job(job_id)


def _run_in_thread(job_id: int, store: Store) -> None:
    thread = threading.Thread(target=_run_quietly, args=(job_id, store), name=f"saegap-job-{job_id}", daemon=True)
    thread.start()
    _THREADS.append(thread)


def _run_quietly(job_id: int, store: Store) -> None:
    try:
        log.info("job %d ended: %s", job_id, run_embedded(job_id, store=store).status)
    except Exception:  # the job's own row records its error; keep the process alive
        log.exception("job %d failed", job_id)


def running_threads() -> int:
    """Jobs start(wait=False) is running in this process now."""
    return sum(thread.is_alive() for thread in _THREADS)


def enqueue(spec: JobSpec, store: Store | None = None) -> int:
    """Create a job and send its plan_job task to the model's queue; never runs it here.

    Raises QueueUnavailable, storing nothing, when the broker cannot take the message.
    """
    if not queue_configured():
        raise QueueNotConfigured("no queue: set SAEGAP_BROKER_URL (e.g. redis://localhost:6379/0)")
    check_broker()
    job_id = create(spec, store)
    try:
        _send_plan(job_id, spec.model)
    except Exception as error:
        _store(store).delete_job(job_id)
        raise QueueUnavailable(f"the broker did not take the job ({one_line(error)}); nothing was stored") from error
    return job_id


def check_broker() -> None:
    """Raise QueueUnavailable unless the broker (SAEGAP_BROKER_URL) accepts a connection now."""
    from worker.celery_app import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
    except Exception as error:
        url = app.conf.broker_url
        raise QueueUnavailable(f"cannot reach the broker at {url} ({one_line(error)}); nothing was stored") from None


def _send_plan(job_id: int, model: str) -> None:
    from worker.tasks import plan_job_task

    plan_job_task.apply_async(args=[job_id], queue=model_queue(model), retry=False)


def run_embedded(job_id: int, store: Store | None = None, on_shard: ProgressCallback | None = None) -> JobInfo:
    """Plan and run a stored job in this process (imports torch); returns it finished."""
    from worker.steps import run_job

    return run_job(job_id, _store(store), on_shard=on_shard)


def resume(job_id: int, *, force: bool = False, store: Store | None = None) -> JobInfo:
    """Rerun the unfinished shards of a job whose worker died (or that failed or was cancelled).

    Finished shards and their records stay; the rest run again and write the records an
    uninterrupted run would have. Queued to the workers when a broker is configured (returns
    the job queued), else run here (returns it finished). Refuses a done job, and a running
    job whose worker is still alive unless `force`.
    """
    opened = _store(store)
    job = opened.get_job(job_id)
    if job.status in ACTIVE_STATUSES and not force and stale_reason(job) is None:
        raise JobStateError(
            f"job {job_id} is {job.status} on {job.worker or 'a worker'}, which reported "
            f"{_age(job.heartbeat_at):.0f}s ago; resume a job only once its worker is gone (or pass --force)"
        )
    if queue_configured():
        return _resume_queued(job, opened)
    log.info("job %d resumed: %d shard(s) to run", job_id, opened.reopen_job(job_id))
    return run_embedded(job_id, store=opened)


def _resume_queued(job: JobInfo, store: Store) -> JobInfo:
    """Reopen the job and send its plan again; a broker that refuses fails it (resume can be retried)."""
    check_broker()
    log.info("job %d resumed on the queue: %d shard(s) to run", job.id, store.reopen_job(job.id))
    try:
        _send_plan(job.id, job.spec.model)
    except Exception as error:
        store.set_job_status(job.id, "failed", f"resume: the broker did not take the job ({one_line(error)})")
        raise QueueUnavailable(f"the broker did not take job {job.id} ({one_line(error)})") from error
    return store.get_job(job.id)


def stale_reason(job: JobInfo, now: datetime | None = None) -> str | None:
    """Why a planning/running job looks abandoned, or None: its embedded process is gone, or it is silent."""
    if job.status not in ACTIVE_STATUSES:
        return None
    host, _, pid = (job.worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        return f"its process {pid} on {host} is gone"
    age = _age(job.heartbeat_at or job.started_at or job.created_at, now)
    limit = float(os.environ.get("SAEGAP_STALE_AFTER_S", STALE_AFTER_S))
    return f"no worker has reported for {age:.0f}s" if age > limit else None


def _age(moment: datetime | None, now: datetime | None = None) -> float:
    """Seconds since `moment` (0 when unknown)."""
    moment = as_utc(moment)
    return ((now or datetime.now(UTC)) - moment).total_seconds() if moment is not None else 0.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def preflight(spec: JobSpec) -> list[str]:
    """What the CLI checks before it writes a job, without loading a model: every bundled SAE name
    exists, the token set is readable, and the job is within SAEGAP_MAX_ROWS. Empty when it may start."""
    from worker.registry import open_token_set, registry
    from worker.size import refusal

    problems = [_unknown_sae(entry, registry()["releases"]) for entry in spec.saes]
    try:
        if spec.tokens is not None and spec.tokens.endswith(".npy"):  # text is read when the job prepares
            open_token_set(spec.tokens, mmap=True)
    except BadInput as error:
        problems.append(str(error))
    problems.append(refusal(spec))
    return [problem.replace("add --yes", "submit it from the CLI with --yes") for problem in problems if problem]


def _unknown_sae(entry: str, releases: dict) -> str | None:
    """Why a bundled `release/sae_id` names no SAE (None for other names: the job resolves those)."""
    release, _, sae_id = entry.partition("/")
    if Path(entry).is_dir() or release not in releases or not sae_id or sae_id in releases[release]["saes"]:
        return None
    return f"release {release!r} has no SAE {sae_id!r}; it has {', '.join(releases[release]['saes'])}"


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
    from worker.next_token import next_token_table

    return next_token_table(job.spec, _run_index(job_id, run_id, store), sequence, position, top_k)


def _run_index(job_id: int, run_id: int, store: Store | None) -> int:
    """Position of a run among its job's runs (= PreparedJob.runs index; runs are stored in that order)."""
    run_ids = sorted(_store(store).job_run_ids(job_id))
    if run_id not in run_ids:
        raise ValueError(f"run {run_id} is not a run of job {job_id} (its runs: {run_ids})")
    return run_ids.index(run_id)


def bundled_token_sets() -> list[str]:
    """Names of the token sets models/registry.json bundles (what the UI accepts without a path)."""
    from worker.registry import registry

    return list(registry()["token_sets"])


def data_dir() -> Path:
    """The local data dir of this process's store description (SAEGAP_DATA)."""
    from schema.config import StoreConfig

    return StoreConfig.from_env().data_dir
