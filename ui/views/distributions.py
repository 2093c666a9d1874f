"""Distributions: log-binned per-token KL histograms with the 99.9th percentile, CE-loss increase, KL by position."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from schema.spec import INTERVENTION_NAMES
from ui.data import answer, pick_job

DEFAULT_SHOWN = ["sae", "eps_random", "zero_ablation"]


def _histogram(hist: pd.DataFrame, title: str) -> alt.LayerChart:
    """Bars over [bin_lo, bin_hi) on a log axis; a dashed rule at each group's 99.9th percentile."""
    bars = alt.Chart(hist).mark_bar(opacity=0.6).encode(
        x=alt.X("bin_lo:Q", title=title, scale=alt.Scale(type="log")), x2="bin_hi:Q",
        y=alt.Y("fraction:Q", title="fraction of tokens"), color="intervention:N",
        tooltip=["layer", "intervention", "bin_lo", "bin_hi", "n", "fraction", "kl_p999"],
    )  # fmt: skip
    p999 = (
        alt.Chart(hist)
        .mark_rule(strokeDash=[4, 3])
        .encode(x="mean(kl_p999):Q", color="intervention:N", tooltip=[alt.Tooltip("mean(kl_p999):Q", title="p99.9 KL")])
    )
    return (bars + p999).properties(height=180).interactive()


def _kl_histograms(job_id: int, interventions: list[str]) -> None:
    left, right = st.sidebar.columns(2)
    kl_min = left.number_input("KL min", value=1e-4, format="%.0e")
    kl_max = right.number_input("KL max", value=1.0, format="%.2g")
    hist = answer("kl_histogram", job=job_id, interventions=interventions, kl_min=kl_min, kl_max=kl_max)
    if hist.empty:
        st.info(f"job {job_id} has no records yet.")
        return
    st.subheader(f"Per-token KL (nats, log bins, tails clamped to [{kl_min:g}, {kl_max:g}]), job {job_id}")
    st.caption("Dashed rule: the 99.9th percentile of the unclamped KL.")
    for (layer, sae), rows in hist.groupby(["layer", "sae"]):
        st.altair_chart(_histogram(rows, f"KL (nats), layer {layer}, {sae}"), width="stretch")


def _loss_histograms(job_id: int, interventions: list[str]) -> None:
    hist = answer("loss_histogram", job=job_id, interventions=interventions)
    if hist.empty:
        return
    st.subheader(f"Per-token CE-loss increase (nats), job {job_id}")
    chart = alt.Chart(hist).mark_bar(opacity=0.6).encode(
        x=alt.X("bin_lo:Q", title="CE-loss increase (nats)"), x2="bin_hi:Q",
        y=alt.Y("fraction:Q", title="fraction of tokens"), color="intervention:N",
        row=alt.Row("layer:O", title="layer"), tooltip=["sae", "intervention", "bin_lo", "bin_hi", "n"],
    )  # fmt: skip
    st.altair_chart(chart.properties(height=150, width=700))


def _by_position(job_id: int, interventions: list[str]) -> None:
    rows = answer("by_position", job=job_id, interventions=interventions)
    if rows.empty:
        return
    st.subheader(f"Mean KL by position in the context (nats), job {job_id}")
    chart = alt.Chart(rows).mark_line(point=True).encode(
        x=alt.X("position:Q", title="position (tokens)"),
        y=alt.Y("kl_mean:Q", title="mean KL (nats)", scale=alt.Scale(type="log")),
        color="intervention:N", strokeDash="sae:N", facet=alt.Facet("layer:O", title="layer", columns=2),
        tooltip=["sae", "layer", "intervention", "position", "kl_mean", "n_tokens"],
    )  # fmt: skip
    st.altair_chart(chart.properties(height=200, width=420).interactive())


st.title("Distributions")
job = pick_job("distributions_job", scope="all_tokens")
if job is not None:
    shown = st.sidebar.multiselect("Interventions", INTERVENTION_NAMES, default=DEFAULT_SHOWN) or DEFAULT_SHOWN
    _kl_histograms(job, shown)
    _loss_histograms(job, shown)
    _by_position(job, shown)
