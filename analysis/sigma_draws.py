"""The random draws behind sigma: every draw's KL next to the SAE's KL, for the seed's per-token histograms."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import SELECTED_RUNS, ScopedFilters, empty_like, read
from analysis.sigma import Params as SigmaParams


class Params(SigmaParams):
    sequence: int | None = Field(default=None, ge=0, description="one sequence; None: all")
    position: int | None = Field(default=None, ge=0, description="one position; None: all")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "sequence": self.sequence, "position": self.position}


# Whether any selected run has more than one draw of the baseline at some token, from the store's
# sequence_sums rollup (n counts every draw, n_sample0 the first): an all-token job with one draw
# per token has nothing to find, and this answers that in ~2M rollup rows instead of a pass over
# the interventions' files.
HAS_DRAWS_SQL = f"""
WITH {SELECTED_RUNS}
SELECT count(*) > 0 AS has_draws FROM (
  SELECT 1 FROM sequence_sums JOIN selected USING (run_id) WHERE intervention = $baseline AND n > n_sample0 LIMIT 1
)
"""

SQL = f"""
WITH {SELECTED_RUNS},
tested AS (  -- as in sigma: a draw numbered min_samples-1 means enough draws
  SELECT DISTINCT run_id, sequence, position
  FROM interventions JOIN selected USING (run_id)
  WHERE intervention = $baseline AND sample = $min_samples - 1 AND ($sequence IS NULL OR sequence = $sequence)
    AND ($position IS NULL OR position = $position)
)
SELECT r.job_id, r.run_id, r.layer, i.sequence, i.position, i.sample, i.kl, s.kl AS kl_sae
FROM interventions i
JOIN tested USING (run_id, sequence, position)
JOIN tokens t USING (run_id, sequence, position)
JOIN interventions s ON s.run_id = i.run_id AND s.sequence = i.sequence AND s.position = i.position
                    AND s.intervention = 'sae' AND s.sample = 0
JOIN selected r ON r.run_id = i.run_id
WHERE i.intervention = $baseline AND t.intervened
ORDER BY r.job_id, r.run_id, i.sequence, i.position, i.sample
"""


SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_id", pa.int64()), ("layer", pa.int32()), ("sequence", pa.int32()),
     ("position", pa.int16()), ("sample", pa.int32()), ("kl", pa.float32()), ("kl_sae", pa.float32())]
)  # fmt: skip


def sigma_draws(params: Params, store: Any = None) -> pa.Table:
    run_filter = {**ScopedFilters.bind(params), "baseline": params.baseline}  # HAS_DRAWS_SQL's parameters only
    if not read(HAS_DRAWS_SQL, run_filter, store)["has_draws"][0].as_py():
        return empty_like(SCHEMA)
    return read(SQL, params.bind(), store)
