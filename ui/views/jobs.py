"""Jobs: a form built from schema.spec.JobSpec, the job list with progress and ETA, and cancel."""

from __future__ import annotations

from typing import Any, get_args

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from schema.spec import INTERVENTION_NAMES, AllTokenScope, JobSpec, SingleTokenScope
from ui.background import running_threads, submit_job
from ui.data import job_table, jobs_api

DEFAULTS = JobSpec()
SCOPES = {"all_tokens": "all tokens at once", "single_token": "one target position"}


def _choices(field: str) -> tuple[str, ...]:
    return get_args(JobSpec.model_fields[field].annotation)


def _scope_form() -> AllTokenScope | SingleTokenScope:
    kind = st.radio("Scope", list(SCOPES), format_func=SCOPES.get, horizontal=True)
    if kind == "all_tokens":
        return AllTokenScope(include_special_tokens=st.checkbox("Intervene on special tokens (BOS) too"))
    left, right = st.columns(2)
    position = left.number_input("Target position P", min_value=1, value=32)
    window = right.number_input("Window after P (tokens)", min_value=0, value=16)
    return SingleTokenScope(position=int(position), window=int(window))


def _spec_fields() -> dict[str, Any]:
    """The form's values, named like JobSpec's fields."""
    model = st.text_input("Model", DEFAULTS.model, help=JobSpec.model_fields["model"].description)
    saes = st.text_area("SAEs, one per line", "\n".join(DEFAULTS.saes), help=JobSpec.model_fields["saes"].description)
    scope = _scope_form()
    interventions = st.multiselect("Interventions", INTERVENTION_NAMES, default=list(DEFAULTS.interventions))
    left, middle, right = st.columns(3)
    tokens = left.text_input("Token set", DEFAULTS.tokens, help=JobSpec.model_fields["tokens"].description)
    n_sequences = middle.number_input("Sequences (0 = all)", min_value=0, value=0)
    samples = right.number_input("Samples per random intervention", min_value=1, max_value=10_000, value=1)
    left, middle, right = st.columns(3)
    seed = left.number_input("Seed", min_value=0, value=DEFAULTS.seed)
    device = middle.selectbox("Device", _choices("device"))
    dtype = right.selectbox("Dtype", _choices("dtype"))
    return {
        "model": model.strip(), "saes": [line.strip() for line in saes.splitlines() if line.strip()],
        "scope": scope, "interventions": interventions, "tokens": tokens.strip(),
        "n_sequences": int(n_sequences) or None, "samples": int(samples), "seed": int(seed),
        "device": device, "dtype": dtype,
    }  # fmt: skip


def _submit_form() -> None:
    with st.form("submit"):
        st.subheader("New job")
        fields = _spec_fields()
        pressed = st.form_submit_button("Submit job", type="primary")
    if not pressed:
        return
    try:
        spec = JobSpec(**fields)
    except ValidationError as error:
        st.error("The job spec is not valid:\n\n" + "\n".join(f"- {e['loc']}: {e['msg']}" for e in error.errors()))
        return
    st.success(submit_job(spec))


def _with_progress(jobs: pd.DataFrame) -> pd.DataFrame:
    """Add the job API's rate and ETA to unfinished jobs."""
    api = jobs_api()
    eta, rate = [], []
    for job_id, status in zip(jobs.job, jobs.status, strict=True):
        progress = api.progress(int(job_id)) if status in ("queued", "planning", "running") else None
        eta.append(progress.eta_seconds if progress else None)
        rate.append(progress.tokens_per_second if progress else None)
    return jobs.assign(tokens_per_s=rate, eta_s=eta)


def _job_list() -> None:
    st.subheader("Jobs")
    if st.button("Refresh"):
        job_table.clear()
    jobs = job_table()
    if jobs.empty:
        st.info("No jobs yet.")
        return
    latest = jobs.iloc[0]
    st.markdown(f"Latest: job {latest.job} · **{latest.status}** · shards {latest.shards}")
    st.dataframe(_with_progress(jobs), hide_index=True, width="stretch")
    st.caption(f"{running_threads()} job(s) running in this server's background threads.")
    _cancel(jobs)


def _cancel(jobs: pd.DataFrame) -> None:
    active = jobs[jobs.status.isin(["queued", "planning", "running"])].job.tolist()
    if not active:
        return
    job_id = st.selectbox("Cancel job", active)
    if st.button("Cancel"):
        jobs_api().cancel(int(job_id))
        job_table.clear()
        st.warning(f"job {job_id} cancelled")


st.title("Jobs")
_submit_form()
_job_list()
