"""Where a token occurs (default: any token, largest gap first): the text around it and every intervention's KL."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from analysis.base import SELECTED_RUNS, Scope, ScopedFilters, read
from schema.spec import INTERVENTION_NAMES


class Params(ScopedFilters):
    scope: Scope | None = None  # per-token answer; either scope
    token_id: int | None = Field(default=None, ge=0, description="the token whose occurrences to list; None: any")
    before: int = Field(default=8, ge=0, le=64, description="tokens of context before the position")
    after: int = Field(default=2, ge=0, le=64, description="tokens of context after the position")
    limit: int = Field(default=50, ge=1, le=10_000, description="occurrences listed, largest gap first")

    def bind(self) -> dict[str, Any]:
        extra = ("token_id", "before", "after", "limit")
        return {**super().bind(), **{name: getattr(self, name) for name in extra}}


_KLS = ", ".join(f"g.kl_{name}" for name in INTERVENTION_NAMES)

# The context is read from the run's tokens table (every position, intervened or not);
# the token itself is wrapped in [[ ]] so it stands out in the text.
SQL = f"""
WITH {SELECTED_RUNS},
hits AS (
  SELECT g.job_id, g.run_id, g.sae, g.layer, g.sequence, g.position, g.token_text, g.kl_gap, {_KLS}
  FROM token_gaps g JOIN selected USING (run_id)
  WHERE g.intervened AND ($token_id IS NULL OR g.token_id = $token_id)
  ORDER BY g.kl_gap DESC NULLS LAST, g.run_id, g.sequence, g.position
  LIMIT $limit
),
{{windows}}"""

# The hits' context windows and their answer rows (after a CTE `hits`).
_WINDOWS = """windows AS (
  SELECT h.run_id, h.sequence, h.position,
         string_agg(CASE WHEN t.position = h.position THEN '[[' || t.token_text || ']]' ELSE t.token_text END, ''
                    ORDER BY t.position) AS context
  FROM hits h JOIN tokens t ON t.run_id = h.run_id AND t.sequence = h.sequence
   AND t.position BETWEEN h.position - $before AND h.position + $after
  GROUP BY ALL
)
SELECT h.job_id, h.run_id, h.sae, h.layer, h.sequence, h.position, h.token_text, w.context,
       h.* EXCLUDE (job_id, run_id, sae, layer, sequence, position, token_text)
FROM hits h JOIN windows w USING (run_id, sequence, position)
ORDER BY h.kl_gap DESC NULLS LAST, h.run_id, h.sequence, h.position
"""
SQL = SQL.format(windows=_WINDOWS)

# The same answer when at least $limit tokens have a gap (NULLS LAST puts them all first): the
# ranking reads the two KL columns of the gap, not all of them (token_gaps keeps a token with
# any KL, so its filter reads every intervention's column of all 24 M tokens at seed scale), and
# the hits' other columns are fetched for their $limit rows only.
GAPPED_SQL = f"""
WITH {SELECTED_RUNS},
ranked AS (
  SELECT t.run_id, t.sequence, t.position, t.kl_sae - t.kl_eps_random AS kl_gap
  FROM tokens t JOIN selected USING (run_id)
  WHERE t.intervened AND t.kl_sae IS NOT NULL AND t.kl_eps_random IS NOT NULL
    AND ($token_id IS NULL OR t.token_id = $token_id)
  ORDER BY kl_gap DESC, t.run_id, t.sequence, t.position
  LIMIT $limit
),
hits AS (
  SELECT g.job_id, g.run_id, g.sae, g.layer, g.sequence, g.position, g.token_text, g.kl_gap, {_KLS}
  FROM token_gaps g JOIN ranked USING (run_id, sequence, position)
),
{_WINDOWS}"""


def token_contexts(params: Params, store: Any = None) -> pa.Table:
    table = read(GAPPED_SQL, params.bind(), store)
    if table.num_rows < params.limit:  # fewer tokens with a gap than asked for: the rest rank after them
        table = read(SQL, params.bind(), store)
    return table
