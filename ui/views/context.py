"""One context up close: its text, every intervention's recorded KL, and the top-k next-token log-probs
(clean vs SAE vs eps_random), computed on demand by the model (loaded in the background when the page opens)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis.colours import colour_of
from ui.background import warm_up
from ui.data import OCCURRENCES, answer, jobs_api, pick_job, run_label, visible

SERIES = {"logprob_clean": "clean", "logprob_sae": "sae", "logprob_eps_random": "eps_random"}


def next_token_chart(table: pd.DataFrame, kl: dict[str, float]) -> alt.Chart:
    """Log-probability per next token (clean rank order); the legend names each series with its KL to clean."""
    long = table.melt(id_vars=["rank", "token_text"], value_vars=list(SERIES), var_name="series", value_name="logprob")
    names = {key: f"{name} (KL {kl[name]:.3g} nats)" if name in kl else name for key, name in SERIES.items()}
    long = long.assign(series=long.series.map(names), label=long.token_text.map(visible))
    domain = list(names.values())
    colours = ["#000000", colour_of("sae"), colour_of("eps_random")]
    return alt.Chart(long).mark_point(filled=True, size=70).encode(
        x=alt.X("label:N", sort=alt.SortField("rank"), title="next token (by clean rank; ␣ = space)",
                axis=alt.Axis(labelAngle=-45, labelLimit=0)),
        y=alt.Y("logprob:Q", title="log-probability (nats)"),
        color=alt.Color("series:N", scale=alt.Scale(domain=domain, range=colours),
                        legend=alt.Legend(orient="bottom", labelLimit=0, title=None)),
        shape=alt.Shape("series:N", scale=alt.Scale(domain=domain), legend=None),
        tooltip=["rank", "label", "series", alt.Tooltip("logprob:Q", format=".3f")],
    ).properties(height=380)  # fmt: skip


def _occurrence(job_id: int, run: int) -> pd.Series | None:
    """The chosen occurrence (largest KL gap first) with its context text and every intervention's KL."""
    rows = answer("token_contexts", job=job_id, run=run, limit=OCCURRENCES)
    if rows.empty:
        st.info(f"run {run} has no intervened tokens with both sae and eps_random records.")
        return None
    labels = {i: f"seq {r.sequence} · pos {r.position} · {visible(r.token_text)} · gap {r.kl_gap:.3g}"
              for i, r in enumerate(rows.itertuples())}  # fmt: skip
    chosen = st.selectbox(f"Position (the {len(rows)} largest KL gaps)", list(labels), format_func=labels.get)
    return rows.iloc[chosen]


@st.fragment
def _ask(job_id: int) -> None:
    runs = answer("runs", job=job_id)
    labels = {row.run_id: run_label(row) for row in runs.itertuples()}
    if not labels:
        st.info(f"job {job_id} has no runs yet.")
        return
    run = st.selectbox("Run", list(labels), format_func=labels.get)
    warm_up(job_id, int(run))
    row = _occurrence(job_id, int(run))
    if row is None:
        return
    st.markdown("**Context** (the token in [[ ]], ␣ = space): `" + visible(row.context) + "`")
    kl = {
        c.removeprefix("kl_"): float(row[c])
        for c in row.index
        if c.startswith("kl_") and c != "kl_gap" and pd.notna(row[c])
    }
    st.dataframe(pd.DataFrame([kl]), hide_index=True, width="stretch")
    top_k = st.number_input("Top k", min_value=1, max_value=200, value=25)
    if st.button("Compute next-token distributions", type="primary"):
        _show(job_id, int(run), int(row.sequence), int(row.position), int(top_k), kl)


def _show(job_id: int, run: int, sequence: int, position: int, top_k: int, kl: dict[str, float]) -> None:
    with st.spinner("running the model on this context ..."):
        try:
            table = jobs_api().next_token_distributions(job_id, run, sequence, position, top_k=top_k).to_pandas()
        except Exception as error:  # the job API names the problem (no model here, bad position, ...)
            st.error(f"Could not compute the distributions: {error}")
            return
    st.subheader(f"Top-{top_k} next tokens, job {job_id}, run {run}, sequence {sequence}, position {position}")
    st.altair_chart(next_token_chart(table, kl), width="stretch")
    st.dataframe(table.assign(token_text=table.token_text.map(visible)), hide_index=True, width="stretch")


st.title("One context up close")
job = pick_job("context_job")
if job is not None:
    _ask(job)
