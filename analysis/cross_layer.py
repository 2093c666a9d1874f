"""Token-level correlation of the KL gap between the layers (runs) of a job, matched by sequence and position."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from analysis.base import GAPS, SELECTED_RUNS, Scope, ScopedFilters, empty_like, read


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope
    max_tokens: int | None = Field(
        default=None, ge=3, description="token positions per run, a hash sample shared by every run; None: all"
    )


# Every pair of runs of a job from the store's gap_pair_sums rollup (written with each shard: per
# shard and pair of runs, sums over the tokens both have): the exact Pearson over every token, in a
# few thousand rows instead of 24M tokens. Pairs need 3 tokens; a correlation of a constant is NaN.
PAIR_SUMS_SQL = f"""
WITH {SELECTED_RUNS},
sums AS (
  SELECT run_a, run_b, sum(n)::BIGINT AS n, sum(sa) AS sa, sum(sb) AS sb, sum(saa) AS saa, sum(sbb) AS sbb,
         sum(sab) AS sab
  FROM gap_pair_sums p JOIN selected a ON a.run_id = p.run_a JOIN selected b ON b.run_id = p.run_b
  GROUP BY run_a, run_b
  HAVING sum(n) >= 3
)
SELECT a.job_id, s.run_a, a.layer AS layer_a, a.sae AS sae_a, s.run_b, b.layer AS layer_b, b.sae AS sae_b, s.n,
       (s.n * s.sab - s.sa * s.sb) / sqrt(NULLIF((s.n * s.saa - s.sa * s.sa) * (s.n * s.sbb - s.sb * s.sb), 0))
         AS pearson
FROM sums s JOIN selected a ON a.run_id = s.run_a JOIN selected b ON b.run_id = s.run_b
ORDER BY a.job_id, layer_a, s.run_a, layer_b, s.run_b
"""

# With max_tokens: one row per run: its intervened tokens' (key, gap) pairs, key = sequence * 2^16 + position,
# in no particular order (a struct list keeps each key with its gap; ordering 2M tokens per run
# in SQL cost more than the rest). The pairing happens in numpy by key: a SQL self-join would
# make runs^2 x tokens rows (3 x 10^8 at seed scale). The run filter (run/layer) picks rows of
# the matrix afterwards, so the query itself reads every run of the job.
SQL = f"""
WITH {SELECTED_RUNS}, {GAPS}
SELECT r.job_id, g.run_id, r.layer, r.sae,
       list({{'key': g.sequence::BIGINT * 65536 + g.position, 'gap': g.kl_gap::DOUBLE}}) AS tokens
FROM gaps g JOIN selected r USING (run_id)
WHERE g.intervened AND g.kl_gap IS NOT NULL AND hash(g.sequence, g.position) % 1000000 < $fraction * 1000000
GROUP BY r.job_id, g.run_id, r.layer, r.sae
ORDER BY r.job_id, r.layer, g.run_id
"""

# Intervened tokens with a gap in the largest selected run: what max_tokens is a fraction of.
# The same (sequence, position) keys are drawn for every run.
TOKEN_COUNT_SQL = f"""
WITH {SELECTED_RUNS}, {GAPS}
SELECT max(n) AS n FROM (SELECT run_id, count(*) AS n FROM gaps WHERE intervened GROUP BY run_id)
"""

SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_a", pa.int64()), ("layer_a", pa.int32()), ("sae_a", pa.string()),
     ("run_b", pa.int64()), ("layer_b", pa.int32()), ("sae_b", pa.string()), ("n", pa.int64()),
     ("pearson", pa.float64())]
)  # fmt: skip


def cross_layer(params: Params, store: Any = None) -> pa.Table:
    whole_jobs = params.model_copy(update={"run": None, "layer": None})
    if params.max_tokens is None:  # every token: exact, from the rollup
        return _chosen(read(PAIR_SUMS_SQL, whole_jobs.bind(), store).to_pandas(), params)
    runs = read(SQL, {**whole_jobs.bind(), "fraction": _fraction(whole_jobs, store)}, store)
    jobs = runs["job_id"].unique().to_pylist()
    pairs = [_job_pairs(runs.filter(pc.equal(runs["job_id"], job))) for job in jobs]
    pairs = [frame for frame in pairs if len(frame)]
    if not pairs:
        return empty_like(SCHEMA)
    return _chosen(pd.concat(pairs, ignore_index=True), params)


def _chosen(matrix: pd.DataFrame, params: Params) -> pa.Table:
    """The rows of the pair matrix the run filter (run, layer) picks."""
    chosen = np.ones(len(matrix), dtype=bool)
    if params.run is not None:
        chosen &= matrix.run_a.to_numpy() == params.run
    if params.layer is not None:
        chosen &= matrix.layer_a.to_numpy() == params.layer
    return pa.Table.from_pandas(matrix[chosen][SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _fraction(params: Params, store: Any) -> float:
    """Share of token keys to read: max_tokens over the largest run's token count, at most 1."""
    if params.max_tokens is None:
        return 1.0
    tokens = read(TOKEN_COUNT_SQL, params.bind(), store)["n"][0].as_py()
    return min(1.0, params.max_tokens / tokens) if tokens else 1.0


def _aligned(runs: pa.Table) -> np.ndarray:
    """(tokens, runs) gaps, a row per token key that any run has; NaN where a run lacks it.

    Keys map to rows arithmetically ((sequence - first) * positions + position), so no sort.
    """
    tokens = [runs["tokens"][i].values for i in range(runs.num_rows)]
    keys = [run.field("key").to_numpy() for run in tokens]
    every_key = np.concatenate(keys)
    first_sequence, positions = (every_key >> 16).min(), int((every_key & 0xFFFF).max()) + 1
    n_rows = (int((every_key >> 16).max()) - first_sequence + 1) * positions
    matrix = np.full((n_rows, runs.num_rows), np.nan)  # (T, R)
    for column, (run, run_keys) in enumerate(zip(tokens, keys, strict=True)):
        rows = ((run_keys >> 16) - first_sequence) * positions + (run_keys & 0xFFFF)  # (T_run,)
        matrix[rows, column] = run.field("gap").to_numpy()
    return matrix[~np.isnan(matrix).all(axis=1)]  # keys no run has (BOS, unused positions)


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
