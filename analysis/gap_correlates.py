"""Pearson and Spearman correlation of the per-token KL gap with position, cos_sim, l0, norm, eps, token frequency.

Pearson is exact over every intervened token of the run: the token variables' sums come from the
store's `gap_sums` rollup, token frequency's from per-token-id counts. Spearman ranks a hash sample
of about `spearman_tokens` tokens per run (every token below that), so it estimates the run's rho
with a standard error of at most about sqrt(1.06 / (n - 3)) (Fieller, Hartley and Pearson 1957;
0.0073 at the default n = 20,000); it is exact when the run has no more tokens than that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from analysis.base import GAPS, SELECTED_RUNS, Scope, ScopedFilters, empty_like, read
from schema.relations import GAP_SUM_VARIABLES


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope
    spearman_tokens: int = Field(
        default=20_000, ge=3, le=2_000_000, description="tokens per run Spearman ranks (a hash sample above this)"
    )


# Per-token quantities the seed correlates with the gap (docs/method.md §1.5, question 6). Token
# frequency: occurrences of the token id among the run's evaluated (intervened) tokens.
TOKEN_VARIABLES = GAP_SUM_VARIABLES
VARIABLES = (*TOKEN_VARIABLES, "token_frequency")

# Intervened tokens with a gap and every variable (an intervened token has them all).
_FACTS = f"""
WITH {SELECTED_RUNS}, {GAPS},
facts AS (
  SELECT g.run_id, g.sequence AS key_sequence, g.position AS key_position, g.token_id, g.kl_gap::DOUBLE AS kl_gap,
         {", ".join(f"g.{v}::DOUBLE AS {v}" for v in TOKEN_VARIABLES)}
  FROM gaps g
  WHERE g.intervened AND g.kl_gap IS NOT NULL AND {" AND ".join(f"g.{v} IS NOT NULL" for v in TOKEN_VARIABLES)}
)"""

_SUMS = ",\n       ".join(f"sum({p}_{v}) AS {p}_{v}" for v in TOKEN_VARIABLES for p in ("sx", "sxx", "sxy"))

# Sufficient statistics per run for Pearson of the gap with each token variable: the same tokens'
# sums, from the store's gap_sums rollup (one row per run and shard) instead of 24M tokens.
RUN_SUMS_SQL = f"""
WITH {SELECTED_RUNS}
SELECT run_id, sum(n)::BIGINT AS n, sum(sy) AS sy, sum(syy) AS syy,
       {_SUMS}
FROM gap_sums JOIN selected USING (run_id)
GROUP BY run_id
HAVING sum(n) > 0
"""


def _average_rank(column: str) -> str:
    """Rank of the column within its run, ties sharing their mean rank (as pandas' rank(method="average"))."""
    window = f"(PARTITION BY run_id ORDER BY {column})"  # count(*) over it: the tie group's last rank
    return f"(rank() OVER {window} + count(*) OVER {window}) / 2.0 AS r_{column}"


_SPEARMAN = ",\n       ".join(f"CASE WHEN count(*) >= 3 THEN corr(r_kl_gap, r_{v}) END AS rho_{v}" for v in VARIABLES)

# One row per run, in SQL (no token row reaches Python):
# - token frequency's Pearson sums from the occurrences n and gap sum per (run, token id): every
#   occurrence of a token id has x = n, so sum x = sum n^2, sum x^2 = sum n^3, sum xy = sum n * sy;
# - Spearman = Pearson of average ranks, on each run's hash sample (a draw in [0, 1) from the
#   token's key, so the same tokens every time) of about $spearman_tokens tokens, all below that.
PER_RUN_SQL = f"""{_FACTS},
counts AS (SELECT run_id, token_id, count(*)::DOUBLE AS n, sum(kl_gap) AS sy FROM facts GROUP BY run_id, token_id),
frequency AS (
  SELECT run_id, sum(n * n) AS sx_token_frequency, sum(n * n * n) AS sxx_token_frequency,
         sum(n * sy) AS sxy_token_frequency
  FROM counts GROUP BY run_id
),
sample AS (
  SELECT f.run_id, f.kl_gap, {", ".join(f"f.{v}" for v in TOKEN_VARIABLES)}, c.n AS token_frequency
  FROM facts f JOIN counts c USING (run_id, token_id)
  WHERE (hash(f.run_id, f.key_sequence, f.key_position) % 1000000) / 1e6
        < $fractions[list_position($sample_runs, f.run_id)]
),
ranked AS (
  SELECT run_id, {", ".join(_average_rank(c) for c in ("kl_gap", *VARIABLES))} FROM sample
),
spearman AS (
  SELECT run_id, count(*) AS spearman_n,
       {_SPEARMAN}
  FROM ranked GROUP BY run_id
)
SELECT * FROM frequency LEFT JOIN spearman USING (run_id)
"""

RUNS_SQL = f"WITH {SELECTED_RUNS} SELECT job_id, run_id, sae, layer FROM selected"

SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_id", pa.int64()), ("sae", pa.string()), ("layer", pa.int32()),
     ("variable", pa.string()), ("n", pa.int64()), ("pearson", pa.float64()), ("spearman", pa.float64()),
     ("spearman_n", pa.int64())]
)  # fmt: skip


def gap_correlates(params: Params, store: Any = None) -> pa.Table:
    totals = read(RUN_SUMS_SQL, params.bind(), store).to_pandas().set_index("run_id")
    if totals.empty:
        return empty_like(SCHEMA)
    fractions = np.minimum(1.0, params.spearman_tokens / totals.n.to_numpy())
    bound = {**params.bind(), "sample_runs": totals.index.tolist(), "fractions": fractions.tolist()}
    per_run = read(PER_RUN_SQL, bound, store).to_pandas().set_index("run_id")
    pearson = _pearson(totals.join(per_run, how="inner"))
    spearman = _spearman(per_run)
    run_facts = read(RUNS_SQL, params.bind(), store).to_pandas()
    rows = pearson.merge(spearman, on=["run_id", "variable"], how="left").merge(run_facts, on="run_id")
    rows = rows[rows.n >= 3].sort_values(["job_id", "layer", "run_id", "variable"])  # a correlation needs 3 pairs
    rows["spearman_n"] = rows.spearman_n.fillna(0)  # a run whose hash sample came out empty
    return pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _correlation(
    n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray
) -> np.ndarray:
    """Pearson r from sums over n pairs; NaN where either side is constant."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))


def _pearson(totals: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, variable): n and Pearson r, from the run's sums (token variables and token frequency)."""
    n = totals.n.to_numpy(np.float64)
    rows = []
    for variable in VARIABLES:
        sx, sxx, sxy = (totals[f"{p}_{variable}"].to_numpy(np.float64) for p in ("sx", "sxx", "sxy"))
        r = _correlation(n, sx, totals.sy.to_numpy(), sxx, totals.syy.to_numpy(), sxy)
        rows.append(pd.DataFrame({"run_id": totals.index, "variable": variable, "n": totals.n, "pearson": r}))
    return pd.concat(rows, ignore_index=True)


def _spearman(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, variable): Spearman's rho and the sample size it was ranked on."""
    frames = [
        pd.DataFrame({"run_id": per_run.index, "variable": variable, "spearman": per_run[f"rho_{variable}"],
                      "spearman_n": per_run.spearman_n})
        for variable in VARIABLES
    ]  # fmt: skip
    return pd.concat(frames, ignore_index=True)
