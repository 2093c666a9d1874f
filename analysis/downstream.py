"""Single-token runs: mean KL at the intervened position and at each following position (offset from the target)."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, read


class Params(InterventionFilters):
    scope: Literal["single_token"] = "single_token"  # only single-token runs have a target


# offset 0 is the intervened token; later offsets see it only through attention.
SQL = f"""
WITH {SELECTED_RUNS}
SELECT r.job_id, r.run_id, r.sae, r.layer, r.target_position, i.intervention,
       i.position - r.target_position AS "offset",
       avg(i.kl) AS kl_mean, stddev_samp(i.kl) AS kl_std, avg(i.loss_delta) AS loss_delta_mean,
       count(*) AS n_records, count(DISTINCT i.sequence) AS n_sequences
FROM interventions i JOIN selected r USING (run_id)
WHERE i.position >= r.target_position AND {INTERVENTION_FILTER}
GROUP BY ALL
ORDER BY r.job_id, r.layer, r.run_id, i.intervention, "offset"
"""


def downstream(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
