"""Tokens with the largest mean KL gap (SAE minus eps_random) per layer, seen at least min_count times, with spread."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import GAPS, SELECTED_RUNS, Scope, ScopedFilters, read


class Params(ScopedFilters):
    scope: Scope | None = None  # per-run answer; either scope
    min_count: int = Field(default=5, ge=2, description="occurrences a token needs (the seed: 5)")
    top: int = Field(default=20, ge=1, le=10_000, description="tokens per run (the seed: 20)")

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "min_count": self.min_count, "top": self.top}


SQL = f"""
WITH {SELECTED_RUNS}, {GAPS}
SELECT r.job_id, g.run_id, r.sae, r.layer, g.token_id, any_value(g.token_text) AS token_text,
       count(*) AS n, avg(g.kl_gap) AS kl_gap_mean, stddev_samp(g.kl_gap) AS kl_gap_std,
       avg(g.kl_sae) AS kl_sae_mean, avg(g.kl_eps_random) AS kl_eps_random_mean
FROM gaps g JOIN selected r USING (run_id)
WHERE g.intervened
GROUP BY r.job_id, g.run_id, r.sae, r.layer, g.token_id
HAVING count(*) >= $min_count
QUALIFY row_number() OVER (PARTITION BY g.run_id ORDER BY avg(g.kl_gap) DESC, g.token_id) <= $top
ORDER BY r.job_id, r.layer, g.run_id, kl_gap_mean DESC, g.token_id
"""


def top_tokens(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
