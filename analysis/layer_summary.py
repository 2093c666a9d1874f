"""Per layer and intervention: mean/median/p99.9 KL, mean CE-loss increase, ratio to eps_random, bootstrap CIs.

Means and their sequence-bootstrap CIs are exact (from the store's `sequence_sums`); kl_median
and kl_p999 are approximate, read off the store's fixed log-spaced `kl_bins` (40 per decade):
the two order statistics quantile_cont interpolates are each placed inside their own bin, so
the result is within a factor of schema.relations.KL_BIN_RATIO (~1.059) of the exact quantile
for KL in [1e-6, 1e2] (analysis.kl_histogram.bin_quantile), and exact when those bins hold one
distinct value each.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.base import (
    INTERVENTION_FILTER,
    INTERVENTION_LIST,
    SELECTED_RUNS,
    BootstrapSettings,
    InterventionFilters,
    empty_like,
    read,
)
from analysis.bootstrap import bootstrap_means, percentile_interval
from analysis.kl_histogram import RANKED_BINS, bin_quantile, binned_kl
from schema.spec import BASELINE, INTERVENTION_NAMES


class Params(BootstrapSettings, InterventionFilters):
    pass


# The bootstrap's resampling unit: the sums per (run, intervention, sequence) of the store's sequence_sums
# rollup (written with each shard; samples of a random intervention all count towards its mean), one row
# per sequence_sums row of the runs $runs (a sequence's rows from more than one shard add up in
# job_bootstraps), numbers only and narrow: k indexes
# INTERVENTION_NAMES. At seed scale the intervention's name per row (2.6 M Python strings), the SQL
# grouping and the join to the runs cost most of the module's time.
SEQUENCE_ROWS_SQL = f"""
SELECT run_id::INTEGER AS run_id, (list_position({INTERVENTION_LIST}, intervention) - 1)::SMALLINT AS k, sequence,
       kl_sum, n::INTEGER AS kl_count, coalesce(loss_delta_sum, 0) AS loss_sum, loss_delta_n::INTEGER AS loss_count
FROM sequence_sums
WHERE list_contains($runs, run_id) AND {INTERVENTION_FILTER}
"""
JOBS_SQL = f"WITH {SELECTED_RUNS} SELECT run_id, job_id FROM selected"

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
    with ThreadPoolExecutor(1) as pool:  # the quantiles' query runs in another read process meanwhile
        quantiles_read = pool.submit(read, QUANTILES_SQL, bound, store)
        frames = [_summarise_job(job, params) for job in job_bootstraps(bound, params.n_boot, params.seed, store)]
        quantiles = quantiles_read.result().to_pandas()
    frames = [frame for frame in frames if len(frame)]
    if not frames:  # no records, or no group with two sequences
        return empty_like(SCHEMA)
    summary = pd.concat(frames).merge(quantiles, on=["job_id", "run_id", "intervention"])
    summary = summary.sort_values(["job_id", "layer", "run_id", "intervention"])
    return pa.Table.from_pandas(summary[SCHEMA.names], schema=SCHEMA, preserve_index=False)


@dataclass(frozen=True)
class JobBootstrap:
    """One job's sequence bootstrap of every (run, intervention) group's mean KL (columns g < G) and mean
    CE-loss increase (columns G + g): point means over all sequences and replicates sharing sequence weights."""

    job_id: int
    groups: pd.DataFrame  # (G,) run_id, intervention: column g's group, sorted by run then intervention index
    n_sequences: np.ndarray  # (G,) sequences with records of the group
    point: np.ndarray  # (2G,)
    replicates: np.ndarray  # (B, 2G)

    @functools.cached_property
    def column(self) -> dict[tuple[int, str], int]:
        """Column g (of the first G: mean KL) of each (run_id, intervention) group; G + g is its CE increase."""
        return {key: g for g, key in enumerate(zip(self.groups.run_id, self.groups.intervention, strict=True))}

    def ratio(self, top: int, bottom: int, confidence: float) -> tuple[float, float, float]:
        """Point ratio of two columns' means and its paired percentile interval (the same sequence weights)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            point = self.point[top] / self.point[bottom]
            draws = self.replicates[:, top] / self.replicates[:, bottom]  # (B,)
        low, high = percentile_interval(draws[:, None], confidence)
        return float(point), float(low[0]), float(high[0])


def job_bootstraps(bound: dict[str, Any], n_boot: int, seed: int, store: Any = None) -> list[JobBootstrap]:
    """The sequence bootstrap of each job of the selected runs (layer_summary's and verdict's one computation)."""
    runs = read(JOBS_SQL, {k: v for k, v in bound.items() if k != "interventions"}, store).to_pandas()
    rows = read(SEQUENCE_ROWS_SQL, {"runs": runs.run_id.tolist(), "interventions": bound["interventions"]}, store)
    if rows.num_rows == 0:
        return []
    columns = {name: rows.column(name).to_numpy() for name in rows.column_names}  # (N,) each
    job_of_row = pd.Series(columns["run_id"]).map(dict(zip(runs.run_id, runs.job_id, strict=True))).to_numpy()
    jobs = []
    for job_id in np.unique(job_of_row):
        mask = job_of_row == job_id
        jobs.append(_job_bootstrap(int(job_id), {name: c[mask] for name, c in columns.items()}, n_boot, seed))
    return jobs


def _job_bootstrap(job_id: int, rows: dict[str, np.ndarray], n_boot: int, seed: int) -> JobBootstrap:
    """Dense (sequence x group) sums and counts of one job's rows, and their bootstrap."""
    group_keys, group_index = sorted_codes(rows["run_id"].astype(np.int64) * len(INTERVENTION_NAMES) + rows["k"])
    sequence_index = sorted_codes(rows["sequence"])[1]  # (N,)
    n_groups, n_sequences = len(group_keys), int(sequence_index.max()) + 1
    cell = sequence_index * n_groups + group_index  # (N,) flat index into (S, G); rows of one cell add up

    def dense(column: str) -> np.ndarray:
        weights = rows[column].astype(np.float64)  # (N,)
        return np.bincount(cell, weights=weights, minlength=n_sequences * n_groups).reshape(n_sequences, n_groups)

    sums = np.concatenate([dense("kl_sum"), dense("loss_sum")], axis=1)  # (S, 2G): kl, then loss
    counts = np.concatenate([dense("kl_count"), dense("loss_count")], axis=1)  # (S, 2G)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = sums.sum(axis=0) / counts.sum(axis=0)  # (2G,)
    groups = pd.DataFrame({
        "run_id": group_keys // len(INTERVENTION_NAMES),
        "intervention": np.array(INTERVENTION_NAMES, dtype=object)[group_keys % len(INTERVENTION_NAMES)],
    })  # fmt: skip
    return JobBootstrap(
        job_id=job_id, groups=groups, n_sequences=(counts[:, :n_groups] > 0).sum(axis=0),  # a row counts >= 1 draw
        point=point, replicates=bootstrap_means(sums, counts, n_boot, seed),
    )  # fmt: skip


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) for integers of a small range (ids, sequences): one bincount
    instead of a sort or hash (0.4 s for 2M values here)."""
    low = values.min()
    present = np.bincount(values - low) > 0  # (range,)
    return np.flatnonzero(present) + low, (np.cumsum(present) - 1)[values - low]


def _summarise_job(job: JobBootstrap, params: Params) -> pd.DataFrame:
    """Point estimates and bootstrap CIs for every (run, intervention) of one job."""
    frame = job.groups.copy()
    n_groups = len(frame)
    kl = _Estimate(job.point[:n_groups], job.replicates[:, :n_groups], params.confidence)
    frame["kl_mean"], frame["kl_mean_lo"], frame["kl_mean_hi"] = kl.point, kl.low, kl.high
    loss = _Estimate(job.point[n_groups:], job.replicates[:, n_groups:], params.confidence)
    frame["loss_delta_mean"], frame["loss_delta_mean_lo"], frame["loss_delta_mean_hi"] = loss.point, loss.low, loss.high
    frame["kl_ratio"], frame["kl_ratio_lo"], frame["kl_ratio_hi"] = _ratio_to_baseline(kl, frame, params.confidence)
    frame["n_sequences"] = job.n_sequences
    return frame[frame.n_sequences >= 2].assign(job_id=job.job_id)  # a CI needs two sequences


class _Estimate:
    """Point means, bootstrap replicates and their interval for some groups (columns)."""

    def __init__(self, point: np.ndarray, replicates: np.ndarray, confidence: float) -> None:
        self.point, self.replicates = point, replicates  # (G,), (B, G)
        self.low, self.high = percentile_interval(replicates, confidence)


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
