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


def _run_embedded(job_id: int) -> None:
    try:
        info = jobs_api().run_embedded(job_id)
        log.info("embedded job %d ended: %s", job_id, info.status)
    except Exception:  # the job's own row records the error; keep the server alive
        log.exception("embedded job %d failed", job_id)


def running_threads() -> int:
    return sum(thread.is_alive() for thread in _THREADS)
