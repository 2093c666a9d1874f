"""Jobs: a form built from schema.spec.JobSpec (checked before it starts), the job list refreshing on its own
with progress, ETA, duration and full errors, links to each finished job's pages, and cancel."""

from __future__ import annotations

from typing import Any, get_args

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from schema.spec import INTERVENTION_NAMES, AllTokenScope, JobSpec, SingleTokenScope
from ui.background import running_threads, submit_job
from ui.data import job_table, jobs_api, show_warnings
from ui.deployment import allowed_token_set, read_only
from worker.api import UNFINISHED_STATUSES, Progress

DEFAULTS = JobSpec()
SCOPES = {"all_tokens": "all tokens at once", "single_token": "one target position"}
REFRESH_S = 3  # the job list reruns on its own this often while a job is unfinished
ERRORS_SHOWN = 5
LINKED_JOBS = 10
# Pages that read a finished job of each scope (path, title), opened with ?job=N.
RESULT_PAGES = {
    "all_tokens": [("views/layer_summary.py", "Layer summary"), ("views/distributions.py", "Distributions"),
                   ("views/correlations.py", "Correlations"), ("views/tokens.py", "Tokens"),
                   ("views/context.py", "One context")],
    "single_token": [("views/single_token.py", "Single-token"), ("views/correlations.py", "Correlations"),
                     ("views/context.py", "One context")],
}  # fmt: skip


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
    joint = st.checkbox("Also splice every SAE at once (joint run)", help=JobSpec.model_fields["joint"].description)
    left, middle, right = st.columns(3)
    tokens = left.text_input("Token set", DEFAULTS.tokens or "", help=JobSpec.model_fields["tokens"].description)
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
        "device": device, "dtype": dtype, "joint": joint,
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
    tokens, refused = allowed_token_set(spec.tokens)  # bundled names and files under the data dir (ui/deployment.py)
    if refused:
        st.error(f"The job was not started: {refused}")
        return
    spec = spec.model_copy(update={"tokens": tokens})
    problems = jobs_api().preflight(spec)  # the CLI's checks before it writes a job: names, token set, size
    if problems:
        st.error("The job was not started:\n\n" + "\n".join(f"- {problem}" for problem in problems))
        return
    st.success(submit_job(spec) + "; its progress below refreshes on its own")
    job_table.clear()


def _with_progress(jobs: pd.DataFrame) -> pd.DataFrame:
    """Add the job API's rate and ETA to unfinished jobs, and every started job's duration."""
    api = jobs_api()
    eta, rate, stale, inside, tokens = [], [], [], [], list(jobs.tokens_done)
    for i, (job_id, status) in enumerate(zip(jobs.job, jobs.status, strict=True)):
        progress = api.progress(int(job_id)) if status in UNFINISHED_STATUSES else None
        eta.append(progress.eta_seconds if progress else None)
        rate.append(progress.tokens_per_second if progress else None)
        stale.append(api.stale_reason(api.get_job(int(job_id))) if progress else None)  # worker gone: resumable
        inside.append(in_shard(progress) if progress else "")
        tokens[i] += progress.tokens_in_flight if progress else 0
    shown = [f"{status} (stale)" if reason else status for status, reason in zip(jobs.status, stale, strict=True)]
    jobs = jobs.assign(status=shown, stale=stale, tokens_done=tokens, in_shard=inside)
    return jobs.assign(duration=[duration(row) for row in jobs.itertuples()], tokens_per_s=rate, eta_s=eta)


def in_shard(progress: Progress) -> str:
    """How far the running shard is, e.g. 'shard 3/8: 45%' (several running: their mean)."""
    if not progress.shards_running or progress.running_fraction is None:
        return ""
    which = f"shard {progress.shards_done + 1}" if progress.shards_running == 1 else f"{progress.shards_running} shards"
    return f"{which}/{progress.shards_total}: {progress.running_fraction:.0%}"


def duration(row: Any) -> str:
    """Started to finished (or to now while it runs), as h:mm:ss; blank before it starts."""
    if row.started is None or pd.isna(row.started):
        return ""
    end = row.finished if row.finished is not None and not pd.isna(row.finished) else pd.Timestamp.now(tz="UTC")
    seconds = int((pd.Timestamp(end) - pd.Timestamp(row.started)).total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _job_list() -> None:
    job_table.clear()  # this fragment reruns every few seconds while a job runs: always fresh
    jobs = job_table()
    if jobs.empty:
        st.info("No jobs yet.")
        return
    latest = jobs.iloc[0]
    st.markdown(f"Latest: job {latest.job} · **{latest.status}** · shards {latest.shards}")
    st.dataframe(_with_progress(jobs), hide_index=True, width="stretch")
    active = int(jobs.status.isin(UNFINISHED_STATUSES).sum())
    if not active and st.session_state.get("jobs_refreshing"):
        st.session_state.jobs_refreshing = False
        st.rerun()  # the whole page, so the list stops refreshing
    st.caption(f"{active} job(s) unfinished, {running_threads()} running in this server's background threads"
               + (f"; refreshing every {REFRESH_S} s." if active else "."))  # fmt: skip
    _errors(jobs)
    for row in jobs[jobs.warnings.notna()].head(ERRORS_SHOWN).itertuples():
        show_warnings(row)
    _links(jobs)
    _cancel(jobs)


def _errors(jobs: pd.DataFrame) -> None:
    """The full error of each failed job (newest first)."""
    for row in jobs[jobs.error.notna() & (jobs.error != "")].head(ERRORS_SHOWN).itertuples():
        st.error(f"job {row.job} {row.status}: {row.error}")


def _links(jobs: pd.DataFrame) -> None:
    """Each finished job's result pages, opened on that job."""
    done = jobs[jobs.status == "done"].head(LINKED_JOBS)
    if done.empty:
        return
    st.markdown("**Results**")
    for row in done.itertuples():
        columns = st.columns([1] + [2] * len(RESULT_PAGES[row.scope]))
        columns[0].markdown(f"job {row.job}")
        for column, (path, title) in zip(columns[1:], RESULT_PAGES[row.scope], strict=True):
            column.page_link(path, label=title, query_params={"job": str(row.job)})


def _job_section() -> None:
    st.subheader("Jobs")
    active = bool(job_table().status.isin(UNFINISHED_STATUSES).any())
    st.session_state.jobs_refreshing = active
    st.fragment(run_every=REFRESH_S if active else None)(_job_list)()


def _cancel(jobs: pd.DataFrame) -> None:
    if read_only():  # a read-only deployment (saegap ui --read-only) shows jobs but changes none
        return
    active = jobs[jobs.status.isin(UNFINISHED_STATUSES)].job.tolist()
    if not active:
        return
    job_id = st.selectbox("Cancel job", active)
    if st.button("Cancel"):
        jobs_api().cancel(int(job_id))
        job_table.clear()
        st.warning(f"job {job_id} cancelled")


st.title("Jobs")
if read_only():
    st.info("This deployment is read-only: jobs are submitted and cancelled elsewhere (saegap submit, saegap cancel).")
else:
    _submit_form()
_job_section()
