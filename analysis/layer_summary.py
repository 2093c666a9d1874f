"""Per layer and intervention: mean/median/p99.9 KL, mean CE-loss increase, ratio to eps_random, bootstrap CIs.

Means and their sequence-bootstrap CIs are exact (from the store's `sequence_sums`); kl_median
and kl_p999 are approximate, read off the store's fixed log-spaced `kl_bins` (40 per decade):
the two order statistics quantile_cont interpolates are each placed inside their own bin, so
the result is within a factor of schema.relations.KL_BIN_RATIO (~1.059) of the exact quantile
for KL in [1e-6, 1e2] (analysis.kl_histogram.bin_quantile), and exact when those bins hold one
distinct value each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, empty_like, read
from analysis.bootstrap import bootstrap_means, percentile_interval
from analysis.kl_histogram import RANKED_BINS, bin_quantile, binned_kl
from schema.spec import BASELINE


class Params(InterventionFilters):
    n_boot: int = Field(default=1000, ge=100, le=20_000, description="bootstrap replicates")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = Field(default=0, ge=0)


# One row per (run, intervention, sequence): the bootstrap's resampling unit, summed from the
# store's sequence_sums rollup (written with each shard). Samples of a random intervention all
# count towards its mean.
PER_SEQUENCE_SQL = f"""
WITH {SELECTED_RUNS}
SELECT r.job_id, run_id, s.intervention, s.sequence,
       sum(s.kl_sum) AS kl_sum, sum(s.n)::BIGINT AS kl_count,
       coalesce(sum(s.loss_delta_sum), 0) AS loss_sum, sum(s.loss_delta_n)::BIGINT AS loss_count
FROM sequence_sums s JOIN selected r USING (run_id)
WHERE {INTERVENTION_FILTER}
GROUP BY ALL
"""

# Median and 99.9th percentile per (run, intervention) over all records, read off the store's
# kl_bins rollup (approximate: within one bin, a factor of KL_BIN_RATIO); n_tokens counts sample 0.
QUANTILES_SQL = f"""
WITH {SELECTED_RUNS},
{binned_kl("n")},
{RANKED_BINS},
token_counts AS (SELECT run_id, intervention, sum(n_sample0)::BIGINT AS n_tokens FROM binned GROUP BY ALL)
SELECT r.job_id, run_id, r.sae, r.hook_name, r.layer, q.intervention,
       {bin_quantile(0.5)} AS kl_median, {bin_quantile(0.999)} AS kl_p999, any_value(t.n_tokens) AS n_tokens
FROM ranked q JOIN token_counts t USING (run_id, intervention) JOIN selected r USING (run_id)
GROUP BY ALL
"""

_F = pa.float64()
SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_id", pa.int64()), ("sae", pa.string()), ("hook_name", pa.string()),
     ("layer", pa.int32()), ("intervention", pa.string()), ("n_tokens", pa.int64()), ("n_sequences", pa.int64()),
     ("kl_mean", _F), ("kl_mean_lo", _F), ("kl_mean_hi", _F), ("kl_median", _F), ("kl_p999", _F),
     ("loss_delta_mean", _F), ("loss_delta_mean_lo", _F), ("loss_delta_mean_hi", _F),
     ("kl_ratio", _F), ("kl_ratio_lo", _F), ("kl_ratio_hi", _F)]
)  # fmt: skip


def layer_summary(params: Params, store: Any = None) -> pa.Table:
    bound = params.bind()
    per_sequence = read(PER_SEQUENCE_SQL, bound, store).to_pandas()
    quantiles = read(QUANTILES_SQL, bound, store).to_pandas()
    frames = [_summarise_job(rows, params) for _, rows in per_sequence.groupby("job_id")]
    frames = [frame for frame in frames if len(frame)]
    if not frames:  # no records, or no group with two sequences
        return empty_like(SCHEMA)
    summary = pd.concat(frames).merge(quantiles, on=["job_id", "run_id", "intervention"])
    summary = summary.sort_values(["job_id", "layer", "run_id", "intervention"])
    return pa.Table.from_pandas(summary[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _summarise_job(rows: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Point estimates and bootstrap CIs for every (run, intervention) of one job."""
    keys = ["run_id", "intervention"]
    group_index = rows.groupby(keys, sort=True).ngroup().to_numpy()  # (N,) group of each row
    frame = rows[keys].drop_duplicates().sort_values(keys).reset_index(drop=True)  # row g = group g
    sequence_index = np.unique(rows.sequence.to_numpy(), return_inverse=True)[1]  # (N,)
    n_groups, n_sequences = len(frame), int(sequence_index.max()) + 1
    dense = {}
    for column in ("kl_sum", "loss_sum", "kl_count", "loss_count"):
        matrix = np.zeros((n_sequences, n_groups))  # (S, G); a row per (group, sequence) at most
        matrix[sequence_index, group_index] = rows[column].to_numpy(np.float64)
        dense[column] = matrix
    # kl and loss side by side: one bootstrap, the same sequence draws for both (S, 2G)
    kl_loss = _Estimate(
        np.concatenate([dense["kl_sum"], dense["loss_sum"]], axis=1),
        np.concatenate([dense["kl_count"], dense["loss_count"]], axis=1),
        params,
    )
    kl = kl_loss.take(slice(0, n_groups))
    frame["kl_mean"], frame["kl_mean_lo"], frame["kl_mean_hi"] = kl.point, kl.low, kl.high
    loss = kl_loss.take(slice(n_groups, 2 * n_groups))
    frame["loss_delta_mean"], frame["loss_delta_mean_lo"], frame["loss_delta_mean_hi"] = loss.point, loss.low, loss.high
    frame["kl_ratio"], frame["kl_ratio_lo"], frame["kl_ratio_hi"] = _ratio_to_baseline(kl, frame, params.confidence)
    frame["n_sequences"] = np.bincount(group_index, minlength=n_groups)  # one row per (group, sequence)
    return frame[frame.n_sequences >= 2].assign(job_id=rows.job_id.iloc[0])  # a CI needs two sequences


class _Estimate:
    """Point means, bootstrap replicates and their interval for every group (column)."""

    def __init__(self, sums: np.ndarray, counts: np.ndarray, params: Params) -> None:
        with np.errstate(invalid="ignore", divide="ignore"):
            self.point = sums.sum(axis=0) / counts.sum(axis=0)  # (G,)
        self.replicates = bootstrap_means(sums, counts, params.n_boot, params.seed)  # (B, G)
        self.low, self.high = percentile_interval(self.replicates, params.confidence)

    def take(self, columns: slice) -> _Estimate:
        """The estimate of some groups only (same replicates)."""
        part = object.__new__(_Estimate)
        part.point, part.replicates = self.point[columns], self.replicates[:, columns]
        part.low, part.high = self.low[columns], self.high[columns]
        return part


def _ratio_to_baseline(kl: _Estimate, groups: pd.DataFrame, confidence: float) -> tuple[np.ndarray, ...]:
    """Mean KL over the same run's eps_random mean KL: point and paired-bootstrap interval."""
    positions = {key: index for index, key in enumerate(zip(groups.run_id, groups.intervention, strict=True))}
    baseline = np.array([positions.get((run_id, BASELINE), -1) for run_id in groups.run_id])  # (G,) column or -1
    missing = baseline < 0
    safe = np.where(missing, 0, baseline)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(missing, np.nan, kl.point / kl.point[safe])
        replicates = np.where(missing, np.nan, kl.replicates / kl.replicates[:, safe])  # (B, G)
    low, high = percentile_interval(replicates, confidence)
    return point, low, high
