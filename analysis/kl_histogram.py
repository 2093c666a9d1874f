"""Log-binned distribution of per-token KL per layer and intervention (tails clamped), with the 99.9th percentile."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, read


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


# One draw per token (sample 0). Bin b spans [exp(lo + b w), exp(lo + (b+1) w)), w = (hi - lo) / bins
# in log space; values outside [kl_min, kl_max] are clamped into bins 0 and bins - 1.
SQL = f"""
WITH {SELECTED_RUNS},
records AS NOT MATERIALIZED (  -- read twice: scanning beats materialising 10^8 rows
  SELECT run_id, intervention, kl
  FROM interventions JOIN selected USING (run_id)
  WHERE sample = 0 AND {INTERVENTION_FILTER}
),
counts AS (
  SELECT run_id, intervention,
         least($bins - 1, greatest(0, floor(
           (ln(greatest(kl, $kl_min)) - ln($kl_min)) / (ln($kl_max) - ln($kl_min)) * $bins)))::INTEGER AS bin,
         count(*) AS n
  FROM records GROUP BY ALL
),
tails AS (
  SELECT run_id, intervention, quantile_cont(kl, 0.999) AS kl_p999, count(*) AS n_group
  FROM records GROUP BY ALL
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
