"""Layer summary: mean KL and CE-loss increase per layer and intervention with bootstrap CIs, and SAEs compared."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from schema.spec import INTERVENTION_NAMES
from ui.data import answer, pick_job


def _ci_chart(summary: pd.DataFrame, column: str, title: str, log: bool) -> alt.LayerChart:
    """Mean per layer (x) and intervention (colour) with its CI as an error bar."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    base = alt.Chart(summary).encode(
        x=alt.X("layer:O", title="layer"), color=alt.Color("intervention:N"), xOffset="intervention:N"
    )
    points = base.mark_point(filled=True).encode(
        y=alt.Y(f"{column}:Q", title=title, scale=scale),
        tooltip=["sae", "layer", "intervention", alt.Tooltip(f"{column}:Q", format=".4g"), "n_tokens"],
    )
    bars = base.mark_rule().encode(y=f"{column}_lo:Q", y2=f"{column}_hi:Q")
    return (bars + points).properties(height=320).interactive()


def _summary_section(job_id: int) -> None:
    interventions = st.sidebar.multiselect("Interventions", INTERVENTION_NAMES, default=list(INTERVENTION_NAMES))
    summary = answer("layer_summary", job=job_id, interventions=interventions or None)
    if summary.empty:
        st.info(f"job {job_id} has no all-token records with two or more sequences yet.")
        return
    st.subheader(f"Mean KL per token (nats), job {job_id}, 95% sequence-bootstrap CIs")
    st.altair_chart(_ci_chart(summary, "kl_mean", "mean KL (nats, log scale)", log=True), width="stretch")
    st.subheader(f"KL relative to eps_random (SAE / eps_random ratio), job {job_id}")
    st.altair_chart(_ci_chart(summary, "kl_ratio", "mean KL / mean KL of eps_random", log=True), width="stretch")
    st.subheader(f"Mean CE-loss increase (nats per token), job {job_id}")
    st.altair_chart(_ci_chart(summary, "loss_delta_mean", "mean CE-loss increase (nats)", log=False), width="stretch")
    st.dataframe(summary, hide_index=True, width="stretch")


def _compare_section(job_id: int) -> None:
    compared = answer("compare_saes", job=job_id)
    if compared.empty:
        return
    st.subheader(f"SAEs side by side, job {job_id}: SAE KL over eps_random KL per run")
    chart = (
        alt.Chart(compared)
        .mark_bar()
        .encode(
            x=alt.X("sae:N", title="SAE"),
            y=alt.Y("kl_ratio:Q", title="mean KL sae / eps_random"),
            color="hook_name:N",
            column=alt.Column("layer:O", title="layer"),
            tooltip=["sae", "hook_name", "kl_sae", "kl_eps_random", "kl_ratio", "loss_delta_ratio", "cos_sim", "l0"],
        )
        .properties(width=160, height=240)
    )
    st.altair_chart(chart)
    st.dataframe(compared, hide_index=True, width="stretch")


st.title("Layer summary")
job = pick_job("layer_summary_job", scope="all_tokens")
if job is not None:
    _summary_section(job)
    _compare_section(job)
