"""Tokens: per run, the tokens with the largest mean KL gap (with their spread), and a chosen token's contexts."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.data import CONTEXTS_PER_TOKEN, MIN_COUNT, TOP_PER_RUN, answer, pick_job, visible

BAR_PX = 22  # height per token bar: 20 tokens make a ~500 px chart per run


def top_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """One run: mean KL gap per token, largest first, with a bar of ±1 standard deviation."""
    rows = rows.assign(lo=rows.kl_gap_mean - rows.kl_gap_std, hi=rows.kl_gap_mean + rows.kl_gap_std)
    order = rows.sort_values("kl_gap_mean", ascending=False).label.tolist()
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=0, labelOverlap=False))
    tooltip = ["token_text", "n", alt.Tooltip("kl_gap_mean:Q", format=".4g"), alt.Tooltip("kl_gap_std:Q", format=".4g")]
    bars = (
        alt.Chart(rows)
        .mark_bar(color="#d62728", opacity=0.8)
        .encode(
            x=alt.X("kl_gap_mean:Q", title="mean KL gap sae - eps_random (nats); whisker ±1 sd"), y=y, tooltip=tooltip
        )
    )
    spread = alt.Chart(rows).mark_rule(color="black").encode(x="lo:Q", x2="hi:Q", y=y)
    return (bars + spread).properties(height=BAR_PX * len(rows) + 60)


@st.fragment
def _top_tokens(job_id: int) -> None:
    min_count = st.number_input("Seen at least (times)", min_value=2, value=MIN_COUNT)
    top = answer("top_tokens", job=job_id, min_count=int(min_count), top=TOP_PER_RUN)
    if top.empty:
        st.info(f"No token of job {job_id} is seen {min_count} times with both sae and eps_random records.")
        return
    top = top.assign(label=top.token_text.map(visible))
    st.subheader(f"Top tokens by mean KL gap (sae - eps_random, nats), job {job_id}; ␣ marks a space")
    runs = list(top.groupby(["layer", "sae", "run_id"], sort=True))
    columns = st.columns(min(2, len(runs)))
    for i, ((layer, sae, _), rows) in enumerate(runs):
        columns[i % len(columns)].markdown(f"**layer {layer} · {sae}**")
        columns[i % len(columns)].altair_chart(top_chart(rows), width="stretch")
    st.dataframe(top.drop(columns=["label"]).assign(token_text=top.label), hide_index=True, width="stretch")
    choices = {(r.run_id, r.token_id): f"{r.label} · layer {r.layer} · {r.sae}" for r in top.itertuples()}
    run_id, token_id = st.selectbox("Contexts of token", list(choices), format_func=choices.get)
    _contexts(job_id, run_id, token_id)


def _contexts(job_id: int, run_id: int, token_id: int) -> None:
    contexts = answer("token_contexts", job=job_id, run=run_id, token_id=token_id, limit=CONTEXTS_PER_TOKEN)
    st.subheader(f"Where it occurs (run {run_id}): context with the token in [[ ]], KL per intervention (nats)")
    shown = contexts.drop(columns=["job_id", "run_id"]).assign(token_text=contexts.token_text.map(visible))
    st.dataframe(shown, hide_index=True, width="stretch")


st.title("Tokens")
job = pick_job("tokens_job")
if job is not None:
    _top_tokens(job)
