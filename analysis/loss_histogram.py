"""Distribution of per-token CE-loss increase per layer and intervention, in equal-width bins over the data's range."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import INTERVENTION_LIST, SELECTED_RUNS, InterventionFilters, per_intervention, read


class Params(InterventionFilters):
    bins: int = Field(default=40, ge=1, le=1000, description="equal-width bins between the smallest and largest value")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "bins": self.bins}


# One draw per token (sample 0, from tokens' per-intervention columns); tokens without a
# next token have no loss and drop out. The range is shared by every selected run and
# intervention so their histograms line up.
SQL = f"""
WITH {SELECTED_RUNS},
records AS (
  SELECT run_id, k, value::DOUBLE AS loss_delta FROM {per_intervention("loss_delta", carry=())}
),
span AS (
  SELECT min(loss_delta) AS lo, greatest(max(loss_delta) - min(loss_delta), 1e-12) AS width FROM records
),
counts AS (  -- grouped before any join: one row per (run, intervention, bin)
  SELECT run_id, k, least($bins - 1, floor((loss_delta - lo) / width * $bins))::INTEGER AS bin, count(*) AS n
  FROM records, span
  GROUP BY ALL
)
SELECT r.job_id, r.run_id, r.sae, r.layer, {INTERVENTION_LIST}[c.k + 1] AS intervention, c.bin,
       s.lo + c.bin * s.width / $bins AS bin_lo, s.lo + (c.bin + 1) * s.width / $bins AS bin_hi,
       c.n, c.n / sum(c.n) OVER (PARTITION BY c.run_id, c.k) AS fraction
FROM counts c JOIN selected r USING (run_id), span s
ORDER BY r.job_id, r.layer, r.run_id, intervention, c.bin
"""


def loss_histogram(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
