"""Per intervened token with many random draws: how many standard deviations the SAE's KL lies from the draws' mean."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import SELECTED_RUNS, Scope, ScopedFilters, read
from schema.spec import BASELINE, RandomBaseline


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope
    baseline: RandomBaseline = BASELINE
    min_samples: int = Field(default=10, ge=2, description="draws a token needs to be tested")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "baseline": self.baseline, "min_samples": self.min_samples}


# z = (kl_sae - mean(draws)) / std(draws), std with ddof=1 (the seed's "standard deviations
# from the eps-random mean", its figure at layer 6, position 48). The draws' quantiles give
# the distribution the SAE's KL is placed in.
SQL = f"""
WITH {SELECTED_RUNS},
spliced AS (
  SELECT run_id, sequence, position, kl AS kl_sae
  FROM interventions JOIN selected USING (run_id)
  WHERE intervention = 'sae' AND sample = 0
),
tested AS (  -- draws are numbered 0..samples-1: a token with a draw numbered min_samples-1 has enough
  SELECT DISTINCT run_id, sequence, position
  FROM interventions JOIN selected USING (run_id)
  WHERE intervention = $baseline AND sample = $min_samples - 1
),
draws AS (
  SELECT run_id, sequence, position, any_value(s.kl_sae) AS kl_sae, count(*) AS n_draws,
         avg(i.kl) AS draw_mean, stddev_samp(i.kl) AS draw_std,
         quantile_cont(i.kl, [0.05, 0.5, 0.95]) AS draw_quantiles, max(i.kl) AS draw_max,
         avg((i.kl >= s.kl_sae)::DOUBLE) AS fraction_draws_above
  FROM interventions i JOIN tested USING (run_id, sequence, position) JOIN spliced s USING (run_id, sequence, position)
  WHERE i.intervention = $baseline
  GROUP BY ALL
  HAVING count(*) >= $min_samples
)
SELECT r.job_id, r.run_id, r.sae, r.layer, d.sequence, d.position, t.token_text, $baseline AS baseline, d.n_draws,
       d.kl_sae, d.draw_mean, d.draw_std, d.draw_quantiles[1] AS draw_p05, d.draw_quantiles[2] AS draw_median,
       d.draw_quantiles[3] AS draw_p95, d.draw_max, d.fraction_draws_above,
       (d.kl_sae - d.draw_mean) / NULLIF(d.draw_std, 0) AS z
FROM draws d
JOIN tokens t USING (run_id, sequence, position)
JOIN selected r USING (run_id)
WHERE t.intervened
ORDER BY r.job_id, r.layer, r.run_id, d.sequence, d.position
"""


def sigma(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
