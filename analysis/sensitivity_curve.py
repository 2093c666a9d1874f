"""Per layer: KL of the random interventions against the token's cos_sim (binned), with the SAE's points on it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import (
    INTERVENTION_FILTER,
    INTERVENTION_LIST,
    SELECTED_RUNS,
    InterventionFilters,
    Scope,
    per_intervention,
    read,
)
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


# Draws: sample 0 from tokens' per-intervention columns (the token's cos_sim on the same row,
# so no join), the further draws of random interventions from `interventions` joined to their
# token's cos_sim (sample > 0: the store's file statistics skip every file of a one-sample job).
SQL = f"""
WITH {SELECTED_RUNS},
cosines AS (
  SELECT run_id, sequence, position, cos_sim::DOUBLE AS cos_sim
  FROM tokens JOIN selected USING (run_id)
  WHERE intervened AND cos_sim IS NOT NULL
),
ranges AS (
  SELECT run_id, min(cos_sim) AS lo, max(cos_sim) AS hi FROM cosines GROUP BY run_id
),
draws AS (
  SELECT run_id, cos_sim::DOUBLE AS cos_sim, k, 0 AS sample, value AS kl
  FROM {per_intervention("kl", carry=("cos_sim", "intervened"))}
  WHERE intervened AND cos_sim IS NOT NULL
  UNION ALL
  SELECT run_id, c.cos_sim, (list_position({INTERVENTION_LIST}, i.intervention) - 1)::SMALLINT AS k, i.sample, i.kl
  FROM interventions i JOIN cosines c USING (run_id, sequence, position)
  WHERE i.sample > 0 AND {INTERVENTION_FILTER}
),
binned AS (
  SELECT d.*, r.lo, r.hi,
         coalesce(least($bins - 1, floor((d.cos_sim - r.lo) / NULLIF(r.hi - r.lo, 0) * $bins)), 0)::INTEGER AS bin
  FROM draws d JOIN ranges r USING (run_id)
),
curve AS (
  SELECT run_id, k, bin, any_value(lo + bin * (hi - lo) / $bins) AS cos_lo,
         any_value(lo + (bin + 1) * (hi - lo) / $bins) AS cos_hi,
         avg(cos_sim) AS cos_sim_mean, avg(kl) AS kl_mean, stddev_samp(kl) AS kl_std,
         count(*) FILTER (WHERE sample = 0) AS n_tokens
  FROM binned
  GROUP BY run_id, k, bin
)
SELECT r.job_id, r.run_id, r.sae, r.layer, {INTERVENTION_LIST}[c.k + 1] AS intervention, c.bin,
       c.cos_lo, c.cos_hi, c.cos_sim_mean, c.kl_mean, c.kl_std, c.n_tokens
FROM curve c JOIN selected r USING (run_id)
ORDER BY r.job_id, r.layer, r.run_id, intervention, c.bin
"""


def sensitivity_curve(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
