"""Submitting jobs from the UI without blocking the page.

`worker.api.start(spec, wait=False)` decides, as for every other entry point: with a broker
it hands the job to the Celery workers; without one (embedded mode) it runs the job in a
daemon thread of the Streamlit server. Either way the page stays responsive, the job id is
known at once and the job list shows its progress. The thread dies with the server; a job
it left unfinished shows as queued/running and can be cancelled.
"""

from __future__ import annotations

import logging
import os
import threading

from schema.spec import JobSpec
from ui.data import jobs_api

log = logging.getLogger(__name__)


def submit_job(spec: JobSpec) -> str:
    """Start `spec` without waiting; returns a sentence saying what happened."""
    started = jobs_api().start(spec, wait=False)
    if started.queued:
        return f"job {started.job_id} queued for the workers"
    return f"job {started.job_id} started in this server's background thread"


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


_WARMED_STORES: set[tuple[str | None, str | None]] = set()  # (SAEGAP_DATA, SAEGAP_DATABASE_URL) warmed here
WARM_THREAD = "saegap-warm-store"
# Streamlit logs "missing ScriptRunContext" for each cached answer the warm-up asks for (the answer's spinner has
# no page to show in); the thread has no page by design.
_CONTEXT_LOG = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")


def _not_the_warm_thread(record: logging.LogRecord) -> bool:
    return record.threadName != WARM_THREAD


def warm_store() -> None:
    """Once per server and store, in a daemon thread: what a page's first visit would otherwise wait for.

    The job API's import and the store's opening (every page), the chart and analysis modules' imports,
    a read process's start, and the Layer summary's default answers for the newest finished all-token job
    (the verdict's bootstrap above all), kept as finished jobs' answers are (ui/data.py answer). A page
    that asks for an answer the thread is still computing waits for it rather than computing it twice.
    """
    key = (os.environ.get("SAEGAP_DATA"), os.environ.get("SAEGAP_DATABASE_URL"))
    if key in _WARMED_STORES:
        return
    _WARMED_STORES.add(key)
    if _not_the_warm_thread not in _CONTEXT_LOG.filters:
        _CONTEXT_LOG.addFilter(_not_the_warm_thread)
    threading.Thread(target=_warm_store, name=WARM_THREAD, daemon=True).start()


def _warm_store() -> None:
    try:
        _warm_answers()
    except Exception as error:  # e.g. a store that cannot be opened: the pages report it themselves
        log.info("warming the store did not finish: %s", error)


def _warm_answers() -> None:
    import altair  # noqa: F401  (imported here so the first chart page finds it loaded)

    import analysis.colours  # noqa: F401
    from ui.data import SEED_INTERVENTIONS, answer, job_choices, job_table

    jobs = job_table()  # imports the job API and opens the store
    all_token = job_choices(jobs[jobs.status == "done"], "all_tokens")
    if not all_token:
        return
    job = all_token[0]  # what the Layer summary opens on
    answer("runs", job=job)  # starts a read process
    for name, params in (("verdict", {}), ("layer_summary", {"interventions": SEED_INTERVENTIONS}),
                         ("compare_saes", {})):  # fmt: skip
        answer(name, job=job, **params)
