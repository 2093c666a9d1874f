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

from analysis.base import MAX_ROWS, SELECTED_RUNS, Scope, ScopedFilters, empty_like, read
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

# Intervened tokens with a gap and every variable (an intervened token has them all), the same
# tokens gap_sums sums. NOT MATERIALIZED: read twice (counts, and the hash sample), never held
# whole (materialised, it was 24 M rows x 10 columns at seed scale).
_FACTS = f"""
WITH {SELECTED_RUNS},
facts AS NOT MATERIALIZED (
  SELECT t.run_id, t.sequence AS key_sequence, t.position AS key_position, t.token_id,
         (t.kl_sae - t.kl_eps_random)::DOUBLE AS kl_gap, {", ".join(f"t.{v}::DOUBLE AS {v}" for v in TOKEN_VARIABLES)}
  FROM tokens t  -- $sample_runs: the selected runs (of this batch) with tokens, from RUN_SUMS_SQL
  WHERE list_contains($sample_runs, t.run_id) AND t.intervened AND t.kl_sae IS NOT NULL
    AND t.kl_eps_random IS NOT NULL AND {" AND ".join(f"t.{v} IS NOT NULL" for v in TOKEN_VARIABLES)}
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


# The token's draw in [0, 1). Compared with the largest fraction first: a constant, so the per-run
# fraction (a list lookup per row) is looked up only for the few tokens that pass it.
_DRAW = "(hash(f.run_id, f.key_sequence, f.key_position) % 1000000) / 1e6"
_FREQUENCY_SUMS = ("sx_token_frequency", "sxx_token_frequency", "sxy_token_frequency")

# Token frequency's Pearson sums per run, and each run's hash sample for Spearman:
# - from the occurrences n and gap sum per (run, token id): every occurrence of a token id has
#   x = n, so sum x = sum n^2, sum x^2 = sum n^3, sum xy = sum n * sy;
# - the sample: a draw in [0, 1) from the token's key (the same tokens every time) below the run's
#   fraction, about $spearman_tokens tokens, all below that; each with its token frequency.
# One row per sampled token carrying its run's sums (a run with an empty sample: one row, its
# sample columns NULL). The ranks are taken in numpy: seven rank windows over the sample took
# ~80% of this query's time in SQL.
SAMPLE_SQL = f"""{_FACTS},
counts AS (SELECT run_id, token_id, count(*)::DOUBLE AS n, sum(kl_gap) AS sy FROM facts GROUP BY run_id, token_id),
frequency AS (
  SELECT run_id, sum(n * n) AS sx_token_frequency, sum(n * n * n) AS sxx_token_frequency,
         sum(n * sy) AS sxy_token_frequency
  FROM counts GROUP BY run_id
),
sample AS (
  SELECT f.run_id, f.kl_gap, {", ".join(f"f.{v}" for v in TOKEN_VARIABLES)}, c.n AS token_frequency
  FROM facts f JOIN counts c USING (run_id, token_id)
  WHERE {_DRAW} < list_max($fractions) AND {_DRAW} < $fractions[list_position($sample_runs, f.run_id)]
)
SELECT * FROM frequency LEFT JOIN sample USING (run_id)
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
    per_run = pd.concat(
        [_sample_stats(batch, params, store) for batch in _run_batches(totals.index, fractions, params)]
    )
    pearson = _pearson(totals.join(per_run, how="inner"))
    spearman = _spearman(per_run)
    run_facts = read(RUNS_SQL, params.bind(), store).to_pandas()
    rows = pearson.merge(spearman, on=["run_id", "variable"], how="left").merge(run_facts, on="run_id")
    rows = rows[rows.n >= 3].sort_values(["job_id", "layer", "run_id", "variable"])  # a correlation needs 3 pairs
    rows["spearman_n"] = rows.spearman_n.fillna(0)  # a run whose hash sample came out empty
    return pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _run_batches(runs: pd.Index, fractions: np.ndarray, params: Params) -> list[dict[str, list]]:
    """Runs and their sample fractions in batches whose samples (about spearman_tokens each) stay within MAX_ROWS."""
    size = max(1, MAX_ROWS // (2 * params.spearman_tokens))
    return [
        {"sample_runs": runs[start : start + size].tolist(), "fractions": fractions[start : start + size].tolist()}
        for start in range(0, len(runs), size)
    ]


def _sample_stats(batch: dict[str, list], params: Params, store: Any) -> pd.DataFrame:
    """One row per run of the batch: token frequency's Pearson sums, and Spearman's rho of the gap with each
    variable on the run's hash sample (Pearson of average ranks, ties sharing their mean rank)."""
    rows = read(SAMPLE_SQL, {**params.bind(), **batch}, store).to_pandas()
    stats = []
    for run_id, run in rows.groupby("run_id", sort=False):
        sample = run.dropna(subset=["kl_gap"])  # the run's sampled tokens (none: its one row of NULLs)
        ranks = {column: sample[column].rank().to_numpy() for column in ("kl_gap", *VARIABLES)}  # (n,) average ranks
        stat = {"run_id": run_id, **run.iloc[0][list(_FREQUENCY_SUMS)].to_dict(), "spearman_n": len(sample)}
        for variable in VARIABLES:
            stat[f"rho_{variable}"] = _rank_correlation(ranks["kl_gap"], ranks[variable])
        stats.append(stat)
    return pd.DataFrame(stats).set_index("run_id")


def _rank_correlation(gap_ranks: np.ndarray, ranks: np.ndarray) -> float:
    """Pearson r of two rank vectors; NaN below 3 pairs or where either side is constant."""
    if len(ranks) < 3:
        return np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(gap_ranks, ranks)[0, 1])


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
