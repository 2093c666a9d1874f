"""Correlation explorer: any two per-token columns, sampled in SQL, with Pearson/Spearman; cross-layer gap heatmap."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis.token_sample import VARIABLES
from ui.data import (
    HEATMAP_TOKENS,
    PAIR_AXES,
    PAIR_SAMPLE,
    answer,
    context_size,
    next_layer_run,
    pick_job,
    run_label,
)

UNITS = {
    "position": "tokens",
    "norm": "L2",
    "sae_norm": "L2",
    "eps": "L2",
    "token_frequency": "count",
    "l0": "features",
}
KINDS = ["scatter", "hexbin (binned density)"]


def axis_title(variable: str) -> str:
    unit = UNITS.get(variable, "nats" if variable.startswith(("kl_", "loss")) and variable != "kl_ratio" else "")
    return f"{variable} ({unit})" if unit else variable


def _filters(job_id: int) -> dict[str, object]:
    """The pair's filters (in the fragment's body), named like analysis.token_sample.Params."""
    runs = answer("runs", job=job_id)
    labels = {row.run_id: run_label(row) for row in runs.itertuples()}
    top = st.columns([2, 1, 1, 2])
    run = top[0].selectbox("Run (layer, SAE)", list(labels), format_func=labels.get)
    x = top[1].selectbox("x", VARIABLES, index=VARIABLES.index(PAIR_AXES[0]))
    y = top[2].selectbox("y", VARIABLES, index=VARIABLES.index(PAIR_AXES[1]))
    others = [r for r in labels if r != run] or list(labels)
    suggested = next_layer_run(runs, run)
    index = others.index(suggested) if suggested in others else 0
    other = top[3].selectbox("Other run (for kl_gap_other_run)", others, index=index, format_func=labels.get,
                             key=f"other_run_{job_id}_{run}")  # fmt: skip
    last = context_size(job_id) - 1
    bottom = st.columns([2, 2, 1])
    low, high = bottom[0].slider("Position range", 0, last, (0, last), key=f"positions_{job_id}")
    token = bottom[1].text_input("Only this token (exact text, blank = all)")
    limit = bottom[2].number_input("Sample size", min_value=100, max_value=200_000, value=PAIR_SAMPLE, step=1000)
    return {"job": job_id, "run": run, "x": x, "y": y, "other_run": other, "position_min": low,
            "position_max": high, "token_text": token or None, "limit": int(limit)}  # fmt: skip


def pair_chart(sample: pd.DataFrame, x_name: str, y_name: str, kind: str) -> alt.Chart:
    """A scatter of the sample, or its density in 40 x 40 bins."""
    x_title, y_title = axis_title(x_name), axis_title(y_name)
    if kind == KINDS[1]:
        return alt.Chart(sample).mark_rect().encode(
            x=alt.X("x:Q", bin=alt.Bin(maxbins=40), title=x_title),
            y=alt.Y("y:Q", bin=alt.Bin(maxbins=40), title=y_title),
            color=alt.Color("count():Q", title="tokens", scale=alt.Scale(scheme="viridis")),
            tooltip=[alt.Tooltip("count():Q", title="tokens")],
        )  # fmt: skip
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False))
    y = alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False))
    tooltip = ["sequence", "position", "token_text", "x", "y"]
    return alt.Chart(sample).mark_circle(size=12, opacity=0.5).encode(x=x, y=y, tooltip=tooltip).interactive()


@st.fragment
def _pair_section(job_id: int) -> None:
    params = _filters(job_id)
    sample = answer("token_sample", **params)
    if len(sample) < 3:
        st.info("Fewer than 3 tokens match these filters.")
        return
    left, middle, right = st.columns(3)
    left.metric("Pearson r", f"{sample.x.corr(sample.y):.3f}")
    middle.metric("Spearman ρ", f"{sample.x.corr(sample.y, method='spearman'):.3f}")
    right.metric("tokens in sample", f"{len(sample):,}")
    kind = st.radio("Plot", KINDS, horizontal=True)
    st.subheader(f"{params['y']} against {params['x']}, job {job_id}, run {params['run']} (hash sample)")
    st.altair_chart(
        pair_chart(sample, str(params["x"]), str(params["y"]), kind).properties(height=420), width="stretch"
    )


def heatmap(pairs: pd.DataFrame) -> alt.LayerChart:
    """Pearson of the per-token KL gap between every two runs; each cell names both runs' layer and SAE."""
    pairs = pairs.assign(a="L" + pairs.layer_a.astype(str) + " · " + pairs.sae_a,
                         b="L" + pairs.layer_b.astype(str) + " · " + pairs.sae_b)  # fmt: skip
    order = sorted(set(pairs.a), key=lambda name: (int(name[1:].split(" ")[0]), name))
    axis = alt.Axis(labelLimit=0)
    base = alt.Chart(pairs).encode(x=alt.X("a:N", title=None, sort=order, axis=alt.Axis(labelLimit=0, labelAngle=-30)),
                                   y=alt.Y("b:N", title=None, sort=order, axis=axis))  # fmt: skip
    heat = base.mark_rect().encode(
        color=alt.Color("pearson:Q", scale=alt.Scale(domain=[-1, 1], scheme="redblue", reverse=True)),
        tooltip=["a", "b", "n", alt.Tooltip("pearson:Q", format=".3f")],
    )
    text = base.mark_text().encode(text=alt.Text("pearson:Q", format=".2f"))
    return (heat + text).properties(height=60 * len(order) + 60)


def _cross_layer(job_id: int) -> None:
    pairs = answer("cross_layer", job=job_id, max_tokens=HEATMAP_TOKENS)
    if pairs.empty:
        return
    st.subheader(f"Pearson correlation of the per-token KL gap between runs, job {job_id}")
    st.caption(f"Up to {HEATMAP_TOKENS:,} token positions per run, the same ones in every run (n in the tooltip).")
    st.altair_chart(heatmap(pairs), width="stretch")


st.title("Correlation explorer")
job = pick_job("correlations_job")
if job is not None:
    _pair_section(job)
    _cross_layer(job)
