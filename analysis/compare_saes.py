"""Several SAEs on the same hooks side by side: KL and CE-loss increase of sae vs eps_random, cos_sim, L0."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import SELECTED_RUNS, ScopedFilters, read


class Params(ScopedFilters):
    saes: list[str] | None = Field(default=None, min_length=1, description="SAE names to compare; None: all")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "saes": self.saes}


# Means over every sample of eps_random (the store's intervention_sums count all samples);
# one row per run, grouped by hook so SAEs on one hook sit next to each other
# (n_saes_on_hook says how many share it within the job).
SQL = f"""
WITH {SELECTED_RUNS},
chosen AS (
  SELECT * FROM selected WHERE $saes IS NULL OR list_contains($saes, sae)
),
spliced AS (  -- from the store's per-(run, shard, intervention, position) sums: ~30x fewer rows
  SELECT run_id,
         sum(kl_sum) FILTER (WHERE intervention = 'sae') / sum(n) FILTER (WHERE intervention = 'sae') AS kl_sae,
         sum(kl_sum) FILTER (WHERE intervention = 'eps_random')
           / sum(n) FILTER (WHERE intervention = 'eps_random') AS kl_eps_random,
         sum(loss_delta_sum) FILTER (WHERE intervention = 'sae')
           / NULLIF(sum(loss_delta_n) FILTER (WHERE intervention = 'sae'), 0) AS loss_delta_sae,
         sum(loss_delta_sum) FILTER (WHERE intervention = 'eps_random')
           / NULLIF(sum(loss_delta_n) FILTER (WHERE intervention = 'eps_random'), 0) AS loss_delta_eps_random
  FROM intervention_sums JOIN chosen USING (run_id)
  WHERE intervention IN ('sae', 'eps_random')
  GROUP BY run_id
),
reconstruction AS (  -- intervened tokens' means, from the store's per-(run, shard) token_sums
  SELECT run_id, sum(n_tokens) AS n_tokens,
         sum(cos_sim_sum) / sum(n_tokens) AS cos_sim, sum(l0_sum) / sum(n_tokens) AS l0
  FROM token_sums JOIN chosen USING (run_id)
  GROUP BY run_id
)
SELECT c.job_id, c.hook_name, c.layer, c.sae, c.run_id, c.architecture, c.d_sae,
       count(*) OVER (PARTITION BY c.job_id, c.hook_name) AS n_saes_on_hook,
       s.kl_sae, s.kl_eps_random, s.kl_sae / NULLIF(s.kl_eps_random, 0) AS kl_ratio,
       s.loss_delta_sae, s.loss_delta_eps_random,
       s.loss_delta_sae / NULLIF(s.loss_delta_eps_random, 0) AS loss_delta_ratio,
       t.cos_sim, t.l0, t.n_tokens
FROM chosen c JOIN spliced s USING (run_id) JOIN reconstruction t USING (run_id)
ORDER BY c.job_id, c.layer, c.hook_name, c.sae, c.run_id
"""


def compare_saes(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
