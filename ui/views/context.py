"""One context up close: top-25 next-token log-probs, clean vs SAE vs eps-random, computed on demand."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.data import answer, jobs_api, pick_job, run_label

SERIES = {"logprob_clean": "clean", "logprob_sae": "sae", "logprob_eps_random": "eps_random"}


def _chart(table: pd.DataFrame) -> alt.Chart:
    long = table.melt(id_vars=["rank", "token_text"], value_vars=list(SERIES), var_name="series", value_name="logprob")
    long["series"] = long.series.map(SERIES)
    return alt.Chart(long).mark_point(filled=True, size=60).encode(
        x=alt.X("token_text:N", sort=alt.SortField("rank"), title="next token (by clean rank)"),
        y=alt.Y("logprob:Q", title="log-probability (nats)"), color="series:N", shape="series:N",
        tooltip=["rank", "token_text", "series", alt.Tooltip("logprob:Q", format=".3f")],
    )  # fmt: skip


def _ask(job_id: int) -> None:
    runs = answer("runs", job=job_id)
    labels = {row.run_id: run_label(row) for row in runs.itertuples()}
    if not labels:
        st.info(f"job {job_id} has no runs yet.")
        return
    with st.form("context"):
        run = st.selectbox("Run", list(labels), format_func=labels.get)
        left, middle, right = st.columns(3)
        sequence = left.number_input("Sequence", min_value=0, value=0)
        position = middle.number_input("Position", min_value=0, value=1)
        top_k = right.number_input("Top k", min_value=1, max_value=200, value=25)
        pressed = st.form_submit_button("Compute next-token distributions")
    if pressed:
        _show(job_id, int(run), int(sequence), int(position), int(top_k))


def _show(job_id: int, run: int, sequence: int, position: int, top_k: int) -> None:
    with st.spinner("running the model on this context ..."):
        try:
            table = jobs_api().next_token_distributions(job_id, run, sequence, position, top_k=top_k).to_pandas()
        except Exception as error:  # the job API names the problem (no model here, bad position, ...)
            st.error(f"Could not compute the distributions: {error}")
            return
    st.subheader(f"Top-{top_k} next tokens, job {job_id}, run {run}, sequence {sequence}, position {position}")
    st.altair_chart(_chart(table).properties(height=360), width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")


st.title("One context up close")
job = pick_job("context_job")
if job is not None:
    _ask(job)
