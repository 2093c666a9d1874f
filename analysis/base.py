"""What every analysis module shares: the run filters, the module record, the one read path.

Each module answers one question of the seed (docs/method.md §1.5) with a named SQL query
over the record relations (schema/relations.py). User values reach SQL only as bound
DuckDB parameters (`$job`, `$layer`, ...); the SQL text itself is constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from schema.spec import INTERVENTION_NAMES, InterventionName

# Rows one module may read: per-sequence aggregates at seed scale (16k sequences x 12
# layers x 10 interventions) stay below this; token-level rows never reach Python.
MAX_ROWS = 5_000_000
TIMEOUT_S = 120.0

# WHERE fragment over a relation carrying job_id, run_id and layer (token_records,
# token_gaps, or runs aliased as r in the per-run queries).
RUN_FILTER = (
    "($job IS NULL OR job_id = $job) AND ($run IS NULL OR run_id = $run) AND ($layer IS NULL OR layer = $layer)"
)
# The same filter on an intervention column, for queries that read `interventions`.
INTERVENTION_FILTER = "($interventions IS NULL OR list_contains($interventions, intervention))"
# CTE of the runs a query reads; joining the record tables to it lets DuckDB skip the rest.
SELECTED_RUNS = f"selected AS (SELECT * FROM runs WHERE ($scope IS NULL OR scope = $scope) AND {RUN_FILTER})"

# CTE `gaps` (after SELECTED_RUNS): the selected runs' tokens that have both kl_sae and
# kl_eps_random (sample 0), every tokens column plus kl_gap. One scan of `tokens`, which
# carries each intervention's sample-0 KL (schema.relations.TOKEN_METRICS_SCHEMA): the same
# rows and values as the token_gaps view, without its join to runs (BENCHMARKS.md, Analysis).
GAPS = """
gaps AS (
  SELECT t.*, t.kl_sae - t.kl_eps_random AS kl_gap
  FROM tokens t JOIN selected USING (run_id)
  WHERE t.kl_sae IS NOT NULL AND t.kl_eps_random IS NOT NULL
)"""


# SQL list of the intervention names: `{INTERVENTION_LIST}[k + 1]` names index k of per_intervention.
INTERVENTION_LIST = "[" + ", ".join(f"'{name}'" for name in INTERVENTION_NAMES) + "]"


def per_intervention(metric: str, carry: tuple[str, ...]) -> str:
    """Subquery: (run_id, *carry, k, value) for each token of the selected runs and each intervention
    in $interventions (all when NULL) with a non-null `<metric>_<intervention>` column of tokens
    (schema.relations.TOKEN_METRICS_SCHEMA: sample 0); k is the intervention's index in
    INTERVENTION_NAMES (group by k, name it after: grouping by the name string costs 2x).

    A UNION ALL of one branch per intervention, joined to the selected runs after the union: a
    branch whose name is not chosen is folded away before any scan. An UNPIVOT of the ten columns
    took 10x longer at seed scale, and the run join inside each branch 2x (BENCHMARKS.md, Analysis).
    """
    columns = ", ".join(("run_id", *carry))
    branches = "\n    UNION ALL\n".join(
        f"    SELECT {columns}, {k}::SMALLINT AS k, {metric}_{name} AS value FROM tokens"
        f" WHERE ($interventions IS NULL OR list_contains($interventions, '{name}')) AND {metric}_{name} IS NOT NULL"
        for k, name in enumerate(INTERVENTION_NAMES)
    )
    return f"(SELECT * FROM (\n{branches}\n  ) JOIN selected USING (run_id))"


Scope = Literal["all_tokens", "single_token"]


class Filters(BaseModel):
    """Which runs a module reads; None means all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: int | None = Field(default=None, ge=1, description="job id")
    run: int | None = Field(default=None, ge=1, description="run id")
    layer: int | None = Field(default=None, ge=0, description="layer of the hook")

    def bind(self) -> dict[str, Any]:
        """The bound parameters of RUN_FILTER."""
        return {"job": self.job, "run": self.run, "layer": self.layer}


class ScopedFilters(Filters):
    """Run filters plus the scope of the runs: all-token runs by default (the seed's main
    experiment); modules whose answer means the same in either scope default to None (any)."""

    scope: Scope | None = "all_tokens"

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "scope": self.scope}


class InterventionFilters(ScopedFilters):
    """Scoped run filters plus which interventions to read; None means all."""

    interventions: list[InterventionName] | None = Field(default=None, min_length=1)

    def bind(self) -> dict[str, Any]:
        return {**super().bind(), "interventions": self.interventions}


class BootstrapSettings(BaseModel):
    """The paired sequence bootstrap's settings (analysis/bootstrap.py), for modules that give intervals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_boot: int = Field(default=1000, ge=100, le=20_000, description="bootstrap replicates")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = Field(default=0, ge=0)


@dataclass(frozen=True)
class AnalysisModule:
    """One named question: its params model and the function answering it."""

    name: str
    question: str  # one line, the module docstring's first line
    params: type[Filters]
    answer: Callable[..., pa.Table]  # answer(params, store=None) -> pa.Table

    def __call__(self, params: Filters | None = None, store: Any = None) -> pa.Table:
        return self.answer(params or self.params(), store=store)


def read(sql: str, params: dict[str, Any], store: Any = None) -> pa.Table:
    """Run one read through the store's single read function (schema.read.query)."""
    from schema.read import query  # the store's one read path; imported on use

    return query(sql, params, store=store, timeout_s=TIMEOUT_S, max_rows=MAX_ROWS)


def empty_like(schema: pa.Schema) -> pa.Table:
    """Zero rows with the right columns: what every module returns on too little data."""
    return schema.empty_table()
