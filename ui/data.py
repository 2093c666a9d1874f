"""The UI's only ways to data: named analysis queries, the job API and the read-only SQL function.

Every page reads through these helpers, so the UI never opens a write connection and
never loads a whole table: analysis modules aggregate or sample in SQL. Results are
cached briefly (a running job keeps adding rows, so the cache expires).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from analysis.registry import get_module

CACHE_TTL_S = 15
# Token positions per run the cross-layer heatmap reads (a hash sample of the same positions in
# every run): Pearson's standard error is at most ~0.002 at this size, and the correlation
# page loads 3x faster at seed scale than with every token (BENCHMARKS.md, UI).
HEATMAP_TOKENS = 200_000


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="querying the store ...")
def answer(name: str, **params: Any) -> pd.DataFrame:
    """Module `name` of analysis.registry answered for `params` (its Params fields), as a DataFrame."""
    module = get_module(name)
    return module(module.params(**params)).to_pandas()


def jobs_api() -> Any:
    """worker.jobs, the torch-free job API (imported on use so a page without jobs never needs it)."""
    import worker.jobs

    return worker.jobs


@st.cache_data(ttl=5, show_spinner=False)
def job_table(limit: int = 100) -> pd.DataFrame:
    """One row per job (newest first): id, status, model, SAEs, scope, shards and tokens done."""
    rows = [_job_row(info) for info in jobs_api().list_jobs(limit=limit)]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


JOB_COLUMNS = ("job", "status", "model", "saes", "scope", "shards", "tokens_done", "created", "error")


def _job_row(info: Any) -> dict[str, Any]:
    return {
        "job": info.id, "status": info.status, "model": info.spec.model, "saes": ", ".join(info.spec.saes),
        "scope": info.spec.scope.kind, "shards": f"{info.shards_done}/{info.shards_total}",
        "tokens_done": info.tokens_done, "created": info.created_at, "error": info.error,
    }  # fmt: skip


def job_label(job_id: int, jobs: pd.DataFrame) -> str:
    row = jobs[jobs.job == job_id].iloc[0]
    return f"job {job_id} · {row.model} · {row.scope} · {row.status}"


def pick_job(key: str, scope: str | None = None) -> int | None:
    """Sidebar job picker over jobs with records (done or running), optionally of one scope."""
    jobs = job_table()
    if jobs.empty:
        st.info("No jobs yet: submit one on the Jobs page.")
        return None
    usable = jobs[jobs.status.isin(["done", "running"])]
    if scope is not None:
        usable = usable[usable.scope == scope]
    if usable.empty:
        st.info(f"No finished or running {scope or ''} job yet: submit one on the Jobs page.")
        return None
    ids = usable.job.tolist()
    return st.sidebar.selectbox("Job", ids, key=key, format_func=lambda j: job_label(j, jobs))


def run_label(row: Any) -> str:
    return f"layer {row.layer} · {row.sae} (run {row.run_id})"
