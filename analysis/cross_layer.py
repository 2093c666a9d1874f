"""Token-level correlation of the KL gap between the layers (runs) of a job, matched by sequence and position."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.base import GAPS, SELECTED_RUNS, Scope, ScopedFilters, empty_like, read


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope


# One row per run: its intervened tokens' gaps and keys (sequence * 2^16 + position), in key
# order. The pairing happens in numpy: a SQL self-join would make runs^2 x tokens rows
# (3 x 10^8 at seed scale). The run filter (run/layer) picks rows of the matrix afterwards,
# so the query itself reads every run of the job.
SQL = f"""
WITH {SELECTED_RUNS}, {GAPS}
SELECT r.job_id, g.run_id, r.layer, r.sae,
       list(g.kl_gap::DOUBLE ORDER BY g.sequence, g.position) AS gaps,
       list(g.sequence::BIGINT * 65536 + g.position ORDER BY g.sequence, g.position) AS keys
FROM gaps g JOIN selected r USING (run_id)
WHERE g.intervened AND g.kl_gap IS NOT NULL
GROUP BY r.job_id, g.run_id, r.layer, r.sae
ORDER BY r.job_id, r.layer, g.run_id
"""

SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_a", pa.int64()), ("layer_a", pa.int32()), ("sae_a", pa.string()),
     ("run_b", pa.int64()), ("layer_b", pa.int32()), ("sae_b", pa.string()), ("n", pa.int64()),
     ("pearson", pa.float64())]
)  # fmt: skip


def cross_layer(params: Params, store: Any = None) -> pa.Table:
    whole_jobs = params.model_copy(update={"run": None, "layer": None})
    runs = read(SQL, whole_jobs.bind(), store)
    jobs = runs["job_id"].unique().to_pylist()
    pairs = [_job_pairs(runs.filter(pc.equal(runs["job_id"], job))) for job in jobs]
    pairs = [frame for frame in pairs if len(frame)]
    if not pairs:
        return empty_like(SCHEMA)
    matrix = pd.concat(pairs, ignore_index=True)
    chosen = np.ones(len(matrix), dtype=bool)
    if params.run is not None:
        chosen &= matrix.run_a.to_numpy() == params.run
    if params.layer is not None:
        chosen &= matrix.layer_a.to_numpy() == params.layer
    return pa.Table.from_pandas(matrix[chosen][SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _aligned(runs: pa.Table) -> np.ndarray:
    """(tokens, runs) gaps on the union of the runs' token keys; NaN where a run lacks a token."""
    keys = [runs["keys"][i].values.to_numpy() for i in range(runs.num_rows)]
    gaps = [runs["gaps"][i].values.to_numpy() for i in range(runs.num_rows)]
    union = np.unique(np.concatenate(keys))  # (T,)
    matrix = np.full((len(union), runs.num_rows), np.nan)  # (T, R)
    for column, (run_keys, run_gaps) in enumerate(zip(keys, gaps, strict=True)):
        matrix[np.searchsorted(union, run_keys), column] = run_gaps
    return matrix


def _pairwise(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, R) pair counts and Pearson r over the tokens both runs have."""
    present = ~np.isnan(matrix)  # (T, R)
    if present.all():  # every run has every token: one product (the usual case)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.full((matrix.shape[1],) * 2, len(matrix)), np.corrcoef(matrix, rowvar=False)
    n_runs = matrix.shape[1]
    counts, r = np.zeros((n_runs, n_runs), dtype=np.int64), np.full((n_runs, n_runs), np.nan)
    for a in range(n_runs):
        for b in range(n_runs):
            both = present[:, a] & present[:, b]
            counts[a, b] = both.sum()
            if counts[a, b] >= 3:
                with np.errstate(invalid="ignore", divide="ignore"):
                    r[a, b] = np.corrcoef(matrix[both, a], matrix[both, b])[0, 1]
    return counts, r


def _job_pairs(runs: pa.Table) -> pd.DataFrame:
    """Every ordered pair of the job's runs (diagonal included) with n and Pearson r; pairs need 3 tokens."""
    counts, r = _pairwise(_aligned(runs))
    facts = runs.select(["job_id", "run_id", "layer", "sae"]).to_pandas()
    a, b = np.meshgrid(np.arange(len(facts)), np.arange(len(facts)), indexing="ij")  # (R, R) indices
    a, b = a.ravel(), b.ravel()
    frame = pd.DataFrame({
        "job_id": facts.job_id.to_numpy()[a], "run_a": facts.run_id.to_numpy()[a], "layer_a": facts.layer.to_numpy()[a],
        "sae_a": facts.sae.to_numpy()[a], "run_b": facts.run_id.to_numpy()[b], "layer_b": facts.layer.to_numpy()[b],
        "sae_b": facts.sae.to_numpy()[b], "n": counts.ravel(), "pearson": np.atleast_2d(r).ravel(),
    })  # fmt: skip
    return frame[frame.n >= 3]
