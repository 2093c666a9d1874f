"""Per run: the SAELens/SAEBench metrics (kl_div_score, ce_loss_score, l0, cossim, ...) from the same records."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from analysis.base import SELECTED_RUNS, ScopedFilters, read


class Params(ScopedFilters):
    pass


# Names and formulas as in sae_lens.evals (REFERENCE.md §3): ablation = zero ablation;
# kl_div_score = (kl_abl - kl_sae) / kl_abl; ce_loss_score = (ce_abl - ce_sae) / (ce_abl - ce_clean);
# mse = mean ||x - SAE(x)||^2 (sum over dimensions, mean over tokens); l2_ratio = mean ||SAE(x)|| / ||x||.
# Sample 0 only, so a run with many random draws still counts each token once.
SQL = f"""
WITH {SELECTED_RUNS},
spliced AS (
  SELECT run_id,
         avg(kl) FILTER (WHERE intervention = 'sae') AS kl_div_with_sae,
         avg(kl) FILTER (WHERE intervention = 'zero_ablation') AS kl_div_with_ablation,
         avg(loss) FILTER (WHERE intervention = 'sae') AS ce_loss_with_sae,
         avg(loss) FILTER (WHERE intervention = 'zero_ablation') AS ce_loss_with_ablation
  FROM interventions JOIN selected USING (run_id)
  WHERE sample = 0 AND intervention IN ('sae', 'zero_ablation')
  GROUP BY run_id
),
reconstruction AS (
  SELECT run_id, count(*) AS n_tokens,
         avg(clean_loss) AS ce_loss_without_sae, avg(l0) AS l0, avg(l1) AS l1, avg(eps * eps) AS mse,
         avg(cos_sim) AS cossim, avg(sae_norm / NULLIF(norm, 0)) AS l2_ratio
  FROM tokens JOIN selected USING (run_id)
  WHERE intervened
  GROUP BY run_id
)
SELECT r.job_id, r.run_id, r.sae, r.hook_name, r.layer, c.n_tokens,
       s.kl_div_with_sae, s.kl_div_with_ablation,
       (s.kl_div_with_ablation - s.kl_div_with_sae) / NULLIF(s.kl_div_with_ablation, 0) AS kl_div_score,
       s.ce_loss_with_sae, c.ce_loss_without_sae, s.ce_loss_with_ablation,
       (s.ce_loss_with_ablation - s.ce_loss_with_sae) / NULLIF(s.ce_loss_with_ablation - c.ce_loss_without_sae, 0)
         AS ce_loss_score,
       c.l0, c.l1, c.mse, c.cossim, c.l2_ratio
FROM selected r JOIN spliced s USING (run_id) JOIN reconstruction c USING (run_id)
ORDER BY r.job_id, r.layer, r.run_id
"""


def sae_metrics(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
