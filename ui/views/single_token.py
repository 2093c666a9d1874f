"""Single-token jobs: KL at the target and downstream positions, and the SAE's KL among many random draws."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis.colours import altair_scale
from ui.data import answer, pick_job, visible

LEGEND = alt.Legend(orient="bottom", labelLimit=0, titleLimit=0)


def _colour(curve: pd.DataFrame) -> alt.Color:
    return alt.Color("intervention:N", scale=alt.Scale(**altair_scale(sorted(set(curve.intervention)))), legend=LEGEND)


def downstream_chart(curve: pd.DataFrame) -> alt.Chart:
    """Mean KL per offset; the offset axis is ordinal, so every offset has its own label."""
    return alt.Chart(curve).mark_line(point=True).encode(
        x=alt.X("offset:O", title="offset from the target position (tokens)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("kl_mean:Q", title="mean KL (nats, symlog)", scale=alt.Scale(type="symlog", constant=1e-3)),
        color=_colour(curve), strokeDash=alt.StrokeDash("layer:O", legend=LEGEND),
        tooltip=["layer", "sae", "intervention", "offset", "kl_mean", "kl_std", "n_records"],
    ).properties(height=380)  # fmt: skip


def target_bars(curve: pd.DataFrame) -> alt.LayerChart:
    """Mean KL at P (offset 0) and P+1 per intervention, with ±1 sd whiskers and the value printed."""
    near = curve[curve.offset.isin([0, 1])].assign(
        where=lambda d: d.offset.map({0: "P (target)", 1: "P+1"}), lo=lambda d: (d.kl_mean - d.kl_std).clip(lower=0),
        hi=lambda d: d.kl_mean + d.kl_std, label=lambda d: d.kl_mean.map("{:.3g}".format),
    )  # fmt: skip
    base = alt.Chart(near).encode(x=alt.X("intervention:N", title=None), color=_colour(near))
    bars = base.mark_bar().encode(y=alt.Y("kl_mean:Q", title="mean KL (nats); whisker ±1 sd"))
    spread = base.mark_rule(color="black").encode(y="lo:Q", y2="hi:Q")
    text = base.mark_text(dy=-8, color="black").encode(y="hi:Q", text="label:N")
    return (bars + spread + text).properties(height=240, width=220).facet(column=alt.Column("where:N", title=None))


def _downstream(job_id: int) -> None:
    curve = answer("downstream", job=job_id)
    if curve.empty:
        st.info(f"job {job_id} has no single-token records yet.")
        return
    st.subheader(f"Mean KL at the target (offset 0) and after it (nats), job {job_id}")
    st.altair_chart(downstream_chart(curve), width="stretch")
    for (layer, sae), rows in curve.groupby(["layer", "sae"]):
        st.markdown(f"**At P and P+1: layer {layer} · {sae}**")
        st.altair_chart(target_bars(rows))


def _z_summary(job_id: int) -> None:
    verdict = answer("verdict", job=job_id, scope="single_token")
    rows = verdict.dropna(subset=["z_median"])
    for row in rows.itertuples():
        st.markdown(f"**z summary, layer {row.layer} · {row.sae}**")
        a, b, c = st.columns(3)
        a.metric("median z", f"{row.z_median:.2f}")
        b.metric("90th percentile of z", f"{row.z_p90:.2f}")
        c.metric("tokens with z > 2", f"{row.frac_z_above_2:.0%}")


def sigma_chart(draws: pd.DataFrame, kl_sae: float, z: float) -> alt.LayerChart:
    bars = (
        alt.Chart(draws)
        .mark_bar(color="#1f4e9c", opacity=0.7)
        .encode(
            x=alt.X("kl:Q", bin=alt.Bin(maxbins=30), title="KL of one eps_random draw (nats)"),
            y=alt.Y("count():Q", title="draws"),
        )
    )
    line = pd.DataFrame({"kl_sae": [kl_sae], "label": [f"SAE KL {kl_sae:.3g} (z = {z:.2f})"]})
    rule = alt.Chart(line).mark_rule(color="#d62728", size=2).encode(x="kl_sae:Q", tooltip=["label"])
    text = (
        alt.Chart(line)
        .mark_text(color="#d62728", align="left", dx=4, dy=10, fontWeight="bold")
        .encode(x="kl_sae:Q", y=alt.value(0), text="label:N")
    )
    return (bars + rule + text).properties(height=260)


@st.fragment
def _sigma(job_id: int) -> None:
    tested = answer("sigma", job=job_id, min_samples=10)
    if tested.empty:
        st.info("No token has 10 or more random draws: submit with samples >= 10 for the sigma test.")
        return
    st.subheader(f"SAE KL in standard deviations of the eps_random draws (z), job {job_id}")
    _z_summary(job_id)
    st.dataframe(tested.assign(token_text=tested.token_text.map(visible)), hide_index=True, width="stretch")
    keys = {(r.run_id, r.sequence, r.position): f"run {r.run_id} · seq {r.sequence} · pos {r.position} · "
            f"{visible(r.token_text)} · z={r.z:.2f}" for r in tested.itertuples()}  # fmt: skip
    run, sequence, position = st.selectbox("Token", list(keys), format_func=keys.get)
    draws = answer("sigma_draws", job=job_id, run=run, sequence=sequence, position=position, min_samples=10)
    row = tested[(tested.run_id == run) & (tested.sequence == sequence) & (tested.position == position)].iloc[0]
    st.altair_chart(sigma_chart(draws, float(row.kl_sae), float(row.z)), width="stretch")
    st.caption("Red rule: the SAE's KL for this token, labelled with its value and z.")


st.title("Single-token jobs")
job = pick_job("single_token_job", scope="single_token")
if job is not None:
    _downstream(job)
    _sigma(job)
