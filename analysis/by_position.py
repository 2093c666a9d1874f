"""Mean KL (and CE-loss increase) per position in the context, per layer and intervention."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, read


class Params(InterventionFilters):
    pass


# From the store's per-(run, shard, intervention, position) sums (~30x fewer rows than the
# records): means over every sample of a random intervention (its expectation); n_tokens is
# the run's `sae` count there (every job has `sae`, one record per token).
SQL = f"""
WITH {SELECTED_RUNS},
sums AS (
  SELECT run_id, intervention, position, sum(n)::BIGINT AS n, sum(kl_sum) AS kl_sum,
         sum(loss_delta_n)::BIGINT AS loss_delta_n, sum(loss_delta_sum) AS loss_delta_sum
  FROM intervention_sums JOIN selected USING (run_id)
  GROUP BY ALL
),
tokens_at AS (
  SELECT run_id, position, n AS n_tokens FROM sums WHERE intervention = 'sae'
)
SELECT r.job_id, r.run_id, r.sae, r.layer, s.intervention, s.position,
       s.kl_sum / s.n AS kl_mean, s.loss_delta_sum / NULLIF(s.loss_delta_n, 0) AS loss_delta_mean, t.n_tokens
FROM sums s JOIN tokens_at t USING (run_id, position) JOIN selected r USING (run_id)
WHERE {INTERVENTION_FILTER}
ORDER BY r.job_id, r.layer, r.run_id, s.intervention, s.position
"""


def by_position(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
