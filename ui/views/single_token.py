"""Single-token jobs: KL at the target and downstream positions, and the SAE's KL among many random draws."""

from __future__ import annotations

import altair as alt
import streamlit as st

from ui.data import answer, pick_job


def _downstream(job_id: int) -> None:
    curve = answer("downstream", job=job_id)
    if curve.empty:
        st.info(f"job {job_id} has no single-token records yet.")
        return
    st.subheader(f"Mean KL at the target (offset 0) and after it (nats), job {job_id}")
    chart = alt.Chart(curve).mark_line(point=True).encode(
        x=alt.X("offset:Q", title="offset from the target position (tokens)"),
        y=alt.Y("kl_mean:Q", title="mean KL (nats)", scale=alt.Scale(type="symlog", constant=1e-3)),
        color="intervention:N", strokeDash="layer:O",
        tooltip=["layer", "intervention", "offset", "kl_mean", "n_records"],
    )  # fmt: skip
    st.altair_chart(chart.properties(height=320).interactive(), width="stretch")


def _sigma(job_id: int) -> None:
    tested = answer("sigma_test", job=job_id, min_samples=10)
    if tested.empty:
        st.info("No token has 10 or more random draws: submit with samples >= 10 for the sigma test.")
        return
    st.subheader(f"SAE KL in standard deviations of the eps_random draws (z), job {job_id}")
    st.dataframe(tested, hide_index=True, width="stretch")
    keys = {(r.run_id, r.sequence, r.position): f"run {r.run_id} · seq {r.sequence} · pos {r.position} · z={r.z:.2f}"
            for r in tested.itertuples()}  # fmt: skip
    run, sequence, position = st.selectbox("Token", list(keys), format_func=keys.get)
    draws = answer("sigma_draws", job=job_id, run=run, sequence=sequence, position=position, min_samples=10)
    bars = (
        alt.Chart(draws)
        .mark_bar()
        .encode(
            x=alt.X("kl:Q", bin=alt.Bin(maxbins=30), title="KL of one eps_random draw (nats)"),
            y=alt.Y("count():Q", title="draws"),
        )
    )
    sae = alt.Chart(draws.head(1)).mark_rule(color="red", size=2).encode(x="kl_sae:Q", tooltip=["kl_sae"])
    st.altair_chart((bars + sae).properties(height=260), width="stretch")
    st.caption("Red rule: the SAE's KL for this token.")


st.title("Single-token jobs")
job = pick_job("single_token_job", scope="single_token")
if job is not None:
    _downstream(job)
    _sigma(job)
