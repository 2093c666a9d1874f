"""A self-contained HTML report of one job: the seed's figures (inline SVG) and tables for its SAEs.

Every number comes from the registry's modules (analysis.registry), so the page, the CLI
and the UI agree. Sections with no data (say, no single-token runs) are left out.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis import figures
from analysis.registry import MODULES

# Columns shown in the layer-summary table (the full table has every intervention and CI).
_SUMMARY_COLUMNS = ["layer", "sae", "intervention", "n_tokens", "kl_mean", "kl_mean_lo", "kl_mean_hi", "kl_median",
                    "kl_p999", "loss_delta_mean", "kl_ratio", "kl_ratio_lo", "kl_ratio_hi"]  # fmt: skip


@dataclass(frozen=True)
class Section:
    """One part of the page: a module's answer drawn and/or tabulated."""

    title: str
    module: str
    params: dict[str, Any]
    figure: Callable[[pd.DataFrame], Figure | None] | None = None
    table: Callable[[pd.DataFrame], pd.DataFrame] | None = None


def _highlighted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.intervention.isin(figures.HIGHLIGHT)]


def _sections() -> list[Section]:
    lines = figures.per_run_lines
    return [
        Section("SAELens metrics", "sae_metrics", {}, table=lambda f: f),
        Section("Mean KL per layer", "layer_summary", {},
                lambda f: figures.mean_by_layer(f, "kl_mean", "mean KL", True),
                lambda f: _highlighted(f)[_SUMMARY_COLUMNS]),
        Section("Mean CE-loss increase per layer", "layer_summary", {},
                lambda f: figures.mean_by_layer(f, "loss_delta_mean", "mean CE-loss increase", False)),
        Section("Distribution of per-token KL", "kl_histogram", {}, figures.kl_histograms),
        Section("KL by position", "by_position", {"interventions": list(figures.HIGHLIGHT)},
                lambda f: lines(f, "position", "kl_mean", "position", "mean KL")),
        Section("Single-token interventions: KL downstream", "downstream", {},
                lambda f: lines(f, "offset", "kl_mean", "positions after the target", "mean KL"), lambda f: f),
        Section("How pathological: SAE KL among random draws", "sigma_test", {}, figures.z_histogram,
                lambda f: f.sort_values("z", ascending=False).head(20)),
        Section("Correlates of the KL gap", "gap_correlates", {}, table=lambda f: f),
        Section("KL gap across layers", "cross_layer", {}, figures.correlation_heatmap),
        Section("Top tokens by mean KL gap", "top_tokens", {}, table=lambda f: f),
        Section("Sensitivity to cos_sim", "sensitivity_curve", {},
                lambda f: lines(f, "cos_sim_mean", "kl_mean", "cos_sim", "mean KL")),
        Section("SAEs side by side", "compare_saes", {}, table=lambda f: f),
    ]  # fmt: skip


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; font-size: 12px; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
.question { color: #555; font-style: italic; }
"""


def _render_section(section: Section, answers: dict[str, pd.DataFrame]) -> str:
    module = MODULES[section.module]
    answer = answers[_key(section)]
    if answer.empty:
        return ""
    parts = [f"<h2>{html.escape(section.title)}</h2>", f"<p class='question'>{html.escape(module.question)}</p>"]
    figure = section.figure(answer) if section.figure else None
    if figure is not None:
        parts.append(figures.to_svg(figure))
    if section.table is not None:
        parts.append(_html_table(section.table(answer)))
    return "\n".join(parts)


def _html_table(frame: pd.DataFrame) -> str:
    # Token texts quoted so leading spaces (GPT-2's word boundaries) stay visible.
    quoted = {column: repr for column in ("token_text", "context") if column in frame}
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", formatters=quoted)


def _key(section: Section) -> str:
    return f"{section.module} {sorted(section.params.items())}"


def _answers(sections: list[Section], job_id: int, store: Any) -> dict[str, pd.DataFrame]:
    """Each distinct (module, params) answered once; sections sharing one reuse it."""
    answers: dict[str, pd.DataFrame] = {}
    for section in sections:
        if _key(section) not in answers:
            module = MODULES[section.module]
            answers[_key(section)] = module(module.params(job=job_id, **section.params), store=store).to_pandas()
    return answers


def build_report(job_id: int, store: Any = None) -> str:
    """The report of job `job_id` as one HTML document (figures inline, no external resources)."""
    sections = _sections()
    answers = _answers(sections, job_id, store)
    body = [_render_section(section, answers) for section in sections]
    body = [part for part in body if part] or ["<p>No records for this job.</p>"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"saegap report: job {job_id}"
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{title}</h1><p>Generated {stamp}. KL(P_clean || Q_intervened) in nats; CIs resample sequences."
        f"</p>\n" + "\n".join(body) + "\n</body></html>\n"
    )
