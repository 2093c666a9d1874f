"""Layer summary: the verdict first (SAE KL over each random baseline, with CIs), then mean KL and CE-loss
increase per run and intervention with bootstrap CIs, and several SAEs side by side."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis.colours import altair_scale
from analysis.verdict import BASELINES, PATHOLOGICAL, VERDICT_RULE
from schema.spec import INTERVENTION_NAMES
from ui.data import SEED_INTERVENTIONS, answer, pick_job, sae_release

# The baselines that share the activations' anisotropy: the gap "survives" when the SAE is worse than both.
ANISOTROPIC = ("eps_cov_random", "eps_real_diff")
DEFAULT_BASELINES = ["eps_random", *ANISOTROPIC]
LEGEND = alt.Legend(orient="bottom", labelLimit=0, columns=4, titleLimit=0)


def verdict_sentence(verdict: pd.DataFrame) -> str:
    """One sentence: does the SAE's KL gap survive the anisotropic baselines, run by run?"""
    present = [b for b in ANISOTROPIC if verdict[f"verdict_{b}"].notna().any()]
    if not present:
        return "Verdict: this job has no anisotropic baseline (eps_cov_random, eps_real_diff); rerun with them."
    survives = verdict[[f"verdict_{b}" for b in present]].eq(PATHOLOGICAL).all(axis=1)
    runs, kept = len(verdict), int(survives.sum())
    if kept == runs:
        return (
            f"Verdict: the gap survives the anisotropic baselines in all {runs} runs: the SAE's KL is above "
            f"{' and '.join(present)} (95% CI of each ratio above 1)."
        )
    failed = "; ".join(f"layer {r.layer} {r.sae} ({_misses(r, present)})" for _, r in verdict[~survives].iterrows())
    if not kept:
        return f"Verdict: the gap does not survive the anisotropic baselines in any of the {runs} runs: {failed}."
    return f"Verdict: the gap survives the anisotropic baselines in {kept} of {runs} runs; not in {failed}."


def _misses(run: pd.Series, baselines: list[str]) -> str:
    """The baselines a run's gap does not survive, with their verdicts ('eps_real_diff: no gap')."""
    return ", ".join(f"{b}: {run[f'verdict_{b}']}" for b in baselines if run[f"verdict_{b}"] != PATHOLOGICAL)


def _long(verdict: pd.DataFrame, baselines: list[str]) -> pd.DataFrame:
    """One row per run and baseline: KL ratio, its CI, the verdict and a printed 'ratio [lo, hi]'."""
    rows = []
    for b in baselines:
        part = verdict[["run_id", "layer", "sae"]].assign(
            baseline=b, ratio=verdict[f"kl_ratio_{b}"], lo=verdict[f"kl_ratio_{b}_lo"],
            hi=verdict[f"kl_ratio_{b}_hi"], verdict=verdict[f"verdict_{b}"],
        )  # fmt: skip
        rows.append(part.dropna(subset=["ratio"]))
    long = pd.concat(rows) if rows else pd.DataFrame()
    long["run"] = "L" + long.layer.astype(str) + " · " + long.sae
    long["release"] = long.sae.map(sae_release)
    long["printed"] = [f"{r:.3g} [{lo:.3g}, {hi:.3g}]" for r, lo, hi in zip(long.ratio, long.lo, long.hi, strict=True)]
    return long


def ratio_chart(long: pd.DataFrame) -> alt.LayerChart:
    """SAE KL / baseline KL per run (x, full names) and baseline (colour), 95% CI bars, a rule at 1."""
    x = alt.X("run:N", title=None, sort=None, axis=alt.Axis(labelLimit=0, labelAngle=-30))
    colour = alt.Color("baseline:N", scale=alt.Scale(**altair_scale(sorted(set(long.baseline)))), legend=LEGEND)
    base = alt.Chart(long).encode(x=x, xOffset="baseline:N", color=colour)
    bars = base.mark_rule(strokeWidth=3).encode(y=alt.Y("lo:Q", title="SAE KL / baseline KL"), y2="hi:Q")
    points = base.mark_point(filled=True, size=90).encode(
        y="ratio:Q",
        shape=alt.Shape("release:N", title="SAE release", legend=LEGEND),
        tooltip=["sae", "layer", "baseline", "printed", "verdict"],
    )
    one = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(color="black", strokeDash=[6, 4]).encode(y="y:Q")
    return (one + bars + points).properties(height=460)  # axes, rotated names and legend included


@st.fragment
def _verdict_section(job_id: int) -> None:
    verdict = answer("verdict", job=job_id)
    if verdict.empty:
        st.info(f"job {job_id} has no all-token records with two or more sequences yet.")
        return
    st.markdown(f"**{verdict_sentence(verdict)}**")
    available = [b for b in BASELINES if verdict[f"kl_ratio_{b}"].notna().any()]
    chosen = st.multiselect("Baselines", available, default=[b for b in DEFAULT_BASELINES if b in available])
    long = _long(verdict, chosen or available)
    st.subheader(f"SAE KL over each baseline's KL, job {job_id} (95% paired sequence-bootstrap CIs; 1 = no gap)")
    st.altair_chart(ratio_chart(long), width="stretch")
    printed = long.pivot_table(index=["layer", "sae"], columns="baseline", values="printed", aggfunc="first")
    printed.columns = [f"KL ratio to {c}" for c in printed.columns]
    verdicts = long.pivot_table(index=["layer", "sae"], columns="baseline", values="verdict", aggfunc="first")
    verdicts.columns = [f"verdict vs {c}" for c in verdicts.columns]
    st.dataframe(printed.join(verdicts).reset_index(), hide_index=True, width="stretch")
    st.caption(f"Verdict rule: {VERDICT_RULE}.")


def ci_chart(summary: pd.DataFrame, column: str, title: str, log: bool) -> alt.LayerChart:
    """Mean per run (x, full SAE names) and intervention (fixed colour) with its 95% CI as a capped bar."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    colour = alt.Color(
        "intervention:N", scale=alt.Scale(**altair_scale(list(set(summary.intervention)))), legend=LEGEND
    )
    x = alt.X("run:N", title=None, sort=None, axis=alt.Axis(labelLimit=0, labelAngle=-30))
    base = alt.Chart(summary).encode(x=x, color=colour, xOffset="intervention:N")
    points = base.mark_point(filled=True, size=70).encode(
        y=alt.Y(f"{column}:Q", title=title, scale=scale),
        tooltip=["sae", "layer", "intervention", alt.Tooltip(f"{column}:Q", format=".4g"),
                 alt.Tooltip(f"{column}_lo:Q", format=".4g"), alt.Tooltip(f"{column}_hi:Q", format=".4g"), "n_tokens"],
    )  # fmt: skip
    bars = base.mark_rule(strokeWidth=3).encode(y=f"{column}_lo:Q", y2=f"{column}_hi:Q")
    return (bars + points).properties(height=440)


@st.fragment
def _summary_section(job_id: int) -> None:
    interventions = st.multiselect("Interventions", INTERVENTION_NAMES, default=SEED_INTERVENTIONS)
    summary = answer("layer_summary", job=job_id, interventions=interventions or None)
    if summary.empty:
        return
    summary = summary.assign(run="L" + summary.layer.astype(str) + " · " + summary.sae)
    st.subheader(f"Mean KL per token (nats, log scale), job {job_id}, 95% sequence-bootstrap CIs")
    st.altair_chart(ci_chart(summary, "kl_mean", "mean KL (nats)", log=True), width="stretch")
    st.subheader(f"Mean CE-loss increase (nats per token), job {job_id}")
    st.altair_chart(ci_chart(summary, "loss_delta_mean", "mean CE-loss increase (nats)", log=False), width="stretch")
    st.dataframe(summary.drop(columns=["run"]), hide_index=True, width="stretch")


def _compare_section(job_id: int) -> None:
    compared = answer("compare_saes", job=job_id)
    if compared.empty or compared.n_saes_on_hook.max() < 2:
        return
    st.subheader(f"SAEs side by side, job {job_id}: SAE KL over eps_random KL per run")
    compared = compared.assign(run="L" + compared.layer.astype(str) + " · " + compared.sae,
                               release=compared.sae.map(sae_release))  # fmt: skip
    bars = alt.Chart(compared).mark_bar().encode(
        y=alt.Y("run:N", title=None, sort=None, axis=alt.Axis(labelLimit=0)),
        x=alt.X("kl_ratio:Q", title="mean KL sae / eps_random"), color=alt.Color("release:N", legend=LEGEND),
        tooltip=["sae", "hook_name", "kl_sae", "kl_eps_random", "kl_ratio", "loss_delta_ratio", "cos_sim", "l0"],
    )  # fmt: skip
    one = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="black", strokeDash=[6, 4]).encode(x="x:Q")
    st.altair_chart((bars + one).properties(height=28 * len(compared) + 40), width="stretch")
    st.dataframe(compared.drop(columns=["run", "release"]), hide_index=True, width="stretch")


st.title("Layer summary")
job = pick_job("layer_summary_job", scope="all_tokens")
if job is not None:
    _verdict_section(job)
    _summary_section(job)
    _compare_section(job)
