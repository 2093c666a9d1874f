"""Pearson and Spearman correlation of the per-token KL gap with position, cos_sim, l0, norm, eps, token frequency."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from analysis.base import GAPS, SELECTED_RUNS, Scope, ScopedFilters, empty_like, read


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope
    spearman_tokens: int = Field(
        default=200_000, ge=3, le=2_000_000, description="tokens per run Spearman ranks (a hash sample above this)"
    )


# Per-token quantities the seed correlates with the gap (docs/method.md §1.5, question 6). Token
# frequency: occurrences of the token id among the run's evaluated (intervened) tokens.
TOKEN_VARIABLES = ("position", "cos_sim", "l0", "norm", "eps")
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

_SUMS = ",\n       ".join(
    f"sum({v}) AS sx_{v}, sum({v} * {v}) AS sxx_{v}, sum(kl_gap * {v}) AS sxy_{v}" for v in TOKEN_VARIABLES
)

# Sufficient statistics per run for Pearson of the gap with each token variable.
RUN_SUMS_SQL = f"""{_FACTS}
SELECT run_id, count(*) AS n, sum(kl_gap) AS sy, sum(kl_gap * kl_gap) AS syy,
       {_SUMS}
FROM facts
GROUP BY run_id
"""

# Occurrences n and gap sum per (run, token id): token frequency's Pearson follows by summing
# them (every occurrence of a token id has x = its count n), so no per-token window or
# frequency join runs over 10^7 rows; the Spearman sample takes its frequencies from here.
TOKEN_COUNTS_SQL = f"""{_FACTS}
SELECT run_id, token_id, count(*) AS n, sum(kl_gap) AS sy
FROM facts
GROUP BY run_id, token_id
"""

# The tokens Spearman ranks: each run's hash sample (draw in [0, 1) from the token's key,
# so the same tokens every time) of about $spearman_tokens tokens; all of them below that.
SAMPLE_SQL = f"""{_FACTS}
SELECT run_id, token_id, kl_gap, {", ".join(TOKEN_VARIABLES)}
FROM facts
WHERE (hash(run_id, key_sequence, key_position) % 1000000) / 1e6 < $fractions[list_position($sample_runs, run_id)]
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
    counts = read(TOKEN_COUNTS_SQL, params.bind(), store).to_pandas()
    pearson = _pearson(totals, counts)
    fractions = np.minimum(1.0, params.spearman_tokens / totals.n.to_numpy())
    sample_params = {**params.bind(), "sample_runs": totals.index.tolist(), "fractions": fractions.tolist()}
    sample = read(SAMPLE_SQL, sample_params, store).to_pandas()
    frequency = counts[["run_id", "token_id", "n"]].rename(columns={"n": "token_frequency"})
    spearman = _spearman(sample.merge(frequency, on=["run_id", "token_id"]))
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


def _pearson(totals: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, variable): n and Pearson r, from the run sums and the per-token-id counts."""
    occurrences = counts.n.astype(np.float64)  # x = token frequency = n for each of the n occurrences
    frequency = pd.DataFrame({
        "run_id": counts.run_id, "sx_token_frequency": occurrences**2, "sxx_token_frequency": occurrences**3,
        "sxy_token_frequency": occurrences * counts.sy,
    }).groupby("run_id").sum()  # fmt: skip
    totals = totals.join(frequency)
    n = totals.n.to_numpy(np.float64)
    rows = []
    for variable in VARIABLES:
        sx, sxx, sxy = (totals[f"{p}_{variable}"].to_numpy() for p in ("sx", "sxx", "sxy"))
        r = _correlation(n, sx, totals.sy.to_numpy(), sxx, totals.syy.to_numpy(), sxy)
        rows.append(pd.DataFrame({"run_id": totals.index, "variable": variable, "n": totals.n, "pearson": r}))
    return pd.concat(rows, ignore_index=True)


def _spearman(sample: pd.DataFrame) -> pd.DataFrame:
    """Spearman = Pearson of average ranks (ties share their mean rank), per run and variable."""
    rows = []
    for run_id, tokens in sample.groupby("run_id"):
        ranks = tokens[["kl_gap", *VARIABLES]].rank(method="average")
        for variable in VARIABLES:
            rho = ranks.kl_gap.corr(ranks[variable]) if len(tokens) >= 3 else np.nan
            rows.append({"run_id": run_id, "variable": variable, "spearman": rho, "spearman_n": len(tokens)})
    return pd.DataFrame(rows, columns=["run_id", "variable", "spearman", "spearman_n"])
