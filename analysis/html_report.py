"""A self-contained HTML report of one job, built around the answer: the verdict in words and
numbers first, then the seed's figures (inline SVG) and tables, the job spec and versions last.

Every number comes from the registry's modules (analysis.registry), so the page, the CLI
and the UI agree. Sections with no data (say, no single-token runs) are left out.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis import figures
from analysis.colours import colour_of
from analysis.error_parts import PAIRS
from analysis.registry import MODULES
from analysis.verdict import BASELINES, BETTER, NO_GAP, PATHOLOGICAL, VERDICT_RULE
from analysis.verdict_text import ratio_with_ci, run_labels, summary_paragraphs, verdict_of
from schema.spec import SAE

FOLDED_ROWS = 30
SIGMA_PANELS = 8  # tokens drawn with their draws (the table lists the top 20 by z)
_SUMMARY_COLUMNS = ["layer", "sae", "intervention", "n_tokens", "kl_mean", "kl_mean_lo", "kl_mean_hi", "kl_median",
                    "kl_p999", "loss_delta_mean", "kl_ratio", "kl_ratio_lo", "kl_ratio_hi"]  # fmt: skip
_VERDICT_CLASS = {PATHOLOGICAL: "bad", NO_GAP: "even", BETTER: "good"}


@dataclass
class Answers:
    """Each (module, params) of one job answered once, as a DataFrame."""

    job_id: int
    store: Any
    cache: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __call__(self, name: str, **params: Any) -> pd.DataFrame:
        key = f"{name} {sorted(params.items())}"
        if key not in self.cache:
            module = MODULES[name]
            self.cache[key] = module(module.params(job=self.job_id, **params), store=self.store).to_pandas()
        return self.cache[key]


def _section(title: str, module: str, *parts: str | Figure | None) -> str:
    """An <h2>, the module's question, then each figure (as SVG) or HTML part; '' when all parts are empty."""
    body = [figures.to_svg(part) if isinstance(part, Figure) else part for part in parts if part is not None]
    body = [part for part in body if part]
    if not body:
        return ""
    question = html.escape(MODULES[module].question)
    return "\n".join([f"<h2>{html.escape(title)}</h2>", f"<p class='question'>{question}</p>", *body])


def html_table(frame: pd.DataFrame) -> str:
    """A table with numbers to 4 significant figures; token texts quoted so leading spaces stay visible.
    The job id (the page's) is left out; a table longer than FOLDED_ROWS is folded under its row count."""
    if frame.empty:
        return ""
    frame = frame.drop(columns=[c for c in ("job_id", "hook_name") if c in frame and "sae" in frame])
    quoted = {column: repr for column in ("token_text", "context") if column in frame}
    text = frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", formatters=quoted, border=0)
    if len(frame) <= FOLDED_ROWS:
        return text
    return f"<details><summary>table, {len(frame)} rows</summary>{text}</details>"


def _swatch(name: str) -> str:
    return f"<span class='swatch' style='background:{colour_of(name)}'></span>{html.escape(name)}"


def verdict_table(table: pd.DataFrame) -> str:
    """Per run: SAE KL and, per baseline, the KL ratio [95% CI] coloured by its verdict."""
    label, labels = run_labels(table)
    present = [b for b in BASELINES if table[f"verdict_{b}"].notna().any()]
    head = "".join(f"<th>{_swatch(b)}</th>" for b in present)
    rows = []
    for text, row in zip(labels, table.itertuples(), strict=True):
        cells = "".join(
            f"<td class='{_VERDICT_CLASS.get(verdict_of(row, b), '')}'>{ratio_with_ci(row, b)}<br>"
            f"<small>{verdict_of(row, b) or ''}</small></td>"
            for b in present
        )
        rows.append(f"<tr><td>{text}</td><td class='name'>{html.escape(row.sae)}</td>"
                    f"<td>{row.kl_sae:#.4g}</td>{cells}</tr>")  # fmt: skip
    return (
        f"<table class='verdict'><tr><th>{label}</th><th>SAE</th><th>{_swatch('sae')} KL</th>{head}</tr>"
        + "".join(rows) + "</table>"
    )  # fmt: skip


def _answer(answers: Answers) -> str:
    table = answers("verdict")
    if table.empty:
        return ""
    paragraphs = [f"<p class='answer'>{html.escape(text, quote=False)}</p>" for text in summary_paragraphs(table)]
    rule = (f"Ratio = mean KL with the SAE spliced in / mean KL with the baseline, 95% CI from a paired sequence "
            f"bootstrap. Verdict: {VERDICT_RULE}.")  # fmt: skip
    return _section("The answer", "verdict", "".join(paragraphs), verdict_table(table), f"<p class='note'>{rule}</p>")


def _layer_figures(answers: Answers) -> list[str]:
    summary = answers("layer_summary")
    return [
        _section("Mean KL per layer", "layer_summary",
                 figures.bars_by_layer(summary, "kl_mean", "mean KL (nats, log)", log=True),
                 html_table(summary[summary.intervention.isin(figures.HIGHLIGHT)][_SUMMARY_COLUMNS])),
        _section("Mean CE-loss increase per layer", "layer_summary",
                 figures.bars_by_layer(summary.rename(columns=_LOSS_AS_KL), "kl_mean", "mean CE-loss increase", False)),
        _section("SAELens metrics", "sae_metrics", html_table(answers("sae_metrics"))),
        _section("Distribution of per-token KL", "kl_histogram", figures.kl_histograms(answers("kl_histogram"))),
        _section("Distribution of the CE-loss increase", "loss_histogram",
                 figures.loss_histograms(answers("loss_histogram"), summary)),
        _section("KL by position", "by_position", figures.per_run_lines(
            answers("by_position", interventions=list(figures.HIGHLIGHT)), "position", "kl_mean", "position",
            "mean KL")),
    ]  # fmt: skip


_LOSS_AS_KL = {"kl_mean": "_kl", "kl_mean_lo": "_kl_lo", "kl_mean_hi": "_kl_hi", "loss_delta_mean": "kl_mean",
               "loss_delta_mean_lo": "kl_mean_lo", "loss_delta_mean_hi": "kl_mean_hi"}  # fmt: skip


def _single_token_figures(answers: Answers) -> list[str]:
    downstream = answers("downstream")
    sigma = answers("sigma")
    shown = sigma.head(SIGMA_PANELS)
    tokens = zip(shown.run_id, shown.sequence, shown.position, strict=True)  # one small query per token drawn
    draws = [answers("sigma_draws", run=int(run), sequence=int(seq), position=int(pos)) for run, seq, pos in tokens]
    draws = pd.concat(draws) if draws else pd.DataFrame()
    return [
        _section("Single-token interventions: KL at the target and after", "downstream",
                 figures.target_bars(downstream)),
        _section("Single-token interventions: KL downstream", "downstream", figures.per_run_lines(
            downstream, "offset", "kl_mean", "positions after the target", "mean KL (log)"), html_table(downstream)),
        _section("How pathological: SAE KL among random draws", "sigma", figures.sigma_panels(shown, draws),
                 html_table(sigma.sort_values("z", ascending=False).head(20))),
    ]  # fmt: skip


def _token_figures(answers: Answers) -> list[str]:
    top = answers("top_tokens")
    points = answers("compare_saes", scope=None)
    curve = answers("sensitivity_curve", scope=None, interventions=["cos_random_sae_norm", "cos_random_true_norm"])
    return [
        _section("KL gap across layers", "cross_layer", figures.correlation_heatmap(answers("cross_layer"))),
        _section("Top tokens by mean KL gap", "top_tokens", figures.top_token_bars(top), html_table(top)),
        _section("Sensitivity to cos_sim", "sensitivity_curve", figures.sensitivity(curve, points)),
        _section("Correlates of the KL gap", "gap_correlates", html_table(answers("gap_correlates"))),
        _section("SAEs side by side", "compare_saes", html_table(points)),
    ]  # fmt: skip


_AMPLIFICATION_COLUMNS = ["hook_layer", "sae", "intervention", "baseline", "layer", "r_mean", "r_mean_lo", "r_mean_hi",
                          "ratio_to_random", "ratio_to_random_lo", "ratio_to_random_hi", "growth_vs_random",
                          "growth_vs_random_lo", "growth_vs_random_hi", "answer"]  # fmt: skip
_GROWS = {"faster": "grows faster than", "slower": "grows slower than", "same": "grows no differently from"}


def _amplification(answers: Answers) -> str:
    """Per run, the mean r_l curves, and at the last layer how far the SAE's error (and its parts) got against
    a random error of the same size, in words and as a table."""
    curves = answers("amplification")
    if curves.empty:
        return ""
    last = curves[(curves.layer == curves.groupby("run_id").layer.transform("max")) & curves.answer.notna()]
    compared = last[last.intervention.isin([SAE, *(sae for sae, _ in PAIRS.values())])]
    words = [
        f"<p>L{row.hook_layer} {html.escape(row.sae)}: at layer {row.layer} <b>{html.escape(row.intervention)}</b> "
        f"pushes the residual stream {row.ratio_to_random:.3g}x [{row.ratio_to_random_lo:.3g}, "
        f"{row.ratio_to_random_hi:.3g}] as far as {html.escape(row.baseline)}, from the same distance at the hook: "
        f"it {_GROWS[row.answer]} a random error of the same size.</p>"
        for row in compared[compared.intervention == SAE].itertuples()
    ]  # fmt: skip
    table = html_table(compared[_AMPLIFICATION_COLUMNS])
    return _section("How far each error is amplified through later layers", "amplification", "".join(words),
                    figures.amplification_curves(curves), table)  # fmt: skip


def _gap_sources(answers: Answers) -> list[str]:
    """Where does the gap come from? The error's parts, its amplification through later layers and the joint run
    (docs/method.md §8-§10), when the job has them."""
    parts, joint = answers("error_parts"), answers("joint")
    sections = [
        _section("The error's linear and nonlinear parts", "error_parts", html_table(parts) if len(parts) else None),
        _amplification(answers),
        _section("All SAEs spliced at once", "joint", html_table(joint) if len(joint) else None),
    ]
    if not any(sections):
        return []
    note = ("<p class='note'>docs/method.md §8-§10: the error split by a linear fit, how far each error is "
            "amplified through the later layers, and every SAE spliced at once.</p>")  # fmt: skip
    return ["<h2>Where does the gap come from?</h2>", note, *sections]


def _job(job_id: int, store: Any) -> Any:
    """The job's row (schema.jobs.JobInfo) from `store`, or the default store when None."""
    if store is None:
        from schema.read import default_store

        store = default_store()
    return store.get_job(job_id)


def _warning_box(job_id: int, store: Any) -> str:
    """The job's stored warnings (e.g. a bare .npy whose tokenizer nothing checked), in a box at the top."""
    items = "".join(f"<li>{html.escape(text)}</li>" for text in _job(job_id, store).warnings)
    return f"<div class='warning'><strong>Warning</strong><ul>{items}</ul></div>\n" if items else ""


def _job_facts(job_id: int, store: Any) -> str:
    """The job's spec and the library versions it ran with, as JSON."""
    job = _job(job_id, store)
    spec = html.escape(json.dumps(job.spec.model_dump(mode="json"), indent=1), quote=False)
    versions = html.escape(json.dumps(job.versions, indent=1), quote=False)
    return (f"<h2>Job {job_id}: spec and versions</h2><p>status {job.status}, created {job.created_at:%Y-%m-%d %H:%M}"
            f" UTC</p><pre>{spec}</pre><pre>{versions}</pre>")  # fmt: skip


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td.name { text-align: left; }
.question, .note { color: #555; font-style: italic; }
p.answer { font-size: 17px; line-height: 1.45; max-width: 70em; }
table.verdict { font-size: 14px; } table.verdict td { white-space: nowrap; }
td.bad { background: #fbe3e1; } td.even { background: #eeeeee; } td.good { background: #e2f2e2; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; vertical-align: middle; }
pre { background: #f6f6f6; padding: 0.5em; font-size: 11px; }
div.warning { background: #fff4d6; border: 1px solid #e0b400; padding: 0.3em 1em; max-width: 70em; }
"""
_SECTIONS: tuple[Callable[[Answers], list[str] | str], ...] = (
    _answer, _layer_figures, _single_token_figures, _token_figures, _gap_sources
)  # fmt: skip


def build_report(job_id: int, store: Any = None) -> str:
    """The report of job `job_id` as one HTML document (figures inline, no external resources)."""
    answers = Answers(job_id, store)
    body: list[str] = []
    for section in _SECTIONS:
        parts = section(answers)
        body += [parts] if isinstance(parts, str) else parts
    body = [part for part in body if part] or ["<p>No records for this job.</p>"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"saegap report: job {job_id}"
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{title}: are the SAE's errors pathological?</h1><p class='note'>Generated {stamp}. "
        "KL(P_clean || Q_intervened) in nats; CIs resample sequences.</p>\n"
        + _warning_box(job_id, store) + "\n".join(body) + "\n" + _job_facts(job_id, store) + "\n</body></html>\n"
    )  # fmt: skip
