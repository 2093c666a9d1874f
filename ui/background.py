"""Submitting jobs from the UI without blocking the page.

`worker.jobs.start(spec, wait=False)` decides, as for every other entry point: with a broker
it hands the job to the Celery workers; without one (embedded mode) it runs the job in a
daemon thread of the Streamlit server. Either way the page stays responsive, the job id is
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


def submit_job(spec: JobSpec) -> str:
    """Start `spec` without waiting; returns a sentence saying what happened."""
    started = jobs_api().start(spec, wait=False)
    if started.queued:
        return f"job {started.job_id} queued for the workers"
    return f"job {started.job_id} started in this server's background thread"


def preflight(spec: JobSpec) -> list[str]:
    """What the CLI checks before it writes a job, without loading a model: every bundled SAE name
    exists, the token set is readable, and the job is within SAEGAP_MAX_ROWS. Empty when it may start."""
    from worker.errors import BadInput
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


def running_threads() -> int:
    return jobs_api().running_threads()


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
