"""Per layer: KL of the random interventions against the token's cos_sim (binned), with the SAE's points on it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, Scope, read
from schema.spec import INTERVENTION_NAMES, InterventionName

# The cos-matched baselines trace the layer's sensitivity to a perturbation of that cosine
# (REFERENCE.md §1, the comment under the seed); sae and eps_random are placed on the same bins.
DEFAULT_INTERVENTIONS: list[InterventionName] = ["sae", "eps_random", "cos_random_sae_norm", "cos_random_true_norm"]


class Params(InterventionFilters):
    scope: Scope | None = None  # per-run answer; either scope
    interventions: list[InterventionName] | None = Field(
        default_factory=lambda: list(DEFAULT_INTERVENTIONS), min_length=1
    )
    bins: int = Field(default=20, ge=1, le=1000, description="equal-width cos_sim bins between the run's min and max")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "bins": self.bins}


_UNPIVOTED = ", ".join(f"kl_{name} AS {name}" for name in INTERVENTION_NAMES)

# Draws: sample 0 from tokens' per-intervention columns (one row per token, not ten), the
# further draws of random interventions from `interventions` (sample > 0: the store's file
# statistics skip every file of a one-sample job). UNPIVOT drops the NULLs of interventions
# the run did not have.
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
binned AS (
  SELECT c.*, ranges.lo, ranges.hi,
         coalesce(least($bins - 1,
                        floor((c.cos_sim - ranges.lo) / NULLIF(ranges.hi - ranges.lo, 0) * $bins)), 0)::INTEGER AS bin
  FROM cosines c JOIN ranges USING (run_id)
),
first_draws AS (
  UNPIVOT (SELECT run_id, sequence, position, {_UNPIVOTED} FROM tokens JOIN selected USING (run_id))
  ON {", ".join(INTERVENTION_NAMES)} INTO NAME intervention VALUE kl
),
draws AS (
  SELECT run_id, sequence, position, intervention, 0 AS sample, kl FROM first_draws
  UNION ALL
  SELECT run_id, sequence, position, intervention, sample, kl FROM interventions JOIN selected USING (run_id)
  WHERE sample > 0
)
SELECT r.job_id, r.run_id, r.sae, r.layer, i.intervention, b.bin,
       any_value(b.lo + b.bin * (b.hi - b.lo) / $bins) AS cos_lo,
       any_value(b.lo + (b.bin + 1) * (b.hi - b.lo) / $bins) AS cos_hi,
       avg(b.cos_sim) AS cos_sim_mean, avg(i.kl) AS kl_mean, stddev_samp(i.kl) AS kl_std,
       count(*) FILTER (WHERE i.sample = 0) AS n_tokens
FROM draws i JOIN binned b USING (run_id, sequence, position) JOIN selected r USING (run_id)
WHERE {INTERVENTION_FILTER}
GROUP BY ALL
ORDER BY r.job_id, r.layer, r.run_id, i.intervention, b.bin
"""


def sensitivity_curve(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
