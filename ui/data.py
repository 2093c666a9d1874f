"""The UI's only ways to data: named analysis queries, the job API and the read-only SQL function.

Every page reads through these helpers, so the UI never opens a write connection and
never loads a whole table: analysis modules aggregate or sample in SQL. Results are
cached briefly (a running job keeps adding rows, so the cache expires), keyed on the
module and its parameters, so a page rerun that changes one filter re-reads only the
query that filter feeds.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import pandas as pd
import streamlit as st

CACHE_TTL_S = 15
# Token positions per run the cross-layer heatmap reads (a hash sample of the same positions in
# every run): Pearson's standard error is at most ~0.002 at this size, and the correlation
# page loads 3x faster at seed scale than with every token (BENCHMARKS.md, UI).
HEATMAP_TOKENS = 200_000
# What the seed's figures compare: the SAE, the isotropic baseline and the two anisotropic ones.
SEED_INTERVENTIONS = ["sae", "eps_random", "eps_cov_random", "eps_real_diff"]
# The pages' widgets at their defaults, read by the pages and by the server's warm-up (ui/background.py
# warm_store), which asks each page's first questions with them so that a first visit finds them answered.
KL_RANGE = (1e-4, 1.0)  # Distributions: the KL histogram's clamp
# Distributions: the binned KL-vs-cos-sim curve, the SAE and eps_random placed on the cos-matched baselines' curve.
CURVE_INTERVENTIONS = ["sae", "eps_random", "cos_random_sae_norm", "cos_random_true_norm"]
PAIR_AXES = ("position", "kl_gap")  # Correlations: x and y
PAIR_SAMPLE = 5000  # Correlations: sample size
MIN_COUNT, TOP_PER_RUN = 5, 20  # Tokens: occurrences a token needs, tokens per run
CONTEXTS_PER_TOKEN = 100  # Tokens: the chosen token's contexts listed
OCCURRENCES = 200  # One context: largest-gap positions offered in the picker
# Whitespace made visible in token labels (a leading space is part of most GPT-2 tokens).
_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


KEPT_ANSWERS = 64  # answers about finished jobs this server keeps (the least recently used go first)


def answer(name: str, **params: Any) -> pd.DataFrame:
    """Module `name` of analysis.registry answered for `params` (its Params fields), as a DataFrame.

    A finished job's records no longer change, so its answers are kept, keyed by when it finished
    (a resumed job finishes anew); answers about a running job, or about no one job, expire after
    CACHE_TTL_S because its shards keep adding rows.
    """
    finished = finished_state(params.get("job"))
    if finished is None:
        return _fresh_answer(name, **params)
    return _kept_answer(name, finished, **params)


def finished_state(job_id: Any) -> str | None:
    """'<status> <finished_at>' of a finished job (what its records depend on); None for anything else."""
    if not isinstance(job_id, Integral) or isinstance(job_id, bool):
        return None
    jobs = job_table()
    row = jobs[jobs.job == int(job_id)]
    if row.empty or row.status.iloc[0] not in ("done", "failed", "cancelled") or pd.isna(row.finished.iloc[0]):
        return None
    return f"{row.status.iloc[0]} {row.finished.iloc[0]}"


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="querying the store ...")
def _fresh_answer(name: str, **params: Any) -> pd.DataFrame:
    return _computed(name, params)


@st.cache_data(max_entries=KEPT_ANSWERS, show_spinner="querying the store ...")
def _kept_answer(name: str, finished: str, **params: Any) -> pd.DataFrame:
    """`finished` (finished_state) is part of the key only."""
    return _computed(name, params)


def _computed(name: str, params: dict[str, Any]) -> pd.DataFrame:
    from analysis.registry import get_module  # on first use (ui/background.py warm_store imports it early)

    module = get_module(name)
    return module(module.params(**params)).to_pandas()


def jobs_api() -> Any:
    """worker.api, the torch-free job API (imported on use so a page without jobs never needs it)."""
    import worker.api

    return worker.api


@st.cache_data(ttl=5, show_spinner=False)
def job_table(limit: int = 100) -> pd.DataFrame:
    """One row per job (newest first): id, status, model, SAEs, scope, shards, tokens done, times, error, warnings."""
    rows = [_job_row(info) for info in jobs_api().list_jobs(limit=limit)]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


JOB_COLUMNS = (
    "job", "status", "model", "saes", "scope", "shards", "tokens_done", "created", "started", "finished", "error",
    "warnings",
)  # fmt: skip


def _job_row(info: Any) -> dict[str, Any]:
    return {
        "job": info.id, "status": info.status, "model": info.spec.model, "saes": ", ".join(info.spec.saes),
        "scope": info.spec.scope.kind, "shards": f"{info.shards_done}/{info.shards_total}",
        "tokens_done": info.tokens_done, "created": info.created_at, "started": info.started_at,
        "finished": info.finished_at, "error": info.error, "warnings": "\n".join(info.warnings) or None,
    }  # fmt: skip


def job_label(job_id: int, jobs: pd.DataFrame) -> str:
    row = jobs[jobs.job == job_id].iloc[0]
    return f"job {job_id} · {row.model} · {row.scope} · {row.status}"


def job_choices(jobs: pd.DataFrame, scope: str | None = None) -> list[int]:
    """Jobs with records, finished ones first (newest first), then running ones: the first is the default."""
    usable = jobs[jobs.status.isin(["done", "running"])]
    if scope is not None:
        usable = usable[usable.scope == scope]
    done = usable[usable.status == "done"].job.tolist()
    return done + usable[usable.status != "done"].job.tolist()


def pick_job(key: str, scope: str | None = None) -> int | None:
    """Sidebar job picker: the newest finished job by default, or `?job=N` from a link on the Jobs page."""
    jobs = job_table()
    if jobs.empty:
        st.info("No jobs yet: submit one on the Jobs page.")
        return None
    ids = job_choices(jobs, scope)
    if not ids:
        st.info(f"No finished or running {scope or ''} job yet: submit one on the Jobs page.")
        return None
    linked = st.query_params.get("job")
    index = ids.index(int(linked)) if linked and linked.isdigit() and int(linked) in ids else 0
    job = st.sidebar.selectbox("Job", ids, index=index, key=key, format_func=lambda j: job_label(j, jobs))
    st.query_params["job"] = str(job)
    show_warnings(jobs[jobs.job == job].iloc[0])
    return job


def show_warnings(row: Any) -> None:
    """A job's stored warnings (e.g. a bare .npy whose tokenizer nothing checked), one box each."""
    for text in row.warnings.splitlines() if isinstance(row.warnings, str) else []:  # None: no warning
        st.warning(f"job {row.job}: {text}")


def run_label(row: Any) -> str:
    """A run as a user names it: layer and the SAE's full name."""
    return f"layer {row.layer} · {row.sae} (run {row.run_id})"


def sae_release(name: str) -> str:
    """The SAE's release (its name before the first '/'): what tells two SAEs at one hook apart."""
    return name.split("/", 1)[0]


def next_layer_run(runs: pd.DataFrame, run: int) -> int:
    """The run at the next layer of the same SAE release (else the previous layer's, else any other run)."""
    me = runs[runs.run_id == run].iloc[0]
    others = runs[runs.run_id != run]
    same = others[others.sae.map(sae_release) == sae_release(me.sae)]
    above, below = same[same.layer > me.layer], same[same.layer < me.layer]
    if len(above):
        return int(above.sort_values("layer", kind="stable").iloc[0].run_id)
    if len(below):
        return int(below.sort_values("layer", kind="stable").iloc[-1].run_id)
    return int(others.iloc[0].run_id) if len(others) else run


def visible(text: str | None) -> str:
    """A token with its whitespace shown (' const' -> '␣const'; an empty token -> '∅')."""
    return "∅" if not text else text.translate(_VISIBLE)


@st.cache_data(ttl=60, show_spinner=False)
def context_size(job_id: int) -> int:
    """Positions per sequence of a job: the largest recorded position + 1 (by_position), at least 2."""
    runs = answer("runs", job=job_id)
    single = runs[runs.scope == "single_token"]
    if len(single):
        return int((single.target_position + single.window).max()) + 1
    positions = answer("by_position", job=job_id, interventions=["sae"])
    return max(2, int(positions.position.max()) + 1) if len(positions) else 2
