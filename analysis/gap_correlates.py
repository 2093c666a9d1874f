"""Pearson and Spearman correlation of the per-token KL gap with position, cos_sim, l0, norm, eps, token frequency."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from analysis.base import SELECTED_RUNS, Scope, ScopedFilters, read


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope


# Per-token quantities the seed correlates with the gap (REFERENCE.md §1, item 6). Token
# frequency: occurrences of the token id among the run's evaluated (intervened) tokens.
VARIABLES = ("position", "cos_sim", "l0", "norm", "eps", "token_frequency")


def _average_rank(column: str) -> str:
    """Spearman's rank with ties sharing their average rank, per run."""
    return (
        f"rank() OVER (PARTITION BY run_id ORDER BY {column}) "
        f"+ (count(*) OVER (PARTITION BY run_id, {column}) - 1) / 2.0 AS rank_{column}"
    )


def _correlations(column: str) -> str:
    return (
        f"corr(kl_gap, {column}) AS pearson_{column}, corr(rank_kl_gap, rank_{column}) AS spearman_{column}, "
        f"regr_count(kl_gap, {column}) AS n_{column}"
    )


_RANKS = ",\n         ".join(_average_rank(c) for c in ("kl_gap", *VARIABLES))
_STATS = ",\n       ".join(_correlations(c) for c in VARIABLES)
_LONG = "\nUNION ALL ".join(
    f"SELECT job_id, run_id, sae, layer, '{c}' AS variable, n_{c} AS n, "
    f"pearson_{c} AS pearson, spearman_{c} AS spearman FROM stats"
    for c in VARIABLES
)

# Rows lacking a variable (no next token, say) drop out of that variable's pair only; a
# correlation needs 3 complete pairs, fewer give no row.
SQL = f"""
WITH {SELECTED_RUNS},
gaps AS (
  SELECT g.job_id, g.run_id, g.sae, g.layer, g.kl_gap, g.position::DOUBLE AS position,
         g.cos_sim::DOUBLE AS cos_sim, g.l0::DOUBLE AS l0, g.norm::DOUBLE AS norm, g.eps::DOUBLE AS eps,
         count(*) OVER (PARTITION BY g.run_id, g.token_id)::DOUBLE AS token_frequency
  FROM token_gaps g JOIN selected USING (run_id)
  WHERE g.intervened AND g.kl_gap IS NOT NULL
),
ranked AS (
  SELECT *, {_RANKS}
  FROM gaps
),
stats AS (
  SELECT job_id, run_id, sae, layer, {_STATS}
  FROM ranked GROUP BY ALL
),
long AS ({_LONG})
SELECT * FROM long
WHERE n >= 3
ORDER BY job_id, layer, run_id, variable
"""


def gap_correlates(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
