"""Distribution of per-token CE-loss increase per layer and intervention, in equal-width bins over the data's range.

Read off the store's `loss_bins` rollup (signed fixed log-spaced bins, 40 per decade of |loss_delta|
over [1e-6, 1e2], written with each shard), not the 24M tokens x 10 interventions values. The
range [lo, hi] is exact (the bins keep their least and greatest value). Each fixed bin is counted
in the equal-width bin that holds its mean, so a token is placed as if its loss increase were its
fixed bin's mean: moved by less than 5.9% of its size (a factor schema.relations.KL_BIN_RATIO)
for |loss_delta| in [1e-6, 1e2], by less than 1e-6 below that. Counts are exact where no fixed
bin straddles an equal-width edge (docs/schema.md, loss_bins).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, read


class Params(InterventionFilters):
    bins: int = Field(default=40, ge=1, le=1000, description="equal-width bins between the smallest and largest value")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "bins": self.bins}


# One draw per token (sample 0); tokens without a next token have no loss and drop out. The
# range is shared by every selected run and intervention so their histograms line up.
SQL = f"""
WITH {SELECTED_RUNS},
fixed AS (  -- the loss_bins of the selected runs, summed over shards
  SELECT run_id, intervention, bin, sum(n)::BIGINT AS n, min(loss_delta_min)::DOUBLE AS lo,
         max(loss_delta_max)::DOUBLE AS hi, sum(loss_delta_sum) / sum(n) AS mean
  FROM loss_bins JOIN selected USING (run_id)
  WHERE {INTERVENTION_FILTER}
  GROUP BY ALL
),
span AS (
  SELECT min(lo) AS lo, greatest(max(hi) - min(lo), 1e-12) AS width FROM fixed
),
counts AS (  -- each fixed bin into the equal-width bin holding its mean
  SELECT run_id, intervention,
         least($bins - 1, greatest(0, floor((mean - span.lo) / width * $bins)))::INTEGER AS bin, sum(n)::BIGINT AS n
  FROM fixed, span
  GROUP BY ALL
)
SELECT r.job_id, r.run_id, r.sae, r.layer, c.intervention, c.bin,
       s.lo + c.bin * s.width / $bins AS bin_lo, s.lo + (c.bin + 1) * s.width / $bins AS bin_hi,
       c.n, c.n / sum(c.n) OVER (PARTITION BY c.run_id, c.intervention) AS fraction
FROM counts c JOIN selected r USING (run_id), span s
ORDER BY r.job_id, r.layer, r.run_id, c.intervention, c.bin
"""


def loss_histogram(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
