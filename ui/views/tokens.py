"""Tokens: the tokens with the largest mean KL gap, and the contexts of a chosen one with every intervention's KL."""

from __future__ import annotations

import altair as alt
import streamlit as st

from ui.data import answer, pick_job


def _top_tokens(job_id: int) -> None:
    min_count = st.sidebar.number_input("Seen at least (times)", min_value=2, value=5)
    top = answer("top_tokens", job=job_id, min_count=int(min_count), top=20)
    if top.empty:
        st.info(f"No token of job {job_id} is seen {min_count} times with both sae and eps_random records.")
        return
    st.subheader(f"Top tokens by mean KL gap (sae - eps_random, nats), job {job_id}")
    chart = alt.Chart(top).mark_bar().encode(
        x=alt.X("kl_gap_mean:Q", title="mean KL gap (nats)"), y=alt.Y("token_text:N", sort="-x", title="token"),
        color="layer:O", row=alt.Row("sae:N", title=None), tooltip=["token_text", "n", "kl_gap_mean", "kl_gap_std"],
    )  # fmt: skip
    st.altair_chart(chart.properties(width=600))
    st.dataframe(top, hide_index=True, width="stretch")
    choices = {(r.run_id, r.token_id): f"{r.token_text!r} · layer {r.layer} · {r.sae}" for r in top.itertuples()}
    run_id, token_id = st.selectbox("Contexts of token", list(choices), format_func=choices.get)
    _contexts(job_id, run_id, token_id)


def _contexts(job_id: int, run_id: int, token_id: int) -> None:
    contexts = answer("token_contexts", job=job_id, run=run_id, token_id=token_id, limit=100)
    st.subheader(f"Where it occurs (run {run_id}): context with the token in [[ ]], KL per intervention (nats)")
    st.dataframe(contexts.drop(columns=["job_id", "run_id"]), hide_index=True, width="stretch")


st.title("Tokens")
job = pick_job("tokens_job")
if job is not None:
    _top_tokens(job)
