"""A reproducible sample of per-token (x, y) pairs for the correlation explorer, filtered by run, position and token."""

from __future__ import annotations

from typing import Any, Literal, get_args

import pyarrow as pa
from pydantic import Field, model_validator

from analysis.base import SELECTED_RUNS, Scope, ScopedFilters, read
from schema.spec import INTERVENTION_NAMES

# Per-token columns of token_gaps a user may plot; token_frequency counts the token id among
# the run's intervened tokens; kl_gap_other_run is the same token's gap in `other_run`.
Variable = Literal[
    "kl_gap", "kl_ratio", "loss_gap", "loss_delta_sae", "loss_delta_eps_random",
    "kl_sae", "kl_sae_norm_corrected", "kl_norm_only", "kl_eps_random", "kl_cos_random_sae_norm",
    "kl_cos_random_true_norm", "kl_zero_ablation", "kl_mean_ablation", "kl_eps_cov_random", "kl_eps_real_diff",
    "kl_sae_error_linear", "kl_sae_error_nonlinear", "kl_eps_random_linear", "kl_eps_random_nonlinear",
    "cos_sim", "l0", "l1", "position", "norm", "sae_norm", "eps", "clean_loss", "token_frequency", "kl_gap_other_run",
]  # fmt: skip
VARIABLES: tuple[Variable, ...] = get_args(Variable)


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


def _pick(parameter: str) -> str:
    """CASE choosing the column named by a bound parameter (the SQL text stays constant)."""
    arms = " ".join(f"WHEN '{name}' THEN {name}::DOUBLE" for name in VARIABLES)
    return f"CASE ${parameter} {arms} END"


assert all(f"kl_{name}" in VARIABLES for name in INTERVENTION_NAMES)  # every intervention's KL is a choice

# Sampling: hash order over the filtered rows, then LIMIT; the same seed gives the same sample.
SQL = f"""
WITH {SELECTED_RUNS},
gaps AS (
  SELECT g.*, count(*) OVER (PARTITION BY g.run_id, g.token_id) AS token_frequency,
         o.kl_gap AS kl_gap_other_run
  FROM token_gaps g JOIN selected USING (run_id)
  LEFT JOIN token_gaps o ON o.run_id = $other_run AND o.sequence = g.sequence AND o.position = g.position
  WHERE g.intervened
),
chosen AS (
  SELECT job_id, run_id, sae, layer, sequence, position, token_id, token_text,
         {_pick("x")} AS x, {_pick("y")} AS y
  FROM gaps
  WHERE ($position_min IS NULL OR position >= $position_min) AND ($position_max IS NULL OR position <= $position_max)
    AND ($token_text IS NULL OR token_text = $token_text)
)
SELECT * FROM chosen
WHERE x IS NOT NULL AND y IS NOT NULL AND isfinite(x) AND isfinite(y)
ORDER BY hash(run_id, sequence, position, $seed)
LIMIT $limit
"""


def token_sample(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
