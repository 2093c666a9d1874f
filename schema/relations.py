"""DuckDB DDL of the record relations: tables `runs`, `tokens`, `interventions`, the
rollups (ROLLUPS: `intervention_sums`, `sequence_sums`, `kl_bins`, `token_sums`, `loss_bins`,
`cos_bins`, `gap_sums`, `gap_pair_sums`, `gap_signs`), the engine's rollups (ENGINE_ROLLUPS: `amplification_sums`) and
the views `token_records` and `token_gaps`.
docs/schema.md documents every column.

Column lists are derived from the Arrow schemas in schema/records.py and the
intervention names in schema/spec.py, so no list is kept twice.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import pyarrow as pa

from schema.records import AMPLIFICATION_SCHEMA, INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.spec import INTERVENTION_NAMES

_DUCKDB_TYPES = {
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
}

# One row per run (model x SAE x hook x scope inside a job), mirrored from the job
# database so the record views need no cross-database join.
RUN_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.int64(), nullable=False),
        pa.field("job_id", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("sae", pa.string(), nullable=False),  # 'release/sae_id' or a path
        pa.field("architecture", pa.string(), nullable=False),  # standard, topk, jumprelu, ...
        pa.field("hook_name", pa.string(), nullable=False),  # blocks.6.hook_resid_pre
        pa.field("hook_point", pa.string(), nullable=False),  # resid_pre, attn_z, ...
        pa.field("layer", pa.int32(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),  # all_tokens | single_token
        pa.field("target_position", pa.int32()),  # single_token only
        pa.field("window", pa.int32()),  # single_token only
        pa.field("d_in", pa.int32(), nullable=False),
        pa.field("d_sae", pa.int32(), nullable=False),
        # Ridge fit of the SAE's error e = SAE(x) - x on x over the fit tokens (docs/method.md §8):
        # its ridge strength and the fraction of error variance it explains. NULL for runs from
        # before the fit, or when the error has no variance (an exact SAE).
        pa.field("error_ridge", pa.float64()),
        pa.field("error_linear_r2", pa.float64()),
    ]
)
# RUN_SCHEMA's columns added after lakes existed: lake.ensure_relations adds them to an older lake.
RUN_COLUMNS_ADDED: tuple[str, ...] = ("error_ridge", "error_linear_r2")

# Columns the store adds to the engine's record tables.
STORE_KEYS = pa.schema(
    [pa.field("run_id", pa.int64(), nullable=False), pa.field("shard_id", pa.int64(), nullable=False)]
)


def columns_sql(schema: pa.Schema) -> str:
    return ", ".join(f'"{f.name}" {_DUCKDB_TYPES[f.type]}' for f in schema)


# Per (run, shard, intervention, position) sums of the interventions rows (all samples),
# written by the store in the same transaction as the shard's records: per-layer and
# per-position means read a table ~30x smaller than interventions (see docs/schema.md).
INTERVENTION_SUMS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("intervention", pa.string(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),  # interventions rows summed
        pa.field("kl_sum", pa.float64(), nullable=False),
        pa.field("kl_sq_sum", pa.float64(), nullable=False),  # for variance: sq/n - (sum/n)^2
        pa.field("loss_delta_n", pa.int64(), nullable=False),  # rows with a non-null loss_delta
        pa.field("loss_delta_sum", pa.float64()),
        pa.field("loss_delta_sq_sum", pa.float64()),
    ]
)

# SELECT computing INTERVENTION_SUMS_SCHEMA's rows from a relation with interventions' columns.
INTERVENTION_SUMS_SELECT = """
SELECT run_id, shard_id, intervention, position, count(*) AS n,
       sum(kl::DOUBLE) AS kl_sum, sum(kl::DOUBLE * kl) AS kl_sq_sum,
       count(loss_delta) AS loss_delta_n, sum(loss_delta::DOUBLE) AS loss_delta_sum,
       sum(loss_delta::DOUBLE * loss_delta) AS loss_delta_sq_sum
FROM {interventions}
GROUP BY run_id, shard_id, intervention, position
"""


# Per (run, shard, sequence, intervention) sums over all samples: the sequence-level
# bootstrap of layer_summary reads ~2M of these rows instead of 240M interventions rows.
SEQUENCE_SUMS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("sequence", pa.int32(), nullable=False),
        pa.field("intervention", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),  # interventions rows summed (positions x samples)
        pa.field("n_sample0", pa.int64(), nullable=False),  # of which sample 0: the tokens counted once
        pa.field("kl_sum", pa.float64(), nullable=False),
        pa.field("loss_delta_n", pa.int64(), nullable=False),  # rows with a non-null loss_delta
        pa.field("loss_delta_sum", pa.float64()),  # NULL when loss_delta_n = 0
        pa.field("loss_n", pa.int64(), nullable=False),  # rows with a non-null loss (sae_metrics' CE loss)
        pa.field("loss_sum", pa.float64()),  # NULL when loss_n = 0
    ]
)

SEQUENCE_SUMS_SELECT = """
SELECT run_id, shard_id, sequence, intervention, count(*) AS n, count(*) FILTER (WHERE sample = 0) AS n_sample0,
       sum(kl::DOUBLE) AS kl_sum, count(loss_delta) AS loss_delta_n, sum(loss_delta::DOUBLE) AS loss_delta_sum,
       count(loss) AS loss_n, sum(loss::DOUBLE) AS loss_sum
FROM {interventions}
GROUP BY run_id, shard_id, sequence, intervention
"""

# Fixed log-spaced KL bins of kl_bins: bin b holds KL in [10^(-6 + b/40), 10^(-6 + (b+1)/40)),
# KL clamped into [KL_BIN_FLOOR, KL_BIN_CEIL] first (so bin 0 also holds KL <= 1e-6, zeros
# included, and the last bin KL >= 1e2). 40 per decade so that 10, 20 or 40 bins per decade on
# decade edges (kl_histogram's defaults: 1e-4..1, 10 per decade) re-bin exactly.
KL_BIN_FLOOR = 1e-6
KL_BIN_CEIL = 1e2
KL_BINS_PER_DECADE = 40
KL_BIN_COUNT = 8 * KL_BINS_PER_DECADE  # decades from 1e-6 to 1e2
# Quantiles read off the bins are within one bin of the exact ones: a factor of at most this.
KL_BIN_RATIO = 10 ** (1 / KL_BINS_PER_DECADE)  # ~1.059, i.e. <= 5.9% relative error

# Per (run, shard, intervention, bin) counts of per-token KL over all samples and over sample 0,
# with the least and greatest KL of the bin: quantiles and histograms without the 240M rows.
KL_BINS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("intervention", pa.string(), nullable=False),
        pa.field("bin", pa.int16(), nullable=False),  # 0 .. KL_BIN_COUNT - 1
        pa.field("n", pa.int64(), nullable=False),  # interventions rows in the bin (all samples)
        pa.field("n_sample0", pa.int64(), nullable=False),  # of which sample 0
        pa.field("kl_min", pa.float32(), nullable=False),  # least kl in the bin (all samples)
        pa.field("kl_max", pa.float32(), nullable=False),  # greatest kl in the bin (all samples)
    ]
)


def log_bin(value: str) -> str:
    """SQL: the fixed log-spaced bin (0 .. KL_BIN_COUNT - 1) of a value >= 0, clamped into [KL_BIN_FLOOR,
    KL_BIN_CEIL] first: kl_bins bins KL on this grid, loss_bins |loss_delta|, cos_bins 1 - cos_sim."""
    decades_below_one = round(-math.log10(KL_BIN_FLOOR))
    return (
        f"least({KL_BIN_COUNT - 1}, greatest(0, floor((log10(greatest(({value})::DOUBLE, {KL_BIN_FLOOR}))"
        f" + {decades_below_one}) * {KL_BINS_PER_DECADE})))::SMALLINT"
    )


KL_BINS_SELECT = f"""
SELECT run_id, shard_id, intervention, bin, count(*) AS n, count(*) FILTER (WHERE sample = 0) AS n_sample0,
       min(kl) AS kl_min, max(kl) AS kl_max
FROM (
  SELECT run_id, shard_id, intervention, sample, kl,
         {log_bin("kl")} AS bin
  FROM {{interventions}}
)
GROUP BY run_id, shard_id, intervention, bin
"""

# Per (run, shard, intervention, bin) counts of the sample-0 loss_delta (one per token: the loss
# histogram's values) in signed fixed log-spaced bins: log_bin(loss_delta) for loss_delta >= 0,
# -1 - log_bin(-loss_delta) below 0, with the bin's least, greatest and summed loss_delta. The
# values of one bin lie within a factor KL_BIN_RATIO of each other (|loss_delta| in [1e-6, 1e2]).
LOSS_BINS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("intervention", pa.string(), nullable=False),
        pa.field("bin", pa.int16(), nullable=False),  # -KL_BIN_COUNT .. KL_BIN_COUNT - 1; < 0: loss_delta < 0
        pa.field("n", pa.int64(), nullable=False),  # tokens (sample-0 rows with a loss_delta) in the bin
        pa.field("loss_delta_min", pa.float32(), nullable=False),
        pa.field("loss_delta_max", pa.float32(), nullable=False),
        pa.field("loss_delta_sum", pa.float64(), nullable=False),
    ]
)

LOSS_BINS_SELECT = f"""
SELECT run_id, shard_id, intervention, bin, count(*) AS n, min(loss_delta) AS loss_delta_min,
       max(loss_delta) AS loss_delta_max, sum(loss_delta::DOUBLE) AS loss_delta_sum
FROM (
  SELECT run_id, shard_id, intervention, loss_delta,
         CASE WHEN loss_delta < 0 THEN -1 - {log_bin("-loss_delta")} ELSE {log_bin("loss_delta")} END AS bin
  FROM {{interventions}}
  WHERE sample = 0 AND loss_delta IS NOT NULL
)
GROUP BY run_id, shard_id, intervention, bin
"""

# Per (run, shard, intervention, bin) sums over every draw (all samples) at an intervened token,
# binned on the token's 1 - cos_sim with log_bin (a bin spans a factor KL_BIN_RATIO of 1 - cos_sim):
# sensitivity_curve's KL-against-cos_sim curve without joining the draws to their tokens.
COS_BINS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("intervention", pa.string(), nullable=False),
        pa.field("bin", pa.int16(), nullable=False),  # log_bin(1 - cos_sim)
        pa.field("n", pa.int64(), nullable=False),  # interventions rows (draws, all samples)
        pa.field("n_sample0", pa.int64(), nullable=False),  # of which sample 0: tokens
        pa.field("kl_sum", pa.float64(), nullable=False),
        pa.field("kl_sq_sum", pa.float64(), nullable=False),
        pa.field("cos_sim_sum", pa.float64(), nullable=False),  # over the draws (a draw: its token's cos_sim)
        pa.field("cos_sim_min", pa.float32(), nullable=False),
        pa.field("cos_sim_max", pa.float32(), nullable=False),
    ]
)

COS_BINS_SELECT = f"""
SELECT i.run_id, i.shard_id, i.intervention, {log_bin("1 - t.cos_sim::DOUBLE")} AS bin, count(*) AS n,
       count(*) FILTER (WHERE i.sample = 0) AS n_sample0, sum(i.kl::DOUBLE) AS kl_sum,
       sum(i.kl::DOUBLE * i.kl) AS kl_sq_sum, sum(t.cos_sim::DOUBLE) AS cos_sim_sum,
       min(t.cos_sim) AS cos_sim_min, max(t.cos_sim) AS cos_sim_max
FROM {{interventions}} i JOIN {{tokens}} t USING (run_id, sequence, position)
WHERE t.intervened AND t.cos_sim IS NOT NULL
GROUP BY ALL
"""

# The per-token facts gap_correlates correlates with the gap, summed per (run, shard) in gap_sums.
GAP_SUM_VARIABLES = ("position", "cos_sim", "l0", "norm", "eps")

# Per (run, shard) sums of the intervened tokens' gap y = kl_sae - kl_eps_random (sample 0) and of
# each variable x: n, sum y, sum y^2, sum x, sum x^2, sum x*y over the tokens that have all of
# them. Pearson of the gap with each variable is exact from these (gap_correlates).
GAP_SUMS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("n", pa.int64(), nullable=False),
        pa.field("sy", pa.float64()),
        pa.field("syy", pa.float64()),
        *(pa.field(f"{p}_{v}", pa.float64()) for v in GAP_SUM_VARIABLES for p in ("sx", "sxx", "sxy")),
    ]
)

_GAP_SUMS = ", ".join(
    f"sum({v}) AS sx_{v}, sum({v} * {v}) AS sxx_{v}, sum(kl_gap * {v}) AS sxy_{v}" for v in GAP_SUM_VARIABLES
)
GAP_SUMS_SELECT = f"""
SELECT run_id, shard_id, count(*) AS n, sum(kl_gap) AS sy, sum(kl_gap * kl_gap) AS syy, {_GAP_SUMS}
FROM (
  SELECT run_id, shard_id, (kl_sae - kl_eps_random)::DOUBLE AS kl_gap,
         {", ".join(f"{v}::DOUBLE AS {v}" for v in GAP_SUM_VARIABLES)}
  FROM {{stored_tokens}}
  WHERE intervened AND kl_sae IS NOT NULL AND kl_eps_random IS NOT NULL
    AND {" AND ".join(f"{v} IS NOT NULL" for v in GAP_SUM_VARIABLES)}
)
GROUP BY run_id, shard_id
"""

# Per (shard, run a, run b) sums over the tokens (sequence, position) both runs evaluated with a
# gap: a shard holds every run of its job for the same sequences, so summing these over shards
# gives the exact token-level Pearson of the gap between any two runs of a job (cross_layer).
GAP_PAIR_SUMS_SCHEMA = pa.schema(
    [
        pa.field("shard_id", pa.int64(), nullable=False),
        pa.field("run_a", pa.int64(), nullable=False),
        pa.field("run_b", pa.int64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),  # tokens both runs have
        *(pa.field(name, pa.float64(), nullable=False) for name in ("sa", "sb", "saa", "sbb", "sab")),
    ]
)

_RUN_GAPS = """(
  SELECT run_id, shard_id, sequence, position, (kl_sae - kl_eps_random)::DOUBLE AS gap FROM {stored_tokens}
  WHERE intervened AND kl_sae IS NOT NULL AND kl_eps_random IS NOT NULL
)"""
GAP_PAIR_SUMS_SELECT = f"""
SELECT a.shard_id, a.run_id AS run_a, b.run_id AS run_b, count(*) AS n, sum(a.gap) AS sa, sum(b.gap) AS sb,
       sum(a.gap * a.gap) AS saa, sum(b.gap * b.gap) AS sbb, sum(a.gap * b.gap) AS sab
FROM {_RUN_GAPS} a JOIN {_RUN_GAPS} b USING (shard_id, sequence, position)
GROUP BY a.shard_id, a.run_id, b.run_id
"""

# Per (run, shard) counts of the intervened tokens with a gap (kl_sae and kl_eps_random, sample 0):
# all of them, and those whose SAE KL exceeds eps_random's. verdict's share of tokens where the
# SAE does worse than eps_random, from ~6k rows at seed scale instead of 24M tokens.
GAP_SIGNS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("n", pa.int64(), nullable=False),  # tokens with a gap
        pa.field("n_sae_above", pa.int64(), nullable=False),  # of which kl_sae > kl_eps_random
    ]
)

GAP_SIGNS_SELECT = """
SELECT run_id, shard_id, count(*) AS n, count(*) FILTER (WHERE kl_sae > kl_eps_random) AS n_sae_above
FROM {stored_tokens}
WHERE intervened AND kl_sae IS NOT NULL AND kl_eps_random IS NOT NULL
GROUP BY run_id, shard_id
"""

# Per (run, shard) sums of the intervened tokens' SAE facts: the reconstruction means of
# sae_metrics and compare_saes (l0, cossim, mse, ...) read ~6k rows at seed scale, not 24M tokens.
TOKEN_SUMS_SCHEMA = pa.schema(
    [
        *STORE_KEYS,
        pa.field("n_tokens", pa.int64(), nullable=False),  # intervened tokens
        pa.field("clean_loss_n", pa.int64(), nullable=False),  # of which with a next token (a clean loss)
        pa.field("clean_loss_sum", pa.float64()),
        pa.field("l0_sum", pa.float64()),
        pa.field("l1_sum", pa.float64()),
        pa.field("eps_sq_sum", pa.float64()),  # sum of ||SAE(x) - x||^2
        pa.field("cos_sim_sum", pa.float64()),
        pa.field("l2_ratio_n", pa.int64(), nullable=False),  # tokens with ||x|| > 0
        pa.field("l2_ratio_sum", pa.float64()),  # sum of ||SAE(x)|| / ||x||
    ]
)

TOKEN_SUMS_SELECT = """
SELECT run_id, shard_id, count(*) AS n_tokens,
       count(clean_loss) AS clean_loss_n, sum(clean_loss::DOUBLE) AS clean_loss_sum,
       sum(l0::DOUBLE) AS l0_sum, sum(l1::DOUBLE) AS l1_sum, sum(eps::DOUBLE * eps) AS eps_sq_sum,
       sum(cos_sim::DOUBLE) AS cos_sim_sum,
       count(sae_norm / NULLIF(norm, 0)) AS l2_ratio_n, sum(sae_norm::DOUBLE / NULLIF(norm, 0)) AS l2_ratio_sum
FROM {tokens}
WHERE intervened
GROUP BY run_id, shard_id
"""


# Per (run, shard, sequence, intervention, later layer) sums of the amplification r (docs/method.md §9): the
# engine sums them in its patched passes (no per-token values are stored), the store writes them with the
# shard and replaces them with it. Unlike ROLLUPS they cannot be recomputed from the lake's other tables: a
# lake from before this table gets it empty (its runs have no amplification).
AMPLIFICATION_SUMS_SCHEMA = pa.schema([*STORE_KEYS, *AMPLIFICATION_SCHEMA])
ENGINE_ROLLUPS: dict[str, pa.Schema] = {"amplification_sums": AMPLIFICATION_SUMS_SCHEMA}


RollupSource = Literal["tokens", "interventions", "stored_tokens"]


class Rollup(NamedTuple):
    schema: pa.Schema  # its columns
    sources: tuple[RollupSource, ...]  # what its rows are aggregated from (rollup_sources)
    select: str  # SELECT computing its rows, with a {placeholder} per source


# Rollup table -> how its rows are computed. write_shard inserts each for the shard's rows in
# the shard's transaction (and deletes them with a retried shard's other rows); lake.ensure_relations
# fills a rollup missing from an existing lake once from the lake's tables (LAKE_ROLLUP_SOURCES).
ROLLUPS: dict[str, Rollup] = {
    "intervention_sums": Rollup(INTERVENTION_SUMS_SCHEMA, ("interventions",), INTERVENTION_SUMS_SELECT),
    "sequence_sums": Rollup(SEQUENCE_SUMS_SCHEMA, ("interventions",), SEQUENCE_SUMS_SELECT),
    "kl_bins": Rollup(KL_BINS_SCHEMA, ("interventions",), KL_BINS_SELECT),
    "token_sums": Rollup(TOKEN_SUMS_SCHEMA, ("tokens",), TOKEN_SUMS_SELECT),
    "loss_bins": Rollup(LOSS_BINS_SCHEMA, ("interventions",), LOSS_BINS_SELECT),
    "cos_bins": Rollup(COS_BINS_SCHEMA, ("interventions", "tokens"), COS_BINS_SELECT),
    "gap_sums": Rollup(GAP_SUMS_SCHEMA, ("stored_tokens",), GAP_SUMS_SELECT),
    "gap_pair_sums": Rollup(GAP_PAIR_SUMS_SCHEMA, ("stored_tokens",), GAP_PAIR_SUMS_SELECT),
    "gap_signs": Rollup(GAP_SIGNS_SCHEMA, ("stored_tokens",), GAP_SIGNS_SELECT),
}


# Each token's sample-0 KL and loss_delta of every intervention, as columns of `tokens`: the
# store derives them from the shard's interventions in the shard's transaction, so per-token
# questions (the gap, its correlates, top tokens, cross-layer) read one row per token instead
# of pivoting ten interventions rows per token (BENCHMARKS.md, Store). NULL where the
# intervention was not run or the position has no record (not intervened in all-token scope).
_TOKEN_METRICS = ("kl", "loss_delta")  # interventions columns pivoted into tokens
TOKEN_METRICS_SCHEMA = pa.schema(
    [pa.field(f"{metric}_{name}", pa.float32()) for name in INTERVENTION_NAMES for metric in _TOKEN_METRICS]
)


def _pivot_columns() -> str:
    return ",\n         ".join(
        f"max({metric}) FILTER (WHERE intervention = '{name}') AS {metric}_{name}"
        for name in INTERVENTION_NAMES
        for metric in _TOKEN_METRICS
    )


# The lake's `tokens`: the store's keys, the engine's token columns, the derived metrics.
STORED_TOKEN_SCHEMA = pa.schema([*STORE_KEYS, *TOKEN_SCHEMA, *TOKEN_METRICS_SCHEMA])

# SELECT of `tokens` rows with TOKEN_METRICS_SCHEMA appended, from a relation with the keyed
# token columns ({tokens}) and one with interventions' columns ({interventions}).
TOKENS_WITH_METRICS_SELECT = f"""
SELECT t.*, {", ".join(f"p.{name}" for name in TOKEN_METRICS_SCHEMA.names)}
FROM {{tokens}} t LEFT JOIN (
  SELECT run_id, sequence, position,
         {_pivot_columns()}
  FROM {{interventions}} WHERE sample = 0
  GROUP BY run_id, sequence, position
) p USING (run_id, sequence, position)
"""


def rollup_sources(tokens: str, interventions: str) -> dict[RollupSource, str]:
    """A rollup SELECT's placeholders, given relations with the engine's keyed token columns and
    interventions' columns (a shard's tables at write time): stored_tokens is those tokens with
    TOKEN_METRICS_SCHEMA appended, as the lake's `tokens` holds them."""
    stored = f"({TOKENS_WITH_METRICS_SELECT.format(tokens=tokens, interventions=interventions)})"
    return {"tokens": tokens, "interventions": interventions, "stored_tokens": stored}


# The placeholders when a rollup is filled from a whole lake (its `tokens` carry the metrics already).
LAKE_ROLLUP_SOURCES: dict[RollupSource, str] = {
    "tokens": "tokens", "interventions": "interventions", "stored_tokens": "tokens"
}  # fmt: skip


def table_ddl() -> list[str]:
    """CREATE TABLE statements for the record tables."""
    keyed = lambda s: pa.schema(list(STORE_KEYS) + list(s))  # noqa: E731
    return [
        f"CREATE TABLE IF NOT EXISTS runs ({columns_sql(RUN_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS tokens ({columns_sql(STORED_TOKEN_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS interventions ({columns_sql(keyed(INTERVENTION_SCHEMA))})",
        *(f"CREATE TABLE IF NOT EXISTS {name} ({columns_sql(rollup.schema)})" for name, rollup in ROLLUPS.items()),
        *(f"CREATE TABLE IF NOT EXISTS {name} ({columns_sql(schema)})" for name, schema in ENGINE_ROLLUPS.items()),
    ]


_TOKEN_FACTS = ", ".join(f"t.{f.name}" for f in TOKEN_SCHEMA if f.name not in ("sequence", "position"))
# The views' run columns: RUN_SCHEMA's facts that say which run a row is, job_id through target_position
# (its sizes and fit follow them and stay on `runs`), taken from RUN_SCHEMA so the two cannot drift.
_RUN_FACTS = ", ".join(f"r.{name}" for name in RUN_SCHEMA.names[1 : RUN_SCHEMA.get_field_index("target_position") + 1])

TOKEN_RECORDS_VIEW = f"""
CREATE OR REPLACE VIEW token_records AS
SELECT {_RUN_FACTS}, i.run_id, i.shard_id, i.sequence, i.position, {_TOKEN_FACTS},
       i.intervention, i.sample, i.kl, i.loss, i.loss_delta
FROM interventions i
JOIN tokens t ON t.run_id = i.run_id AND t.sequence = i.sequence AND t.position = i.position
JOIN runs r ON r.run_id = i.run_id
"""


_METRIC_COLUMNS = ", ".join(f"t.{name}" for name in TOKEN_METRICS_SCHEMA.names)
_ANY_KL = ", ".join(f"t.kl_{name}" for name in INTERVENTION_NAMES)

# One row per token with a record (sample 0): the seed's per-token gap. No pivot: the
# per-intervention columns are stored with the token (TOKEN_METRICS_SCHEMA).
TOKEN_GAPS_VIEW = f"""
CREATE OR REPLACE VIEW token_gaps AS
SELECT {_RUN_FACTS}, t.run_id, t.sequence, t.position, {_TOKEN_FACTS},
       {_METRIC_COLUMNS},
       t.kl_sae - t.kl_eps_random AS kl_gap,
       t.kl_sae / NULLIF(t.kl_eps_random, 0) AS kl_ratio,
       t.loss_delta_sae - t.loss_delta_eps_random AS loss_gap
FROM tokens t
JOIN runs r ON r.run_id = t.run_id
WHERE coalesce({_ANY_KL}) IS NOT NULL
"""

RECORD_TABLES: tuple[str, ...] = ("runs", "tokens", "interventions", *ROLLUPS, *ENGINE_ROLLUPS)
VIEW_DDL: tuple[str, ...] = (TOKEN_RECORDS_VIEW, TOKEN_GAPS_VIEW)
