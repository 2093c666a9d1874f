"""Submitting jobs from the UI without blocking the page.

With a broker (`worker.jobs.queue_configured()`), `enqueue` hands the job to the Celery
workers and returns its id. Without one (embedded mode), the UI stores the job with
`worker.jobs.create` and runs it with `worker.jobs.run_embedded` in a daemon thread of the
Streamlit server (blocking until the job ends): the page stays responsive, the job id is
known at once and the job list shows its progress. The thread dies with the server; a job
it left unfinished shows as queued/running and can be cancelled.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from schema.spec import JobSpec
from ui.data import jobs_api

log = logging.getLogger(__name__)

_THREADS: list[threading.Thread] = []  # embedded runs started by this server process


def submit_job(spec: JobSpec) -> str:
    """Queue or start `spec`; returns a sentence saying what happened."""
    jobs = jobs_api()
    if jobs.queue_configured():
        return f"job {jobs.enqueue(spec)} queued for the workers"
    job_id = jobs.create(spec)
    thread = threading.Thread(target=_run_embedded, args=(job_id,), name=f"saegap-job-{job_id}", daemon=True)
    thread.start()
    _THREADS.append(thread)
    return f"job {job_id} started in this server's background thread"


def preflight(spec: JobSpec) -> list[str]:
    """What the CLI checks before it writes a job, without loading a model: every bundled SAE name
    exists, the token set is readable, and the job is within SAEGAP_MAX_ROWS. Empty when it may start."""
    from worker.errors import BadInput
    from worker.registry import open_token_set, registry
    from worker.size import refusal

    problems = [_unknown_sae(entry, registry()["releases"]) for entry in spec.saes]
    try:
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


def _run_embedded(job_id: int) -> None:
    try:
        info = jobs_api().run_embedded(job_id)
        log.info("embedded job %d ended: %s", job_id, info.status)
    except Exception:  # the job's own row records the error; keep the server alive
        log.exception("embedded job %d failed", job_id)


def running_threads() -> int:
    return sum(thread.is_alive() for thread in _THREADS)


_WARM: set[tuple[int, int]] = set()  # (job, run) whose model this server has started loading


def warm_up(job_id: int, run_id: int) -> None:
    """Load the job's model in a daemon thread (one tiny next-token call), once per (job, run) and server,
    so the first 'Compute' on the One-context page does not wait for the model to load."""
    if (job_id, run_id) in _WARM:
        return
    _WARM.add((job_id, run_id))
    threading.Thread(target=_warm, args=(job_id, run_id), name=f"saegap-warm-{job_id}", daemon=True).start()


def _warm(job_id: int, run_id: int) -> None:
    try:
        jobs_api().next_token_distributions(job_id, run_id, 0, 1, top_k=1)
    except Exception as error:  # e.g. the model is not available here; the page reports it on Compute
        log.info("warm-up of job %d run %d did not load a model: %s", job_id, run_id, error)
