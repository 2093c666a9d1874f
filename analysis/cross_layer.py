"""Token-level correlation of the KL gap between the layers (runs) of a job, matched by sequence and position."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from analysis.base import RUN_FILTER, Scope, ScopedFilters, read


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope


# Rows: the run filter (run/layer) picks run_a; run_b ranges over every run of the same job
# and scope, so no filter gives the full matrix (diagonal = 1, symmetric). A pair needs 3 tokens.
SQL = f"""
WITH gaps AS MATERIALIZED (
  SELECT g.job_id, g.run_id, g.sae, g.layer, g.sequence, g.position, g.kl_gap
  FROM token_gaps g JOIN runs r USING (run_id)
  WHERE ($scope IS NULL OR r.scope = $scope) AND ($job IS NULL OR r.job_id = $job)
    AND g.intervened AND g.kl_gap IS NOT NULL
),
chosen AS (
  SELECT * FROM gaps WHERE {RUN_FILTER}
)
SELECT a.job_id, a.run_id AS run_a, a.layer AS layer_a, a.sae AS sae_a,
       b.run_id AS run_b, b.layer AS layer_b, b.sae AS sae_b,
       count(*) AS n, corr(a.kl_gap, b.kl_gap) AS pearson
FROM chosen a JOIN gaps b ON a.job_id = b.job_id AND a.sequence = b.sequence AND a.position = b.position
GROUP BY ALL
HAVING count(*) >= 3
ORDER BY a.job_id, layer_a, run_a, layer_b, run_b
"""


def cross_layer(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
