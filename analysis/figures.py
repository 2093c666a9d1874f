"""The seed's figures, drawn from the analysis modules' tables (matplotlib, no pyplot state).

Each function takes a module's answer as a DataFrame and returns a Figure, or None when
the table is empty. Figures are built with `matplotlib.figure.Figure` directly, so no
global backend is chosen and nothing happens at import.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# The seed contrasts the SAE with its most natural baseline; other interventions are drawn thinner.
HIGHLIGHT = ("sae", "eps_random")


def to_svg(figure: Figure) -> str:
    """The figure as an inline <svg> element (no XML header), for a self-contained HTML page."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _run_label(row: pd.Series) -> str:
    return f"L{row.layer} {row.sae}"


def _grid(n_panels: int, width: float = 4.0, height: float = 3.0) -> tuple[Figure, list]:
    """A figure with n panels in rows of up to 3."""
    columns = min(3, n_panels)
    rows = math.ceil(n_panels / columns)
    figure = Figure(figsize=(width * columns, height * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def mean_by_layer(summary: pd.DataFrame, column: str, ylabel: str, log: bool) -> Figure | None:
    """Mean per layer for every intervention, one panel per SAE release (the seed's bar charts, as lines)."""
    if summary.empty:
        return None
    releases = summary.sae.str.split("/").str[0]  # 'release/sae_id': one panel per release
    figure, axes = _grid(releases.nunique(), width=6.0, height=4.0)
    for axis, (release, rows) in zip(axes, summary.groupby(releases), strict=True):
        for intervention, points in rows.groupby("intervention"):
            points = points.groupby("layer")[column].mean()
            strong = intervention in HIGHLIGHT
            axis.plot(points.index, points.to_numpy(), marker="o", lw=2.5 if strong else 1.0, label=intervention)
        axis.set(xlabel="layer", ylabel=ylabel, yscale="log" if log else "linear", title=release)
        axis.legend(fontsize=7, ncol=2)
    return figure


def kl_histograms(histogram: pd.DataFrame) -> Figure | None:
    """Per run: log-binned KL of sae and eps_random, tails clamped, p99.9 in the legend (the seed's histograms)."""
    rows = histogram[histogram.intervention.isin(HIGHLIGHT)]
    if rows.empty:
        return None
    runs = rows.drop_duplicates("run_id")
    figure, axes = _grid(len(runs))
    for axis, (_, run) in zip(axes, runs.iterrows(), strict=True):
        for intervention, bins in rows[rows.run_id == run.run_id].groupby("intervention"):
            fractions, edges = _contiguous(bins)
            axis.stairs(fractions, edges, label=f"{intervention} (p99.9 {bins.kl_p999.iloc[0]:.3g})")
        axis.set(xscale="log", xlabel="KL (nats)", ylabel="fraction of tokens")
        axis.set_title(_run_label(run), fontsize=8)
        axis.tick_params(labelsize=7, which="both")
        axis.legend(fontsize=7)
    return figure


def _contiguous(bins: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """kl_histogram lists non-empty bins only; fill the gaps with zeros (bins are log-spaced: a constant ratio)."""
    first, last = int(bins.bin.min()), int(bins.bin.max())
    fractions = np.zeros(last - first + 1)
    fractions[bins.bin.to_numpy() - first] = bins.fraction.to_numpy()
    ratio = bins.bin_hi.iloc[0] / bins.bin_lo.iloc[0]
    edges = bins.bin_lo.iloc[0] * ratio ** (np.arange(last - first + 2) + first - bins.bin.iloc[0])
    return fractions, edges


def per_run_lines(table: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str) -> Figure | None:
    """Per run, one line per intervention: y against x (KL by position, downstream, sensitivity)."""
    if table.empty:
        return None
    runs = table.drop_duplicates("run_id")
    figure, axes = _grid(len(runs))
    for axis, (_, run) in zip(axes, runs.iterrows(), strict=True):
        for intervention, rows in table[table.run_id == run.run_id].groupby("intervention"):
            strong = intervention in HIGHLIGHT
            axis.plot(rows[x], rows[y], marker="." if strong else None, lw=2.0 if strong else 1.0, label=intervention)
        axis.set(xlabel=xlabel, ylabel=ylabel, yscale="log")
        axis.set_title(_run_label(run), fontsize=8)
        axis.legend(fontsize=6)
    return figure


def z_histogram(sigma: pd.DataFrame) -> Figure | None:
    """Distribution of the SAE's KL in standard deviations of the random draws, per run."""
    if sigma.empty:
        return None
    figure, (axis,) = _grid(1, width=6.0, height=3.5)
    for _, rows in sigma.groupby("run_id"):
        axis.hist(rows.z.dropna(), bins=30, histtype="step", label=_run_label(rows.iloc[0]))
    axis.axvline(0.0, color="grey", lw=0.8)
    axis.set(xlabel="SAE KL, standard deviations from the draws' mean", ylabel="tokens")
    axis.legend(fontsize=7)
    return figure


def correlation_heatmap(matrix: pd.DataFrame) -> Figure | None:
    """Token-level kl_gap correlation between runs of one job (the seed's strongest correlate)."""
    if matrix.empty:
        return None
    labels = matrix.drop_duplicates("run_a").sort_values(["layer_a", "run_a"])
    order = {run: i for i, run in enumerate(labels.run_a)}
    grid = np.full((len(order), len(order)), np.nan)
    for row in matrix.itertuples():
        if row.run_b in order:
            grid[order[row.run_a], order[row.run_b]] = row.pearson
    figure, (axis,) = _grid(1, width=5.0, height=4.5)
    image = axis.imshow(grid, vmin=-1, vmax=1, cmap="RdBu_r")
    names = [f"L{r.layer_a} run {r.run_a}" for r in labels.itertuples()]
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axis.set_yticks(range(len(names)), names, fontsize=7)
    figure.colorbar(image, ax=axis, label="Pearson r of kl_gap")
    return figure
