"""DuckDB DDL of the record relations: tables `runs`, `tokens`, `interventions` and the
views `token_records` and `token_gaps`. docs/schema.md documents every column.

Column lists are derived from the Arrow schemas in schema/records.py and the
intervention names in schema/spec.py, so no list is kept twice.
"""

from __future__ import annotations

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
    ]
)

# Columns the store adds to the engine's record tables.
STORE_KEYS = pa.schema(
    [pa.field("run_id", pa.int64(), nullable=False), pa.field("shard_id", pa.int64(), nullable=False)]
)


def _columns_sql(schema: pa.Schema) -> str:
    return ", ".join(f'"{f.name}" {_DUCKDB_TYPES[f.type]}' for f in schema)


def table_ddl() -> list[str]:
    """CREATE TABLE statements for the three record tables."""
    keyed = lambda s: pa.schema(list(STORE_KEYS) + list(s))  # noqa: E731
    return [
        f"CREATE TABLE IF NOT EXISTS runs ({_columns_sql(RUN_SCHEMA)})",
        f"CREATE TABLE IF NOT EXISTS tokens ({_columns_sql(keyed(TOKEN_SCHEMA))})",
        f"CREATE TABLE IF NOT EXISTS interventions ({_columns_sql(keyed(INTERVENTION_SCHEMA))})",
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


def _pivot_columns() -> str:
    kls = [f"max(kl) FILTER (WHERE intervention = '{name}') AS kl_{name}" for name in INTERVENTION_NAMES]
    losses = [
        f"max(loss_delta) FILTER (WHERE intervention = '{name}') AS loss_delta_{name}" for name in ("sae", "eps_random")
    ]
    return ",\n       ".join(kls + losses)


# One row per intervened token, sample 0: the seed's per-token gap.
TOKEN_GAPS_VIEW = f"""
CREATE OR REPLACE VIEW token_gaps AS
WITH pivoted AS (
  SELECT run_id, sequence, position,
       {_pivot_columns()}
  FROM interventions WHERE sample = 0
  GROUP BY run_id, sequence, position
)
SELECT {_RUN_FACTS}, p.run_id, p.sequence, p.position, {_TOKEN_FACTS},
       p.* EXCLUDE (run_id, sequence, position),
       p.kl_sae - p.kl_eps_random AS kl_gap,
       p.kl_sae / NULLIF(p.kl_eps_random, 0) AS kl_ratio,
       p.loss_delta_sae - p.loss_delta_eps_random AS loss_gap
FROM pivoted p
JOIN tokens t ON t.run_id = p.run_id AND t.sequence = p.sequence AND t.position = p.position
JOIN runs r ON r.run_id = p.run_id
"""

VIEW_DDL: tuple[str, ...] = (TOKEN_RECORDS_VIEW, TOKEN_GAPS_VIEW)
