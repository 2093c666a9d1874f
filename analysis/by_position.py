"""Mean KL (and CE-loss increase) per position in the context, per layer and intervention."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, read


class Params(InterventionFilters):
    pass


# Means over every sample of a random intervention (its expectation); n_tokens counts sample 0.
SQL = f"""
WITH {SELECTED_RUNS}
SELECT r.job_id, r.run_id, r.sae, r.layer, i.intervention, i.position,
       avg(i.kl) AS kl_mean, avg(i.loss_delta) AS loss_delta_mean, count(*) FILTER (WHERE i.sample = 0) AS n_tokens
FROM interventions i JOIN selected r USING (run_id)
WHERE {INTERVENTION_FILTER}
GROUP BY ALL
ORDER BY r.job_id, r.layer, r.run_id, i.intervention, i.position
"""


def by_position(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
