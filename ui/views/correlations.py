"""Correlation explorer: any two per-token columns, sampled in SQL, with Pearson/Spearman; cross-layer gap heatmap."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis.token_sample import VARIABLES
from ui.data import HEATMAP_TOKENS, answer, pick_job, run_label

UNITS = {
    "position": "tokens",
    "norm": "L2",
    "sae_norm": "L2",
    "eps": "L2",
    "token_frequency": "count",
    "l0": "features",
}


def _axis_title(variable: str) -> str:
    unit = UNITS.get(variable, "nats" if variable.startswith(("kl_", "loss")) and variable != "kl_ratio" else "")
    return f"{variable} ({unit})" if unit else variable


def _runs(job_id: int) -> pd.DataFrame:
    return answer("runs", job=job_id)


def _filters(job_id: int) -> dict[str, object]:
    """Sidebar filters, named like analysis.token_sample.Params."""
    runs = _runs(job_id)
    labels = {row.run_id: run_label(row) for row in runs.itertuples()}
    run = st.sidebar.selectbox("Run (layer, SAE)", list(labels), format_func=labels.get)
    x = st.sidebar.selectbox("x", VARIABLES, index=VARIABLES.index("position"))
    y = st.sidebar.selectbox("y", VARIABLES, index=VARIABLES.index("kl_gap"))
    others = [r for r in labels if r != run] or list(labels)
    other = st.sidebar.selectbox("Other run (for kl_gap_other_run)", others, format_func=labels.get)
    low, high = st.sidebar.slider("Position range", 0, 2048, (0, 2048))
    token = st.sidebar.text_input("Only this token (exact text, blank = all)")
    limit = st.sidebar.number_input("Sample size", min_value=100, max_value=200_000, value=5000, step=1000)
    return {"job": job_id, "run": run, "x": x, "y": y, "other_run": other, "position_min": low,
            "position_max": high, "token_text": token or None, "limit": int(limit)}  # fmt: skip


def _scatter(sample: pd.DataFrame, params: dict[str, object], kind: str) -> alt.Chart:
    x = alt.X("x:Q", title=_axis_title(str(params["x"])), scale=alt.Scale(zero=False))
    y = alt.Y("y:Q", title=_axis_title(str(params["y"])), scale=alt.Scale(zero=False))
    if kind == "hexbin (binned density)":
        x = alt.X("x:Q", bin=alt.Bin(maxbins=40), title=x.title)
        y = alt.Y("y:Q", bin=alt.Bin(maxbins=40), title=y.title)
        return alt.Chart(sample).mark_rect().encode(x=x, y=y, color=alt.Color("count():Q", title="tokens"))
    tooltip = ["sequence", "position", "token_text", "x", "y"]
    return alt.Chart(sample).mark_circle(size=12, opacity=0.5).encode(x=x, y=y, tooltip=tooltip).interactive()


def _pair_section(job_id: int) -> None:
    params = _filters(job_id)
    sample = answer("token_sample", **params)
    if len(sample) < 3:
        st.info("Fewer than 3 tokens match these filters.")
        return
    pearson = sample.x.corr(sample.y)
    spearman = sample.x.corr(sample.y, method="spearman")
    left, middle, right = st.columns(3)
    left.metric("Pearson r", f"{pearson:.3f}")
    middle.metric("Spearman ρ", f"{spearman:.3f}")
    right.metric("tokens in sample", f"{len(sample):,}")
    kind = st.radio("Plot", ["scatter", "hexbin (binned density)"], horizontal=True)
    st.subheader(f"{params['y']} against {params['x']}, job {job_id}, run {params['run']} (hash sample)")
    st.altair_chart(_scatter(sample, params, kind).properties(height=420), width="stretch")


def _cross_layer(job_id: int) -> None:
    pairs = answer("cross_layer", job=job_id, max_tokens=HEATMAP_TOKENS)
    if pairs.empty:
        return
    st.subheader(f"Pearson correlation of the per-token KL gap between runs, job {job_id}")
    st.caption(f"Up to {HEATMAP_TOKENS:,} token positions per run, the same ones in every run (n in the tooltip).")
    pairs = pairs.assign(a=pairs.layer_a.astype(str) + " · run " + pairs.run_a.astype(str),
                         b=pairs.layer_b.astype(str) + " · run " + pairs.run_b.astype(str))  # fmt: skip
    base = alt.Chart(pairs).encode(x=alt.X("a:O", title="layer · run"), y=alt.Y("b:O", title="layer · run"))
    heat = base.mark_rect().encode(
        color=alt.Color("pearson:Q", scale=alt.Scale(domain=[-1, 1], scheme="redblue", reverse=True)),
        tooltip=["sae_a", "sae_b", "n", alt.Tooltip("pearson:Q", format=".3f")],
    )
    text = base.mark_text().encode(text=alt.Text("pearson:Q", format=".2f"))
    st.altair_chart((heat + text).properties(height=320), width="stretch")


st.title("Correlation explorer")
job = pick_job("correlations_job")
if job is not None:
    _pair_section(job)
    _cross_layer(job)
