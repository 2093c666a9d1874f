"""Distribution of per-token CE-loss increase per layer and intervention, in equal-width bins over the data's range."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import INTERVENTION_FILTER, SELECTED_RUNS, InterventionFilters, read
from schema.spec import INTERVENTION_NAMES


class Params(InterventionFilters):
    bins: int = Field(default=40, ge=1, le=1000, description="equal-width bins between the smallest and largest value")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "bins": self.bins}


_LOSS_COLUMNS = ", ".join(f"loss_delta_{name} AS {name}" for name in INTERVENTION_NAMES)

# One draw per token (sample 0, read from tokens' per-intervention columns); tokens without a
# next token have no loss and drop out (UNPIVOT drops NULLs). The
# range is shared by every selected run and intervention so their histograms line up.
SQL = f"""
WITH {SELECTED_RUNS},
unpivoted AS (
  UNPIVOT (SELECT run_id, {_LOSS_COLUMNS} FROM tokens JOIN selected USING (run_id))
  ON {", ".join(INTERVENTION_NAMES)} INTO NAME intervention VALUE loss_delta
),
records AS (
  SELECT run_id, intervention, loss_delta::DOUBLE AS loss_delta FROM unpivoted WHERE {INTERVENTION_FILTER}
),
span AS (
  SELECT min(loss_delta) AS lo, greatest(max(loss_delta) - min(loss_delta), 1e-12) AS width FROM records
),
binned AS (
  SELECT run_id, intervention, least($bins - 1, floor((loss_delta - lo) / width * $bins))::INTEGER AS bin
  FROM records, span
),
totals AS (
  SELECT run_id, intervention, count(*) AS n_group FROM records GROUP BY ALL
)
SELECT r.job_id, r.run_id, r.sae, r.layer, b.intervention, b.bin,
       any_value(s.lo + b.bin * s.width / $bins) AS bin_lo, any_value(s.lo + (b.bin + 1) * s.width / $bins) AS bin_hi,
       count(*) AS n, count(*) / any_value(t.n_group) AS fraction
FROM binned b JOIN totals t USING (run_id, intervention) JOIN selected r USING (run_id), span s
GROUP BY ALL
ORDER BY r.job_id, r.layer, r.run_id, b.intervention, b.bin
"""


def loss_histogram(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
