"""A reproducible sample of per-token (x, y) pairs for the correlation explorer, filtered by run, position and token."""

from __future__ import annotations

import functools
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from analysis.base import SELECTED_RUNS, Scope, ScopedFilters, read
from schema.spec import INTERVENTION_NAMES

# Per-token columns of token_gaps a user may plot: the gap columns, each intervention's KL (from
# schema.spec.INTERVENTION_NAMES), the token's facts; token_frequency counts the token id among the
# run's intervened tokens; kl_gap_other_run is the same token's gap in `other_run`.
VARIABLES: tuple[str, ...] = (
    "kl_gap", "kl_ratio", "loss_gap", "loss_delta_sae", "loss_delta_eps_random",
    *(f"kl_{name}" for name in INTERVENTION_NAMES),
    "cos_sim", "l0", "l1", "position", "norm", "sae_norm", "eps", "clean_loss", "token_frequency", "kl_gap_other_run",
)  # fmt: skip
Variable = Literal[VARIABLES]  # type: ignore[valid-type]  # built from the list above


class Params(ScopedFilters):
    scope: Scope | None = None  # per-token answer; either scope
    x: Variable = "position"
    y: Variable = "kl_sae"
    other_run: int | None = Field(default=None, ge=1, description="run whose gap kl_gap_other_run reads")
    position_min: int | None = Field(default=None, ge=0)
    position_max: int | None = Field(default=None, ge=0)
    token_text: str | None = Field(default=None, description="only this token (exact text); None: all")
    limit: int = Field(default=5000, ge=1, le=200_000, description="pairs in the sample")
    seed: int = Field(default=0, ge=0, description="which sample: rows are ordered by hash(key, seed)")

    @model_validator(mode="after")
    def _other_run_when_needed(self) -> Params:
        if "kl_gap_other_run" in (self.x, self.y) and self.other_run is None:
            raise ValueError("kl_gap_other_run needs other_run (the run whose gap to read)")
        return self

    def bind(self) -> dict[str, Any]:
        extra = ("x", "y", "other_run", "position_min", "position_max", "token_text", "limit", "seed")
        return {**super().bind(), **{name: getattr(self, name) for name in extra}}


# SQL of each variable over `tokens t` (its per-intervention columns, schema.relations.TOKEN_METRICS_SCHEMA),
# the token-frequency counts `f` and the other run's tokens `o`; the gap columns as token_gaps defines them.
_EXPRESSIONS: dict[str, str] = {
    **{name: f"t.{name}" for name in VARIABLES},
    "kl_gap": "t.kl_sae - t.kl_eps_random",
    "kl_ratio": "t.kl_sae / NULLIF(t.kl_eps_random, 0)",
    "loss_gap": "t.loss_delta_sae - t.loss_delta_eps_random",
    "token_frequency": "f.token_frequency",
    "kl_gap_other_run": "o.kl_sae - o.kl_eps_random",
}
# Variables with a value only where the token has a record (token_gaps' rows): reading one of them
# makes the "any intervention's KL" test of token_gaps redundant, and that test reads every KL column.
_RECORD_VARIABLES = {"kl_gap", "kl_ratio", "loss_gap", *(v for v in VARIABLES if v.startswith(("kl_", "loss_delta_")))}
_RECORD_VARIABLES.discard("kl_gap_other_run")
_HAS_RECORD = "coalesce(" + ", ".join(f"t.kl_{name}" for name in INTERVENTION_NAMES) + ") IS NOT NULL"

# Occurrences of each token id among the run's intervened tokens with a record.
_FREQUENCY = f"""LEFT JOIN (
  SELECT t.run_id, t.token_id, count(*) AS token_frequency FROM tokens t SEMI JOIN selected USING (run_id)
  WHERE t.intervened AND {_HAS_RECORD}
  GROUP BY t.run_id, t.token_id
) f ON f.run_id = t.run_id AND f.token_id = t.token_id"""
_OTHER_RUN = "LEFT JOIN tokens o ON o.run_id = $other_run AND o.sequence = t.sequence AND o.position = t.position"


@functools.cache
def sql(x: str, y: str) -> str:
    """The sample's SQL for one (x, y) pair: one constant text per pair of VARIABLES (values are bound).

    The same rows as token_gaps' intervened tokens, reading only the columns x and y need: a CASE over
    every variable read all 29 columns of 24M tokens, and the token-frequency window ran even when not
    plotted (53 s for the default pair at seed scale, BENCHMARKS.md, Analysis). Sampling: hash order
    over the filtered rows, then LIMIT; the same seed gives the same sample whatever x and y are.
    """
    chosen = {x, y}
    return f"""
WITH {SELECTED_RUNS},
chosen AS (
  SELECT r.job_id, t.run_id, r.sae, r.layer, t.sequence, t.position, t.token_id, t.token_text,
         ({_EXPRESSIONS[x]})::DOUBLE AS x, ({_EXPRESSIONS[y]})::DOUBLE AS y
  FROM tokens t JOIN selected r USING (run_id)
  {_FREQUENCY if "token_frequency" in chosen else ""}
  {_OTHER_RUN if "kl_gap_other_run" in chosen else ""}
  WHERE t.intervened {"" if chosen & _RECORD_VARIABLES else f"AND {_HAS_RECORD}"}
    AND ($position_min IS NULL OR t.position >= $position_min)
    AND ($position_max IS NULL OR t.position <= $position_max)
    AND ($token_text IS NULL OR t.token_text = $token_text)
)
SELECT * FROM chosen
WHERE x IS NOT NULL AND y IS NOT NULL AND isfinite(x) AND isfinite(y)
ORDER BY hash(run_id, sequence, position, $seed)
LIMIT $limit
"""


def token_sample(params: Params, store: Any = None) -> pa.Table:
    bound = params.bind()
    del bound["x"], bound["y"]  # chosen by the SQL text, not bound
    if "kl_gap_other_run" not in (params.x, params.y):  # that SQL has no $other_run
        del bound["other_run"]
    return read(sql(params.x, params.y), bound, store)
