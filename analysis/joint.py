"""Per joint run: do the SAEs' errors compound? Joint KL against the sum and the largest of the single-site KLs.

A joint run (JobSpec.joint; worker/joint.py) splices every SAE of its job at its own site at
once. For each intervention it ran, this module compares its mean KL with the sum of the job's
single-site runs' mean KLs (what independent, additive errors would give) and with the largest
of them, on the same sequences. Every interval is a sequence bootstrap: a replicate re-weights
whole sequences, the same weights for the joint and every single-site run (docs/method.md §10).
A joint/sum ratio above 1 means the errors compound beyond adding up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.base import SELECTED_RUNS, BootstrapSettings, ScopedFilters, empty_like, read
from analysis.bootstrap import bootstrap_means, percentile_interval

JOINT = "joint"  # runs.hook_point of a joint run


class Params(BootstrapSettings, ScopedFilters):
    pass


# Per-sequence KL sums of every run in a job that has a joint run (the selection filters the jobs).
SQL = f"""
WITH {SELECTED_RUNS},
jobs AS (SELECT DISTINCT job_id FROM selected WHERE hook_point = '{JOINT}'),
job_runs AS (SELECT r.* FROM runs r JOIN jobs USING (job_id) WHERE ($scope IS NULL OR r.scope = $scope))
SELECT r.job_id, r.run_id, r.hook_point = '{JOINT}' AS is_joint, s.intervention, s.sequence,
       sum(s.kl_sum) AS kl_sum, sum(s.n)::DOUBLE AS kl_count
FROM sequence_sums s JOIN job_runs r USING (run_id)
GROUP BY ALL
"""

_F = pa.float64()
_INTERVALS = [f"{name}{end}" for name in ("kl_joint", "kl_sum_single", "kl_max_single", "ratio_to_sum",
                                          "ratio_to_max") for end in ("", "_lo", "_hi")]  # fmt: skip
SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_id", pa.int64()), ("intervention", pa.string()), ("n_sites", pa.int64()),
     ("n_sequences", pa.int64()), *[(name, _F) for name in _INTERVALS]]
)  # fmt: skip


def joint(params: Params, store: Any = None) -> pa.Table:
    rows = read(SQL, params.bind(), store).to_pandas()
    out = []
    for (job, intervention), frame in rows.groupby(["job_id", "intervention"]):
        row = _compare(frame, params)
        if row is not None:
            out.append({"job_id": job, "intervention": intervention, **row})
    if not out:
        return empty_like(SCHEMA)
    table = pd.DataFrame(out).sort_values(["job_id", "run_id", "intervention"])
    return pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _compare(frame: pd.DataFrame, params: Params) -> dict[str, Any] | None:
    """One intervention of one job: the joint run's mean KL, the single-site sum and max, their ratios."""
    runs = sorted(frame.run_id.unique(), key=lambda run: (not frame.is_joint[frame.run_id == run].iloc[0], run))
    if not frame.is_joint.any() or len(runs) < 2 or frame.sequence.nunique() < 2:
        return None
    sequence = np.unique(frame.sequence.to_numpy(), return_inverse=True)[1]
    column = frame.run_id.map({run: k for k, run in enumerate(runs)}).to_numpy()
    sums, counts = np.zeros((sequence.max() + 1, len(runs))), np.zeros((sequence.max() + 1, len(runs)))
    sums[sequence, column], counts[sequence, column] = frame.kl_sum.to_numpy(), frame.kl_count.to_numpy()
    point = (sums.sum(0) / counts.sum(0))[None, :]  # (1, R): run 0 is the joint run
    draws = bootstrap_means(sums, counts, params.n_boot, params.seed)  # (B, R), paired over runs
    row: dict[str, Any] = {"run_id": int(runs[0]), "n_sites": len(runs) - 1, "n_sequences": int(sequence.max() + 1)}
    for name, (value, replicate) in _statistics(point, draws).items():
        low, high = percentile_interval(replicate[:, None], params.confidence)
        row |= {name: float(value[0]), f"{name}_lo": float(low[0]), f"{name}_hi": float(high[0])}
    return row


def _statistics(point: np.ndarray, draws: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each statistic's point value and replicates from (., R) mean KLs, column 0 the joint run."""

    def of(means: np.ndarray) -> dict[str, np.ndarray]:
        joint_kl, single = means[:, 0], means[:, 1:]
        total, largest = single.sum(1), single.max(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"kl_joint": joint_kl, "kl_sum_single": total, "kl_max_single": largest,
                    "ratio_to_sum": joint_kl / total, "ratio_to_max": joint_kl / largest}  # fmt: skip

    at_point, replicated = of(point), of(draws)
    return {name: (at_point[name], replicated[name]) for name in at_point}
