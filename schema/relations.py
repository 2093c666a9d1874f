"""DuckDB DDL of the record relations: tables `runs`, `tokens`, `interventions`, the
rollups `intervention_sums`, `sequence_sums`, `kl_bins` and the views `token_records` and
`token_gaps`. docs/schema.md documents every column.

Column lists are derived from the Arrow schemas in schema/records.py and the
intervention names in schema/spec.py, so no list is kept twice.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import pyarrow as pa

from schema.records import INTERVENTION_SCHEMA, TOKEN_SCHEMA
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
FROM {source}
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
FROM {source}
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

KL_BINS_SELECT = f"""
SELECT run_id, shard_id, intervention, bin, count(*) AS n, count(*) FILTER (WHERE sample = 0) AS n_sample0,
       min(kl) AS kl_min, max(kl) AS kl_max
FROM (
  SELECT run_id, shard_id, intervention, sample, kl,
         least({KL_BIN_COUNT - 1}, greatest(0, floor(
           (log10(greatest(kl::DOUBLE, {KL_BIN_FLOOR})) + 6) * {KL_BINS_PER_DECADE})))::SMALLINT AS bin
  FROM {{source}}
)
GROUP BY run_id, shard_id, intervention, bin
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
FROM {source}
WHERE intervened
GROUP BY run_id, shard_id
"""


class Rollup(NamedTuple):
    source: Literal["interventions", "tokens"]  # the record table its rows are aggregated from
    select: str  # SELECT computing its rows from a relation with that table's columns ({source})


# Rollup table -> how its rows are computed. write_shard inserts each for the shard's rows in
# the shard's transaction; lake.ensure_relations fills a rollup missing from an existing lake
# once from its source table.
ROLLUPS: dict[str, Rollup] = {
    "intervention_sums": Rollup("interventions", INTERVENTION_SUMS_SELECT),
    "sequence_sums": Rollup("interventions", SEQUENCE_SUMS_SELECT),
    "kl_bins": Rollup("interventions", KL_BINS_SELECT),
    "token_sums": Rollup("tokens", TOKEN_SUMS_SELECT),
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


def table_ddl() -> list[str]:
    """CREATE TABLE statements for the record tables."""
    keyed = lambda s: pa.schema(list(STORE_KEYS) + list(s))  # noqa: E731
    return [
        f"CREATE TABLE IF NOT EXISTS runs ({columns_sql(RUN_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS tokens ({columns_sql(STORED_TOKEN_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS interventions ({columns_sql(keyed(INTERVENTION_SCHEMA))})",
        f"CREATE TABLE IF NOT EXISTS intervention_sums ({columns_sql(INTERVENTION_SUMS_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS sequence_sums ({columns_sql(SEQUENCE_SUMS_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS kl_bins ({columns_sql(KL_BINS_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS token_sums ({columns_sql(TOKEN_SUMS_SCHEMA)})",
    ]


_TOKEN_FACTS = ", ".join(f"t.{f.name}" for f in TOKEN_SCHEMA if f.name not in ("sequence", "position"))
_RUN_FACTS = "r.job_id, r.model, r.sae, r.architecture, r.hook_name, r.hook_point, r.layer, r.scope, r.target_position"

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

RECORD_TABLES: tuple[str, ...] = ("runs", "tokens", "interventions", *ROLLUPS)
VIEW_DDL: tuple[str, ...] = (TOKEN_RECORDS_VIEW, TOKEN_GAPS_VIEW)
