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
from typing import Any

from schema.spec import JobSpec
from ui.data import (
    CONTEXTS_PER_TOKEN,
    CURVE_INTERVENTIONS,
    HEATMAP_TOKENS,
    KL_RANGE,
    MIN_COUNT,
    OCCURRENCES,
    PAIR_AXES,
    PAIR_SAMPLE,
    SEED_INTERVENTIONS,
    TOP_PER_RUN,
    answer,
    context_size,
    job_choices,
    job_table,
    jobs_api,
    next_layer_run,
)

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
    a read process's start, and every page's first answers with its widgets at their defaults (ui/data.py
    KL_RANGE and the rest) for the job the page opens on, the newest finished job of its scope: the Layer
    summary's first (the verdict's bootstrap above all), then Distributions', Where the gap comes from's,
    the Correlation explorer's, Tokens' and One context's. They are kept as finished jobs' answers are
    (ui/data.py answer). A page that asks for an answer the thread is still computing waits for it rather
    than computing it twice.
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

    jobs = job_table()  # imports the job API and opens the store
    done = jobs[jobs.status == "done"]
    all_token, newest = job_choices(done, "all_tokens")[:1], job_choices(done)[:1]  # what the pages open on
    for job in all_token:
        answer("runs", job=job)  # starts a read process
        for name, params in _all_token_questions(job):
            answer(name, job=job, **params)
    for job in newest:
        _warm_any_scope_pages(job)


def _all_token_questions(job: int) -> list[tuple[str, dict[str, Any]]]:
    """The Layer summary's and Distributions' first questions, as those pages ask them (the Layer summary's
    first: it is the page a user opens first)."""
    seed = {"interventions": SEED_INTERVENTIONS}
    return [
        ("verdict", {}), ("layer_summary", seed), ("compare_saes", {}),
        ("kl_histogram", {**seed, "kl_min": KL_RANGE[0], "kl_max": KL_RANGE[1]}),
        *[("loss_histogram", {"interventions": [name]}) for name in SEED_INTERVENTIONS],
        ("sensitivity_curve", {"interventions": CURVE_INTERVENTIONS}), ("by_position", seed),
    ]  # fmt: skip


def _warm_any_scope_pages(job: int) -> None:
    """The first questions of the pages that open on a job of either scope (their widgets at their defaults):
    Where the gap comes from, the Correlation explorer, Tokens and One context."""
    for name in ("error_parts", "amplification", "joint"):
        answer(name, job=job)
    runs = answer("runs", job=job)
    if runs.empty:
        return
    first = int(runs.run_id.iloc[0])
    answer("token_sample", job=job, run=first, x=PAIR_AXES[0], y=PAIR_AXES[1], other_run=next_layer_run(runs, first),
           position_min=0, position_max=context_size(job) - 1, token_text=None, limit=PAIR_SAMPLE)  # fmt: skip
    answer("cross_layer", job=job, max_tokens=HEATMAP_TOKENS)
    top = answer("top_tokens", job=job, min_count=MIN_COUNT, top=TOP_PER_RUN)
    if len(top):
        answer("token_contexts", job=job, run=int(top.run_id.iloc[0]), token_id=int(top.token_id.iloc[0]),
               limit=CONTEXTS_PER_TOKEN)  # fmt: skip
    answer("token_contexts", job=job, run=first, limit=OCCURRENCES)
