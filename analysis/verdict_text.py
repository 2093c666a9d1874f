"""The verdict in words: the compact table `saegap evaluate` ends with, one sentence per SAE, and the
report's summary paragraph per SAE release. Everything here reads analysis.verdict's table.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.verdict import BASELINES, BETTER, NO_GAP, PATHOLOGICAL

WIDTH = 100  # the terminal answer fits this many columns
TABLE_BASELINES = ("eps_random", "eps_cov_random")  # isotropic and covariance-shaped: the two kinds
# What each baseline is, in the words of a sentence ("... that of <phrase>").
BASELINE_PHRASES = {
    "eps_random": "a random point at the same distance (eps_random)",
    "cos_random_sae_norm": "a random point at the SAE's cos-sim and norm (cos_random_sae_norm)",
    "cos_random_true_norm": "a random point at the SAE's cos-sim and the true norm (cos_random_true_norm)",
    "eps_cov_random": "a covariance-shaped random error of the same norm (eps_cov_random)",
    "eps_real_diff": "a difference of real activations at the same distance (eps_real_diff)",
}


def _frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return table.to_pandas() if isinstance(table, pa.Table) else table


def fmt(value: Any, digits: int = 3) -> str:
    """A number to `digits` significant figures; '-' when missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:#.{digits}g}"


def verdict_of(row: Any, baseline: str) -> str | None:
    """The row's verdict against `baseline`, None when it has none (pandas gives NaN for a null string)."""
    value = getattr(row, f"verdict_{baseline}")
    return value if isinstance(value, str) else None


def ratio_with_ci(row: Any, baseline: str, metric: str = "kl") -> str:
    """'2.31 [2.10, 2.55]' for the row's ratio to `baseline`; '-' when the run has no such records."""
    name = f"{metric}_ratio_{baseline}"
    if not np.isfinite(getattr(row, name)):
        return "-"
    return f"{getattr(row, name):.2f} [{getattr(row, name + '_lo'):.2f}, {getattr(row, name + '_hi'):.2f}]"


def run_labels(frame: pd.DataFrame) -> tuple[str, list[str]]:
    """The first column: the layer when every run sits at one kind of hook, one run per layer;
    else 'L<layer> <hook point>', with the SAE's release where two runs share a hook."""
    if frame.hook_point.nunique() == 1 and frame.layer.is_unique:
        return "layer", [str(layer) for layer in frame.layer]
    labels = [f"L{r.layer} {r.hook_point}" for r in frame.itertuples()]
    if len(set(labels)) < len(labels):
        labels = [f"{label} {r.sae.split('/')[0]}"[:30] for label, r in zip(labels, frame.itertuples(), strict=True)]
    return "hook", labels


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [header, *rows]]


def render_table(table: pa.Table | pd.DataFrame) -> list[str]:
    """Per run: label, SAE KL, ratio to eps_random and to eps_cov_random with CIs, and the two verdicts."""
    frame = _frame(table)
    label, labels = run_labels(frame)
    header = [label, "SAE KL"]
    for baseline in TABLE_BASELINES:
        header += [f"vs {baseline} [CI]", "verdict"]
    rows = []
    for text, row in zip(labels, frame.itertuples(), strict=True):
        cells = [text, fmt(row.kl_sae, 4)]
        for baseline in TABLE_BASELINES:
            cells += [ratio_with_ci(row, baseline), verdict_of(row, baseline) or "-"]
        rows.append(cells)
    return _aligned(header, rows)


_PHRASING = {PATHOLOGICAL: "pathological against {}", NO_GAP: "no gap to {}", BETTER: "better than {}"}


def sentence(row: Any) -> str:
    """One sentence on one SAE: its verdict against each table baseline, the token share, the sigma test."""
    parts = [
        f"{_PHRASING[verdict_of(row, b)].format(b)} ({getattr(row, f'kl_ratio_{b}'):.2f}x)"
        for b in TABLE_BASELINES
        if verdict_of(row, b)
    ]
    text = f"{row.sae} (layer {row.layer}): " + (", ".join(parts) or "no baseline to compare with")
    if np.isfinite(row.frac_tokens_sae_above_eps_random):
        text += f"; KL above eps_random's on {row.frac_tokens_sae_above_eps_random:.0%} of tokens"
    if np.isfinite(row.z_median):
        text += f"; sigma test: median z {row.z_median:.2f}, z > 2 on {row.frac_z_above_2:.0%} of tokens"
    return text + "."


def render_text(table: pa.Table | pd.DataFrame, job_id: int | None = None) -> str:
    """The answer `saegap evaluate` prints: a title, the compact table, one sentence per SAE (<= WIDTH columns)."""
    frame = _frame(table)
    if frame.empty:
        return f"job {job_id}: no verdict (no SAE records with at least 2 sequences)"
    title = "Are the SAE's errors pathological? vs B = SAE's mean KL(clean || patched) / B's [95% CI]"
    lines = [title if job_id is None else f"job {job_id}: {title[0].lower()}{title[1:]}"]
    lines = textwrap.wrap(lines[0], WIDTH) + render_table(frame) + [""]
    for row in frame.itertuples():
        lines += textwrap.wrap(sentence(row), WIDTH, subsequent_indent="  ")
    return "\n".join(lines)


def answer(job_id: int, store: Any = None) -> str:
    """render_text of the job's verdict (the default parameters)."""
    from analysis.verdict import Params, verdict

    return render_text(verdict(Params(job=job_id), store=store), job_id)


def _span(values: pd.Series) -> str:
    low, high = values.min(), values.max()
    return f"{low:.2f}x" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}x"


def _where(rows: pd.DataFrame, baseline: str) -> str:
    """'pathological at layers 0, 1; no gap at 2' for one baseline's verdicts."""
    groups = rows.groupby(f"verdict_{baseline}", sort=False).layer
    return "; ".join(f"{verdict} at layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"
                     for verdict, layers in groups)  # fmt: skip


def _baseline_sentence(rows: pd.DataFrame, baseline: str, first: bool) -> str:
    """The ratio range, CI range and verdicts against one baseline, over the rows (runs) that have it."""
    ratio = rows[f"kl_ratio_{baseline}"]
    low, high = rows[f"kl_ratio_{baseline}_lo"].min(), rows[f"kl_ratio_{baseline}_hi"].max()
    detail = f"{_span(ratio)} (95% CIs within {low:.2f}-{high:.2f}; {_where(rows, baseline)})"
    if not first:
        return f"Against {BASELINE_PHRASES[baseline]} it is {detail}."
    n_path = int((rows[f"verdict_{baseline}"] == PATHOLOGICAL).sum())
    layers = f"{n_path} of {len(rows)} layer{'s' if len(rows) > 1 else ''}"
    return f"At {layers} the SAE's KL is significantly above that of {BASELINE_PHRASES[baseline]}: {detail}."


def _other_baselines(known: list[tuple[str, pd.DataFrame]]) -> str:
    """One sentence on the baselines after the first two: each one's ratio range and verdict counts."""
    if not known:
        return ""
    parts = []
    for baseline, rows in known:
        counts = rows[f"verdict_{baseline}"].value_counts()
        tally = ", ".join(f"{verdict} at {n}" for verdict, n in counts.items())
        parts.append(f"{baseline} {_span(rows[f'kl_ratio_{baseline}'])} ({tally})")
    return "Other baselines: " + "; ".join(parts) + "."


def _sigma_sentence(rows: pd.DataFrame) -> str:
    """The sigma test's z over the single-token runs that have one; '' when none does."""
    tested = rows[rows.z_median.notna()]
    if tested.empty:
        return ""
    return (f"Sigma test (single-token, the SAE's KL in standard deviations of the random draws): median z "
            f"{_range(tested.z_median)}, 90th percentile {_range(tested.z_p90)}, z > 2 on "
            f"{_range(100 * tested.frac_z_above_2, '.0f')}% of tokens.")  # fmt: skip


def _range(values: pd.Series, spec: str = ".2f") -> str:
    low, high = format(values.min(), spec), format(values.max(), spec)
    return low if low == high else f"{low} to {high}"


def summary_paragraphs(table: pa.Table | pd.DataFrame) -> list[str]:
    """Per SAE release, the answer in sentences with the ratios' ranges and CIs (the report's first paragraph):
    the isotropic and covariance-shaped baselines in full, the others in one sentence."""
    frame = _frame(table)
    order = [*TABLE_BASELINES, *[b for b in BASELINES if b not in TABLE_BASELINES]]
    paragraphs = []
    for release, rows in frame.groupby(frame.sae.str.split("/").str[0], sort=False):
        known = [(b, rows[rows[f"verdict_{b}"].notna()]) for b in order]
        known = [(b, part) for b, part in known if len(part)]
        main = [(b, part) for b, part in known if b in TABLE_BASELINES]
        sentences = [_baseline_sentence(part, b, i == 0) for i, (b, part) in enumerate(main)]
        sentences.append(_other_baselines([(b, part) for b, part in known if b not in TABLE_BASELINES]))
        sentences.append(_sigma_sentence(rows))
        paragraphs.append(f"{release}: " + (" ".join(s for s in sentences if s) or "no baseline records."))
    return paragraphs
