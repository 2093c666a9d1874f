"""Per run: the SAELens/SAEBench metrics (kl_div_score, ce_loss_score, l0, cossim, ...) from the same records."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from analysis.base import SELECTED_RUNS, ScopedFilters, read


class Params(ScopedFilters):
    pass


# Names and formulas as in sae_lens.evals (docs/method.md §3.6): ablation = zero ablation;
# kl_div_score = (kl_abl - kl_sae) / kl_abl; ce_loss_score = (ce_abl - ce_sae) / (ce_abl - ce_clean);
# mse = mean ||x - SAE(x)||^2 (sum over dimensions, mean over tokens); l2_ratio = mean ||SAE(x)|| / ||x||.
# The spliced means come from the store's sequence_sums rollup (~2M rows at seed scale, not the
# 240M interventions rows), the reconstruction means from token_sums (~6k rows, not 24M tokens).
# sequence_sums covers all samples, which for these two deterministic interventions is sample 0
# alone: each token counts once, as in sae_lens.
SQL = f"""
WITH {SELECTED_RUNS},
sums AS (
  SELECT run_id, intervention, sum(n) AS n, sum(kl_sum) AS kl_sum, sum(loss_n) AS loss_n, sum(loss_sum) AS loss_sum
  FROM sequence_sums JOIN selected USING (run_id)
  WHERE intervention IN ('sae', 'zero_ablation')
  GROUP BY ALL
),
spliced AS (
  SELECT run_id,
         max(kl_sum / n) FILTER (WHERE intervention = 'sae') AS kl_div_with_sae,
         max(kl_sum / n) FILTER (WHERE intervention = 'zero_ablation') AS kl_div_with_ablation,
         max(loss_sum / NULLIF(loss_n, 0)) FILTER (WHERE intervention = 'sae') AS ce_loss_with_sae,
         max(loss_sum / NULLIF(loss_n, 0)) FILTER (WHERE intervention = 'zero_ablation') AS ce_loss_with_ablation
  FROM sums
  GROUP BY run_id
),
reconstruction AS (  -- means over the intervened tokens, from the store's token_sums rollup
  SELECT run_id, sum(n_tokens) AS n_tokens,
         sum(clean_loss_sum) / NULLIF(sum(clean_loss_n), 0) AS ce_loss_without_sae,
         sum(l0_sum) / sum(n_tokens) AS l0, sum(l1_sum) / sum(n_tokens) AS l1, sum(eps_sq_sum) / sum(n_tokens) AS mse,
         sum(cos_sim_sum) / sum(n_tokens) AS cossim, sum(l2_ratio_sum) / NULLIF(sum(l2_ratio_n), 0) AS l2_ratio
  FROM token_sums JOIN selected USING (run_id)
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
