"""The seed's figures, drawn from the analysis modules' tables (matplotlib, no pyplot state).

Each function takes module answers as DataFrames and returns a Figure, or None when there
is nothing to draw. Figures are built with `matplotlib.figure.Figure` directly, so no global
backend is chosen and nothing happens at import. Every intervention has one colour
everywhere (analysis.colours); layers are integer ticks; the ablations, whose KL and CE
increase dwarf the rest, get a log axis or a panel of their own.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from analysis.colours import colour_of
from schema.spec import BASELINE, INTERVENTION_NAMES, SAE

# The seed contrasts the SAE with its most natural baseline; other interventions are drawn thinner.
HIGHLIGHT = (SAE, BASELINE)
ABLATIONS = ("zero_ablation", "mean_ablation")
MAX_PANELS = 12  # per figure; a job with more runs shows the first ones (the tables list every run)


def to_svg(figure: Figure) -> str:
    """The figure as an inline <svg> element (no XML header), for a self-contained HTML page."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def run_label(row: pd.Series | object) -> str:
    return f"L{row.layer} {row.sae}"


def _ordered(names: pd.Series | list[str]) -> list[str]:
    """Intervention names in INTERVENTION_NAMES order (the legend's order on every figure)."""
    present = set(names)
    return [name for name in INTERVENTION_NAMES if name in present]


def _grid(n_panels: int, width: float = 4.0, height: float = 3.0, columns: int = 3) -> tuple[Figure, list]:
    """A figure with n panels in rows of up to `columns`."""
    n_panels = max(1, min(n_panels, MAX_PANELS))
    columns = min(columns, n_panels)
    rows = math.ceil(n_panels / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def _runs(table: pd.DataFrame, column: str = "run_id") -> pd.DataFrame:
    return table.drop_duplicates(column).sort_values(["layer", column]).head(MAX_PANELS)


def bars_by_layer(summary: pd.DataFrame, column: str, ylabel: str, log: bool) -> Figure | None:
    """Per SAE release, grouped bars of `column` per layer, one bar (with its CI) per intervention: the
    seed's first figure. log=False puts the ablations on a panel of their own."""
    if summary.empty:
        return None
    releases = summary.sae.str.split("/").str[0]
    panels = []
    for release, rows in summary.groupby(releases):
        if log or not rows.intervention.isin(ABLATIONS).any():
            panels.append((release, rows))
        else:
            panels += [(release, rows[~rows.intervention.isin(ABLATIONS)]),
                       (f"{release}: ablations", rows[rows.intervention.isin(ABLATIONS)])]  # fmt: skip
    figure, axes = _grid(len(panels), width=7.0, height=3.6, columns=2)
    for axis, (title, rows) in zip(axes, panels, strict=False):
        _bars(axis, rows, column)
        axis.set(ylabel=ylabel, yscale="log" if log else "linear", title=title)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # same colours in every panel
    return figure


def _bars(axis, rows: pd.DataFrame, column: str) -> None:
    layers = sorted(rows.layer.unique())
    names = _ordered(rows.intervention)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        points = rows[rows.intervention == name].groupby("layer")[[column, f"{column}_lo", f"{column}_hi"]].mean()
        points = points.reindex(layers)
        x = np.arange(len(layers)) + (k - (len(names) - 1) / 2) * width
        error = np.abs(points[[f"{column}_lo", f"{column}_hi"]].to_numpy().T - points[column].to_numpy())
        axis.bar(x, points[column], width, yerr=error, color=colour_of(name), label=name, error_kw={"lw": 0.6})
    axis.set_xticks(range(len(layers)), [str(layer) for layer in layers])
    axis.set_xlabel("layer")


def kl_histograms(histogram: pd.DataFrame) -> Figure | None:
    """Per run: log-binned KL of sae and eps_random, tails clamped, p99.9 in the legend (the seed's histograms)."""
    rows = histogram[histogram.intervention.isin(HIGHLIGHT)]
    if rows.empty:
        return None
    runs = _runs(rows)
    figure, axes = _grid(len(runs))
    for axis, run in zip(axes, runs.itertuples(), strict=False):
        for name in _ordered(rows.intervention):
            bins = rows[(rows.run_id == run.run_id) & (rows.intervention == name)]
            if bins.empty:
                continue
            fractions, edges = _contiguous(bins)
            label = f"{name} (p99.9 {bins.kl_p999.iloc[0]:.3g})"
            axis.stairs(fractions, edges, label=label, color=colour_of(name), lw=1.5)
        axis.set(xscale="log", xlabel="KL (nats)", ylabel="fraction of tokens")
        axis.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-1, 3x10^-1, ... overlap on narrow ranges
        axis.set_title(run_label(run), fontsize=8)
        axis.legend(fontsize=7)
    return figure


def _contiguous(bins: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Histograms list non-empty bins only; fill the gaps with zeros (log-spaced bins: a constant ratio)."""
    first, last = int(bins.bin.min()), int(bins.bin.max())
    fractions = np.zeros(last - first + 1)
    fractions[bins.bin.to_numpy() - first] = bins.fraction.to_numpy()
    ratio = bins.bin_hi.iloc[0] / bins.bin_lo.iloc[0]
    edges = bins.bin_lo.iloc[0] * ratio ** (np.arange(last - first + 2) + first - bins.bin.iloc[0])
    return fractions, edges


def loss_histograms(histogram: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    """Per run: CE-loss increase of sae and eps_random (equal-width bins), each mean in the legend."""
    rows = histogram[histogram.intervention.isin(HIGHLIGHT)]
    if rows.empty:
        return None
    means = summary.set_index(["run_id", "intervention"]).loss_delta_mean if len(summary) else pd.Series(dtype=float)
    runs = _runs(rows)
    figure, axes = _grid(len(runs))
    for axis, run in zip(axes, runs.itertuples(), strict=False):
        for name in _ordered(rows.intervention):
            bins = rows[(rows.run_id == run.run_id) & (rows.intervention == name)].sort_values("bin")
            if bins.empty:
                continue
            mean = means.get((run.run_id, name), float("nan"))
            edges = np.append(bins.bin_lo.to_numpy(), bins.bin_hi.iloc[-1])
            axis.stairs(bins.fraction.to_numpy(), edges, label=f"{name} (mean {mean:+.3g})", color=colour_of(name))
            axis.axvline(mean, color=colour_of(name), lw=0.8, ls="--")
        axis.set(xlabel="CE-loss increase (nats)", ylabel="fraction of tokens")
        axis.set_title(run_label(run), fontsize=8)
        axis.legend(fontsize=7)
    return figure


def per_run_lines(table: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str) -> Figure | None:
    """Per run, one line per intervention: y against x on a log y axis (KL by position, downstream)."""
    if table.empty:
        return None
    figure, panels = _run_panels(table, _runs(table))
    for axis, run, rows in panels:
        _intervention_lines(axis, rows, x, y)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label_panel(axis, run, xlabel, ylabel)
    return figure


def _run_panels(table: pd.DataFrame, runs: pd.DataFrame) -> tuple[Figure, list[tuple[object, object, pd.DataFrame]]]:
    """A grid with one panel per run: (axis, run, the table's rows of that run) for each."""
    figure, axes = _grid(len(runs))
    panels = [
        (axis, run, table[table.run_id == run.run_id]) for axis, run in zip(axes, runs.itertuples(), strict=False)
    ]
    return figure, panels


def _intervention_lines(axis, rows: pd.DataFrame, x: str, y: str, band: tuple[str, str] | None = None) -> None:
    """One line per intervention in its fixed colour, the SAE and eps_random drawn strongest; `band` (low and high
    columns) shades their intervals."""
    for name in _ordered(rows.intervention):
        line = rows[rows.intervention == name].sort_values(x)
        strong = name in HIGHLIGHT
        axis.plot(line[x], line[y], marker="." if strong else None, lw=2.0 if strong else 1.0, label=name,
                  color=colour_of(name))  # fmt: skip
        if band and strong:
            axis.fill_between(line[x], line[band[0]], line[band[1]], color=colour_of(name), alpha=0.2, lw=0)


def _label_panel(axis, run: object, xlabel: str, ylabel: str) -> None:
    axis.set(xlabel=xlabel, ylabel=ylabel, yscale="log")
    axis.set_title(run_label(run), fontsize=8)
    axis.legend(fontsize=6)


def target_bars(downstream: pd.DataFrame) -> Figure | None:
    """Single-token runs: mean KL at the intervened position P and at P+1, one bar per intervention."""
    rows = downstream[downstream.offset.isin([0, 1])]
    if rows.empty:
        return None
    runs = _runs(rows)
    figure, axes = _grid(len(runs))
    for axis, run in zip(axes, runs.itertuples(), strict=False):
        mine = rows[rows.run_id == run.run_id]
        names = _ordered(mine.intervention)
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            points = mine[mine.intervention == name].set_index("offset").kl_mean.reindex([0, 1])
            axis.bar(
                np.arange(2) + (k - (len(names) - 1) / 2) * width, points, width, color=colour_of(name), label=name
            )
        axis.set_xticks([0, 1], [f"P = {run.target_position}", "P + 1"])
        axis.set(ylabel="mean KL", yscale="log")
        axis.set_title(run_label(run), fontsize=8)
        axis.legend(fontsize=6)
    return figure


def sigma_panels(tokens: pd.DataFrame, draws: pd.DataFrame) -> Figure | None:
    """Per tested token (up to MAX_PANELS): its random draws' KL, the SAE's KL as a line, z in the legend."""
    if tokens.empty:
        return None
    figure, axes = _grid(len(tokens), width=4.0, height=2.8)
    for axis, token in zip(axes, tokens.itertuples(), strict=False):
        mine = draws[(draws.run_id == token.run_id) & (draws.sequence == token.sequence)]
        axis.hist(mine.kl, bins=20, color=colour_of(token.baseline), alpha=0.8, label=f"{token.baseline} draws")
        axis.axvline(token.kl_sae, color=colour_of(SAE), lw=2, label=f"sae, z = {token.z:.2f}")
        axis.set(xlabel="KL (nats)", ylabel="draws")
        axis.set_title(f"L{token.layer} seq {token.sequence} pos {token.position} {token.token_text!r}", fontsize=8)
        axis.legend(fontsize=7)
    return figure


def correlation_heatmap(matrix: pd.DataFrame) -> Figure | None:
    """Token-level kl_gap correlation between runs of one job (the seed's strongest correlate), values in cells."""
    if matrix.empty:
        return None
    labels = matrix.drop_duplicates("run_a").sort_values(["layer_a", "run_a"])
    order = {run: i for i, run in enumerate(labels.run_a)}
    grid = np.full((len(order), len(order)), np.nan)
    for row in matrix.itertuples():
        if row.run_b in order:
            grid[order[row.run_a], order[row.run_b]] = row.pearson
    size = 1.2 + 0.7 * len(order)
    figure, (axis,) = _grid(1, width=size + 1.5, height=size)
    image = axis.imshow(grid, vmin=-1, vmax=1, cmap="RdBu_r")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            axis.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if abs(value) > 0.6 else "black",
            )
    names = [f"L{r.layer_a} {r.sae_a.split('/')[0]}" for r in labels.itertuples()]
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axis.set_yticks(range(len(names)), names, fontsize=7)
    figure.colorbar(image, ax=axis, label="Pearson r of kl_gap")
    return figure


def top_token_bars(top: pd.DataFrame) -> Figure | None:
    """Per run: the top tokens' mean KL gap with its standard deviation as the spread (count in the label)."""
    if top.empty:
        return None
    runs = _runs(top)
    figure, axes = _grid(len(runs), width=4.2, height=0.18 * top.groupby("run_id").size().max() + 1.2)
    for axis, run in zip(axes, runs.itertuples(), strict=False):
        rows = top[top.run_id == run.run_id].sort_values("kl_gap_mean")
        labels = [f"{text!r} ({n})" for text, n in zip(rows.token_text, rows.n, strict=True)]
        axis.barh(range(len(rows)), rows.kl_gap_mean, xerr=rows.kl_gap_std, color=colour_of(SAE),
                  error_kw={"lw": 0.6, "ecolor": "#555555"})  # fmt: skip
        axis.set_yticks(range(len(rows)), labels, fontsize=6)
        axis.set(xlabel="mean KL gap (sae - eps_random), ± std")
        axis.set_title(run_label(run), fontsize=8)
    return figure


def sensitivity(curve: pd.DataFrame, points: pd.DataFrame) -> Figure | None:
    """Per run: KL of the cos-matched random points against cos_sim, and the SAE's (mean cos_sim, mean KL)."""
    rows = curve[curve.intervention != SAE]
    if rows.empty:
        return None
    figure, panels = _run_panels(rows, _runs(rows))
    for axis, run, mine in panels:
        _intervention_lines(axis, mine, "cos_sim_mean", "kl_mean")
        point = points[points.run_id == run.run_id]
        if len(point):
            axis.plot(point.cos_sim, point.kl_sae, "*", ms=14, color=colour_of(SAE),
                      label=f"sae (cos {point.cos_sim.iloc[0]:.3f}, KL {point.kl_sae.iloc[0]:.3g})")  # fmt: skip
        _label_panel(axis, run, "cos_sim(x, SAE(x))", "mean KL")
    return figure


def amplification_curves(curves: pd.DataFrame) -> Figure | None:
    """Per run, mean r_l (how far the residual stream is pushed, relative) against the later layer, one line per
    intervention on a log axis, with the CI as a band for the SAE and its random baseline (analysis.amplification)."""
    if curves.empty:
        return None
    figure, panels = _run_panels(curves, _runs(curves.rename(columns={"hook_layer": "layer", "layer": "later_layer"})))
    for axis, run, rows in panels:
        _intervention_lines(axis, rows, "layer", "r_mean", band=("r_mean_lo", "r_mean_hi"))
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label_panel(axis, run, "layer (resid_post)", "mean ||h' - h|| / ||h||")
    return figure
