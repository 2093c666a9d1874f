"""Per run: does the SAE's error grow faster through the later layers than a random error of the same size?

The engine measures, for every intervention, r_l = ||h_l(patched) - h_l(clean)|| / ||h_l(clean)|| at each
later block's resid_post, from the hooked block to the last (amplification_sums; docs/method.md §9). This
module gives, per run, intervention and later layer, the mean of r over the recorded positions (and draws)
and how it compares:

- ratio_to_random: mean r_l of the intervention / mean r_l of its random baseline at the same distance
  (eps_random; eps_random_linear / eps_random_nonlinear for the error parts). The two start at the same
  distance at the hook, so a ratio above 1 means the intervention's perturbation grew more by layer l;
- growth: mean r_l / mean r at the first measured block (how much the blocks after it amplify), and
  growth_vs_random: that growth over the baseline's.

Every interval is a paired sequence bootstrap (a replicate re-weights whole sequences, the same weights for
every intervention and layer). `answer`, from ratio_to_random's interval: faster (above 1), slower (below 1)
or same (the interval holds 1). Runs from before the measurement, and joint runs, have no rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.base import SELECTED_RUNS, BootstrapSettings, Scope, ScopedFilters, empty_like, read
from analysis.bootstrap import bootstrap_means, percentile_interval
from analysis.error_parts import PAIRS
from schema.spec import BASELINE

FASTER, SLOWER, SAME = "faster", "slower", "same"
# The random baseline each intervention is compared with: the error parts' own, eps_random for the rest.
_PART_BASELINES = dict(PAIRS.values())


def baseline_of(intervention: str) -> str:
    return _PART_BASELINES.get(intervention, BASELINE)


class Params(BootstrapSettings, ScopedFilters):
    scope: Scope | None = None


# The selected runs that have amplification rows (read one at a time below: a run's per-sequence rows are
# sequences x interventions x later layers, ~1 M at seed scale).
RUNS_SQL = f"""
WITH {SELECTED_RUNS}
SELECT job_id, run_id, sae, hook_name, layer AS hook_layer, scope FROM selected
WHERE run_id IN (SELECT DISTINCT run_id FROM amplification_sums)
ORDER BY job_id, layer, run_id
"""

PER_SEQUENCE_SQL = """
SELECT sequence, intervention, layer, sum(n)::DOUBLE AS n, sum(r_sum) AS r_sum, sum(r_sq_sum) AS r_sq_sum
FROM amplification_sums WHERE run_id = $run
GROUP BY ALL
"""

_F, _S = pa.float64(), pa.string()
_STATISTICS = ("r_mean", "ratio_to_random", "growth", "growth_vs_random")
SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_id", pa.int64()), ("sae", _S), ("hook_name", _S), ("hook_layer", pa.int32()),
     ("scope", _S), ("intervention", _S), ("baseline", _S), ("layer", pa.int32()), ("n_sequences", pa.int64()),
     ("n", pa.int64()), ("r_std", _F), *[(f"{name}{end}", _F) for name in _STATISTICS for end in ("", "_lo", "_hi")],
     ("answer", _S)]
)  # fmt: skip


def amplification(params: Params, store: Any = None) -> pa.Table:
    runs = read(RUNS_SQL, params.bind(), store).to_pandas()
    frames = []
    for run in runs.itertuples():
        rows = read(PER_SEQUENCE_SQL, {"run": int(run.run_id)}, store).to_pandas()
        curve = _run_curve(rows, params)
        if curve is not None:
            frames.append(curve.assign(**{c: getattr(run, c) for c in runs.columns}))
    if not frames:
        return empty_like(SCHEMA)
    table = pd.concat(frames, ignore_index=True)
    table["answer"] = _answers(table.ratio_to_random_lo, table.ratio_to_random_hi)
    return pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _run_curve(rows: pd.DataFrame, params: Params) -> pd.DataFrame | None:
    """Mean r per (intervention, layer) of one run, with its comparisons and their paired bootstrap intervals."""
    if rows.sequence.nunique() < 2:
        return None  # one sequence: no interval
    groups = rows[["intervention", "layer"]].drop_duplicates().sort_values(["intervention", "layer"])
    groups = groups.reset_index(drop=True)
    column = rows.merge(groups.reset_index(), on=["intervention", "layer"])["index"].to_numpy()
    sequence = np.unique(rows.sequence.to_numpy(), return_inverse=True)[1]
    sums, counts = np.zeros((sequence.max() + 1, len(groups))), np.zeros((sequence.max() + 1, len(groups)))
    sums[sequence, column], counts[sequence, column] = rows.r_sum.to_numpy(), rows.n.to_numpy()
    point = sums.sum(0) / counts.sum(0)  # (G,)
    draws = bootstrap_means(sums, counts, params.n_boot, params.seed)  # (B, G), paired over groups
    out = groups.assign(n_sequences=int(sequence.max() + 1), n=counts.sum(0).astype(np.int64))
    totals = rows.groupby(["intervention", "layer"])[["n", "r_sq_sum"]].sum()
    square = groups.join(totals, on=["intervention", "layer"])
    out["r_std"] = np.sqrt(np.maximum(square.r_sq_sum.to_numpy() / square.n.to_numpy() - point**2, 0.0))
    for name, (value, replicates) in _statistics(groups, point, draws).items():
        low, high = percentile_interval(replicates, params.confidence)
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = value, low, high
    out["baseline"] = out.intervention.map(baseline_of)
    itself = out.intervention == out.baseline  # the baseline against itself: 1 by construction, no comparison
    out.loc[itself, [f"{n}{e}" for n in _STATISTICS[1:] if n != "growth" for e in ("", "_lo", "_hi")]] = np.nan
    return out


def _statistics(groups: pd.DataFrame, point: np.ndarray, draws: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each statistic's point values (G,) and replicates (B, G), from the mean r of every (intervention, layer)."""
    index = {key: k for k, key in enumerate(zip(groups.intervention, groups.layer, strict=True))}
    first = groups.groupby("intervention").layer.transform("min")
    own_first = np.array([index[(name, layer)] for name, layer in zip(groups.intervention, first, strict=True)])
    baseline = [index.get((baseline_of(name), layer), -1) for name, layer in zip(groups.intervention, groups.layer,
                                                                                  strict=True)]  # fmt: skip
    base_first = [index.get((baseline_of(name), layer), -1) for name, layer in zip(groups.intervention, first,
                                                                                    strict=True)]  # fmt: skip

    def of(means: np.ndarray) -> dict[str, np.ndarray]:
        padded = np.concatenate([means, np.full((means.shape[0], 1), np.nan)], axis=1)  # index -1: no baseline
        with np.errstate(invalid="ignore", divide="ignore"):
            growth = means / means[:, own_first]
            base_growth = padded[:, baseline] / padded[:, base_first]
            return {"r_mean": means, "ratio_to_random": means / padded[:, baseline], "growth": growth,
                    "growth_vs_random": growth / base_growth}  # fmt: skip

    at_point, replicated = of(point[None, :]), of(draws)
    return {name: (at_point[name][0], replicated[name]) for name in at_point}


def _answers(low: pd.Series, high: pd.Series) -> list[str | None]:
    """faster / slower / same from ratio_to_random's interval; None where there is no baseline to compare with."""
    return [None if np.isnan(lo) or np.isnan(hi) else FASTER if lo > 1 else SLOWER if hi < 1 else SAME
            for lo, hi in zip(low, high, strict=True)]  # fmt: skip
