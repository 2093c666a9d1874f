"""Log-binned distribution of per-token KL per layer and intervention (tails clamped), with the 99.9th percentile.

Read off the store's `kl_bins` rollup (fixed bins, 40 per decade over [1e-6, 1e2], written
with each shard), not the 240M interventions rows. Each fixed bin is re-binned into the
requested bin holding its log-midpoint: counts are exact when the requested edges lie on the
fixed grid (the defaults, 10 per decade on decade edges, do) and otherwise off by at most the
tokens of one fixed bin per edge. kl_p999 is approximate: within a factor of
schema.relations.KL_BIN_RATIO (~1.059) of the exact one for KL in [1e-6, 1e2] (bin_quantile).
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, read
from schema.relations import KL_BIN_FLOOR, KL_BINS_PER_DECADE


class Params(InterventionFilters):
    bins: int = Field(default=40, ge=1, le=1000, description="log-spaced bins between kl_min and kl_max")
    kl_min: float = Field(default=1e-4, gt=0, description="KL below this counts in the first bin")
    kl_max: float = Field(
        default=1.0, gt=0, description="KL above this counts in the last bin (the seed clamps at 1.0)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.kl_min >= self.kl_max:
            raise ValueError(f"kl_min ({self.kl_min}) must be below kl_max ({self.kl_max})")
        return self

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "bins": self.bins, "kl_min": self.kl_min, "kl_max": self.kl_max}


def binned_kl(count: Literal["n", "n_sample0"]) -> str:
    """CTE `binned` (after SELECTED_RUNS): kl_bins of the selected runs summed over shards, the
    bin's count `n` being all samples ("n") or one draw per token ("n_sample0")."""
    return f"""binned AS (
  SELECT run_id, intervention, bin, sum({count})::BIGINT AS n, sum(n_sample0)::BIGINT AS n_sample0,
         min(kl_min)::DOUBLE AS kl_min, max(kl_max)::DOUBLE AS kl_max
  FROM kl_bins JOIN selected USING (run_id)
  WHERE {INTERVENTION_FILTER}
  GROUP BY ALL
  HAVING sum({count}) > 0
)"""


# CTE `ranked` (after `binned`): each bin with the count of the bins below it and its group's total.
RANKED_BINS = """ranked AS (
  SELECT *, sum(n) OVER (PARTITION BY run_id, intervention ORDER BY bin) - n AS n_before,
         sum(n) OVER (PARTITION BY run_id, intervention) AS n_group
  FROM binned
)"""


def bin_quantile(q: float) -> str:
    """Aggregate over `ranked` rows of one group: quantile_cont's q-quantile, interpolating between
    order statistics floor(r) and ceil(r), r = q (N - 1), each estimated inside its own bin. Both
    estimates lie in their true order statistic's bin, so the result is within a factor of the bin
    ratio of the exact quantile (exact when those bins hold one distinct KL each)."""
    rank = f"({q!r} * (n_group - 1))"
    low, high = _order_statistic(f"floor({rank})"), _order_statistic(f"ceil({rank})")
    return f"({low} + any_value({rank} - floor({rank})) * ({high} - {low}))"


def _order_statistic(k: str) -> str:
    """The k-th (0-based) smallest KL of a group, placed linearly between its bin's least and greatest KL."""
    place = f"({k} - n_before) / greatest(n - 1, 1)"
    return f"max(CASE WHEN n_before <= {k} AND {k} < n_before + n THEN kl_min + (kl_max - kl_min) * {place} END)"


# log10 of the midpoint of fixed bin b (schema.relations' kl_bins grid)
_FIXED_MIDPOINT = f"((bin + 0.5) / {KL_BINS_PER_DECADE} + log10({KL_BIN_FLOOR}))"

# One draw per token (sample 0). Bin b spans [exp(lo + b w), exp(lo + (b+1) w)), w = (hi - lo) / bins
# in log space; values outside [kl_min, kl_max] are clamped into bins 0 and bins - 1.
SQL = f"""
WITH {SELECTED_RUNS},
{binned_kl("n_sample0")},
{RANKED_BINS},
tails AS (
  SELECT run_id, intervention, {bin_quantile(0.999)} AS kl_p999, any_value(n_group) AS n_group
  FROM ranked GROUP BY ALL
),
counts AS (
  SELECT run_id, intervention,
         least($bins - 1, greatest(0, floor(
           ({_FIXED_MIDPOINT} - log10($kl_min)) / (log10($kl_max) - log10($kl_min)) * $bins)))::INTEGER AS bin,
         sum(n)::BIGINT AS n
  FROM binned GROUP BY ALL
)
SELECT r.job_id, r.run_id, r.sae, r.layer, c.intervention, c.bin,
       exp(ln($kl_min) + c.bin * (ln($kl_max) - ln($kl_min)) / $bins) AS bin_lo,
       exp(ln($kl_min) + (c.bin + 1) * (ln($kl_max) - ln($kl_min)) / $bins) AS bin_hi,
       c.n, c.n / t.n_group AS fraction, t.kl_p999
FROM counts c JOIN tails t USING (run_id, intervention) JOIN selected r USING (run_id)
ORDER BY r.job_id, r.layer, r.run_id, c.intervention, c.bin
"""


def kl_histogram(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
