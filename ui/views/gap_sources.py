"""Where does the gap come from? The SAE's error split into its linear and nonlinear parts, how far each error
is amplified through the later layers, and every SAE spliced at once (docs/method.md §7-§10), read through the
analysis modules error_parts, amplification and joint."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis.colours import altair_scale
from ui.data import answer, pick_job


def ratio_chart(frame: pd.DataFrame, label: str, title: str) -> alt.LayerChart:
    """Point and CI per row (`ratio`, `lo`, `hi` columns), with a rule at 1."""
    base = alt.Chart(frame).encode(y=alt.Y(f"{label}:N", title=None))
    points = base.mark_point(filled=True, size=60).encode(
        x=alt.X("ratio:Q", title=title, scale=alt.Scale(type="log")), tooltip=[label, "ratio", "lo", "hi"]
    )
    whiskers = base.mark_rule().encode(x="lo:Q", x2="hi:Q")
    one = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="#7f7f7f", strokeDash=[4, 4]).encode(x="x:Q")
    return (whiskers + points + one).properties(height=max(80, 28 * len(frame)))


def _error_parts(job_id: int) -> None:
    st.subheader("The error's linear and nonlinear parts")
    parts = answer("error_parts", job=job_id)
    if parts.empty:
        st.info("This job ran no error-part interventions: add sae_error_linear, sae_error_nonlinear, "
                "eps_random_linear and eps_random_nonlinear to its interventions.")  # fmt: skip
        return
    rows = [
        {"part": f"layer {r.layer} · {r.sae} · {part}", "ratio": getattr(r, f"kl_ratio_{part}"),
         "lo": getattr(r, f"kl_ratio_{part}_lo"), "hi": getattr(r, f"kl_ratio_{part}_hi")}
        for r in parts.itertuples() for part in ("linear", "nonlinear")
    ]  # fmt: skip
    st.altair_chart(ratio_chart(pd.DataFrame(rows), "part", "KL of the part / KL of a random error of its length"))
    st.dataframe(parts[["layer", "sae", "error_linear_r2", "kl_ratio_linear", "kl_ratio_nonlinear", "carried_by"]])


def _amplification(job_id: int) -> None:
    st.subheader("How far each error is amplified through later layers")
    curves = answer("amplification", job=job_id)
    if curves.empty:
        st.info("This job has no amplification records (a job run before the measurement, or only a joint run).")
        return
    last = curves[(curves.layer == curves.groupby("run_id").layer.transform("max")) & curves.answer.notna()]
    rows = [{"run": f"layer {r.hook_layer} · {r.sae} · {r.intervention}", "ratio": r.ratio_to_random,
             "lo": r.ratio_to_random_lo, "hi": r.ratio_to_random_hi} for r in last.itertuples()]  # fmt: skip
    st.altair_chart(ratio_chart(pd.DataFrame(rows), "run", "r at the last layer / r of its random baseline"))
    run = st.selectbox("run", sorted(curves.run_id.unique()), format_func=lambda r: _run_name(curves, r))
    shown = curves[curves.run_id == run]
    band = alt.Chart(shown).mark_area(opacity=0.15).encode(x="layer:O", y="r_mean_lo:Q", y2="r_mean_hi:Q",
                                                           color=alt.Color("intervention:N", legend=None))  # fmt: skip
    line = (
        alt.Chart(shown)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title="layer (resid_post)"),
            y=alt.Y("r_mean:Q", title="mean ||h' - h|| / ||h||", scale=alt.Scale(type="log")),
            color=alt.Color("intervention:N", scale=alt.Scale(**altair_scale(list(shown.intervention.unique())))),
            tooltip=["intervention", "layer", "r_mean", "r_mean_lo", "r_mean_hi", "ratio_to_random", "answer"],
        )
    )
    st.altair_chart(band + line)
    st.dataframe(last[["hook_layer", "sae", "intervention", "baseline", "layer", "ratio_to_random",
                       "growth_vs_random", "answer"]])  # fmt: skip


def _run_name(curves: pd.DataFrame, run: int) -> str:
    row = curves[curves.run_id == run].iloc[0]
    return f"layer {row.hook_layer} · {row.sae}"


def _joint(job_id: int) -> None:
    st.subheader("All SAEs spliced at once")
    joint = answer("joint", job=job_id)
    if joint.empty:
        st.info("This job has no joint run: submit it with joint (CLI --joint) and two or more SAEs.")
        return
    rows = [{"intervention": r.intervention, "ratio": r.ratio_to_sum, "lo": r.ratio_to_sum_lo, "hi": r.ratio_to_sum_hi}
            for r in joint.itertuples()]  # fmt: skip
    st.altair_chart(ratio_chart(pd.DataFrame(rows), "intervention", "joint KL / sum of the single-site KLs"))
    st.dataframe(joint)


job = pick_job("gap_sources_job")
if job is not None:
    st.title(f"Where does the gap come from? Job {job}")
    _error_parts(job)
    _amplification(job)
    _joint(job)
