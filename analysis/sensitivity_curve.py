"""Per layer: KL of the random interventions against the token's cos_sim (binned), with the SAE's points on it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import INTERVENTION_LIST, SELECTED_RUNS, InterventionFilters, Scope, read
from schema.spec import InterventionName

# The cos-matched baselines trace the layer's sensitivity to a perturbation of that cosine
# (docs/method.md §1.5, question 9); sae and eps_random are placed on the same bins.
DEFAULT_INTERVENTIONS: list[InterventionName] = ["sae", "eps_random", "cos_random_sae_norm", "cos_random_true_norm"]


class Params(InterventionFilters):
    scope: Scope | None = None  # per-run answer; either scope
    interventions: list[InterventionName] | None = Field(
        default_factory=lambda: list(DEFAULT_INTERVENTIONS), min_length=1
    )
    bins: int = Field(default=20, ge=1, le=1000, description="equal-width cos_sim bins between the run's min and max")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "bins": self.bins}


# Every draw at an intervened token (sample 0 and the further draws of random interventions),
# read off the store's cos_bins rollup: KL sums per fixed bin of the token's 1 - cos_sim (40 per
# decade). The range [lo, hi] per run is exact (the fixed bins keep their least and greatest
# cos_sim); each fixed bin goes whole into the equal-width bin holding its mean cos_sim, so a
# token counts as if its cos_sim were its fixed bin's mean: 1 - cos_sim off by under 5.9%
# (schema.relations.KL_BIN_RATIO) for 1 - cos_sim >= 1e-6, by under 1e-6 above cos_sim = 1 - 1e-6.
# Every bin's kl_mean and cos_sim_mean are exact over the tokens it holds (docs/schema.md, cos_bins).
SQL = f"""
WITH {SELECTED_RUNS},
fixed AS (
  SELECT run_id, (list_position({INTERVENTION_LIST}, intervention) - 1)::SMALLINT AS k, bin,
         sum(n) AS n, sum(n_sample0) AS n_sample0, sum(kl_sum) AS kl_sum, sum(kl_sq_sum) AS kl_sq_sum,
         sum(cos_sim_sum) AS cos_sim_sum, min(cos_sim_min)::DOUBLE AS cos_min, max(cos_sim_max)::DOUBLE AS cos_max
  FROM cos_bins JOIN selected USING (run_id)
  GROUP BY ALL
),
ranges AS (  -- over every intervention of the run, as the tokens' cos_sim range
  SELECT run_id, min(cos_min) AS lo, max(cos_max) AS hi FROM fixed GROUP BY run_id
),
binned AS (
  SELECT f.*, r.lo, r.hi,
         coalesce(greatest(0, least($bins - 1, floor((f.cos_sim_sum / f.n - r.lo) / NULLIF(r.hi - r.lo, 0) * $bins))),
                  0)::INTEGER AS out_bin
  FROM fixed f JOIN ranges r USING (run_id)
  WHERE $interventions IS NULL OR list_contains($interventions, {INTERVENTION_LIST}[k + 1])
),
curve AS (
  SELECT run_id, k, out_bin AS bin, any_value(lo + out_bin * (hi - lo) / $bins) AS cos_lo,
         any_value(lo + (out_bin + 1) * (hi - lo) / $bins) AS cos_hi,
         sum(cos_sim_sum) / sum(n) AS cos_sim_mean, sum(kl_sum) / sum(n) AS kl_mean,
         sqrt(greatest(sum(kl_sq_sum) - sum(kl_sum) * sum(kl_sum) / sum(n), 0) / NULLIF(sum(n) - 1, 0)) AS kl_std,
         sum(n_sample0)::BIGINT AS n_tokens
  FROM binned
  GROUP BY run_id, k, out_bin
)
SELECT r.job_id, r.run_id, r.sae, r.layer, {INTERVENTION_LIST}[c.k + 1] AS intervention, c.bin,
       c.cos_lo, c.cos_hi, c.cos_sim_mean, c.kl_mean, c.kl_std, c.n_tokens
FROM curve c JOIN selected r USING (run_id)
ORDER BY r.job_id, r.layer, r.run_id, intervention, c.bin
"""


def sensitivity_curve(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
