"""Store benchmark: ingest rate, disk bytes per row and query latency at seed scale.

Writes synthetic records shaped like the seed's job (docs/method.md §1.1: 2M tokens = 16k
sequences x 128 positions, 12 layers, 10 interventions = 240M intervention rows) through
Store.write_shard, then times two reads through schema.read.query:
- per-layer summary: mean KL per layer and intervention;
- token-level cross-layer gap correlation: corr of the per-token KL gap (sae - eps_random)
  between adjacent layers, from tokens' kl_sae/kl_eps_random columns (and once the old way,
  pivoting interventions, for comparison).

    .venv/bin/python bench/store.py --tokens 2000000 --data-dir .work/bench-store

The data dir is kept (analysis timings run on it later); --reuse skips writing.
--data-path s3://bucket/prefix/ puts the Parquet files on S3 (catalog still in --data-dir; the
AWS_* variables as in docs/deploy.md) to compare with the local disk on the same records.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from schema import read
from schema.config import StoreConfig
from schema.records import INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.spec import INTERVENTION_NAMES, JobSpec
from schema.store import Store

log = logging.getLogger("bench.store")
VERSIONS = {"torch": "bench", "transformer_lens": "bench", "sae_lens": "bench", "saegap": "bench"}

# Aggregate by run first, then join the 12-row runs table: joining 240M rows to runs before
# grouping took 5.1 s here, this shape 1.7 s (same result).
LAYER_SUMMARY = """
WITH per_run AS (
  SELECT run_id, intervention, avg(kl) AS mean_kl, avg(loss_delta) AS mean_loss_delta, count(*) AS n
  FROM interventions WHERE sample = 0 GROUP BY run_id, intervention
)
SELECT r.layer, p.intervention, p.mean_kl, p.mean_loss_delta, p.n
FROM per_run p JOIN runs r USING (run_id) ORDER BY r.layer, p.intervention
"""

# The same means from intervention_sums (written with each shard): ~30x fewer rows to scan.
LAYER_SUMMARY_FROM_SUMS = """
WITH per_run AS (
  SELECT run_id, intervention, sum(kl_sum) / sum(n) AS mean_kl,
         sum(loss_delta_sum) / sum(loss_delta_n) AS mean_loss_delta, sum(n) AS n
  FROM intervention_sums GROUP BY run_id, intervention
)
SELECT r.layer, p.intervention, p.mean_kl, p.mean_loss_delta, p.n
FROM per_run p JOIN runs r USING (run_id) ORDER BY r.layer, p.intervention
"""

# The same correlation from tokens' per-intervention columns (one row per token, no pivot).
CROSS_LAYER_GAP_CORR = """
WITH layered AS (
  SELECT r.layer, t.sequence, t.position, t.kl_sae - t.kl_eps_random AS gap FROM tokens t JOIN runs r USING (run_id)
)
SELECT a.layer AS layer_a, b.layer AS layer_b, corr(a.gap, b.gap) AS gap_corr, count(*) AS tokens
FROM layered a JOIN layered b ON b.sequence = a.sequence AND b.position = a.position AND b.layer = a.layer + 1
GROUP BY ALL ORDER BY layer_a
"""

# The first shape: pivoting interventions into one gap per token before the join.
CROSS_LAYER_GAP_CORR_PIVOT = """
WITH gaps AS (
  SELECT run_id, sequence, position,
         max(kl) FILTER (WHERE intervention = 'sae') - max(kl) FILTER (WHERE intervention = 'eps_random') AS gap
  FROM interventions WHERE intervention IN ('sae', 'eps_random') AND sample = 0
  GROUP BY run_id, sequence, position
), layered AS (SELECT r.layer, g.* FROM gaps g JOIN runs r USING (run_id))
SELECT a.layer AS layer_a, b.layer AS layer_b, corr(a.gap, b.gap) AS gap_corr, count(*) AS tokens
FROM layered a JOIN layered b ON b.sequence = a.sequence AND b.position = a.position AND b.layer = a.layer + 1
GROUP BY ALL ORDER BY layer_a
"""

ROW_COUNTS = "SELECT (SELECT count(*) FROM tokens) AS tokens, (SELECT count(*) FROM interventions) AS interventions"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2_000_000, help="token positions per layer (seed: 2M)")
    parser.add_argument("--positions", type=int, default=128, help="context length")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--sequences-per-shard", type=int, default=32)
    parser.add_argument("--data-dir", type=Path, default=Path(".work/bench-store"))
    parser.add_argument("--data-path", help="Parquet location, e.g. s3://bucket/prefix/ (default: DATA_DIR/lake)")
    parser.add_argument("--reuse", action="store_true", help="keep the data dir's records; only time the queries")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each query (best and all reported)")
    return parser.parse_args()


def synthetic_run(rng: np.random.Generator, seq_start: int, seq_end: int, positions: int) -> tuple[pa.Table, pa.Table]:
    """One run's engine tables for sequences [seq_start, seq_end): every position, every intervention."""
    sequence = np.repeat(np.arange(seq_start, seq_end, dtype=np.int32), positions)  # (T,)
    position = np.tile(np.arange(positions, dtype=np.int16), seq_end - seq_start)  # (T,)
    n, k = len(sequence), len(INTERVENTION_NAMES)
    clean = rng.gamma(2.0, 1.5, n).astype(np.float32)
    norm = rng.normal(50, 5, n).astype(np.float32)
    tokens = pa.table(
        {
            "sequence": sequence, "position": position, "token_id": rng.integers(0, 50257, n, dtype=np.int32),
            "token_text": pa.array(np.char.add("t", rng.integers(0, 5000, n).astype(str))), "next_token_id":
            rng.integers(0, 50257, n, dtype=np.int32), "clean_loss": clean, "intervened": np.ones(n, bool),
            "norm": norm, "sae_norm": norm * 0.9, "eps": norm * 0.3,
            "cos_sim": rng.uniform(0.8, 1, n).astype(np.float32),
            "l0": rng.integers(10, 100, n, dtype=np.int32), "l1": rng.gamma(3, 10, n).astype(np.float32),
        },
        schema=TOKEN_SCHEMA,
    )  # fmt: skip
    kl = rng.lognormal(-2.0, 1.0, n * k).astype(np.float32)  # (T * K,), token-major
    delta = (kl * 0.8).astype(np.float32)
    interventions = pa.table(
        {
            "sequence": np.repeat(sequence, k), "position": np.repeat(position, k),
            "intervention": pa.array(np.tile(np.array(INTERVENTION_NAMES), n)).dictionary_encode().cast(pa.string()),
            "sample": np.zeros(n * k, np.int32), "kl": kl, "loss": np.repeat(clean, k) + delta, "loss_delta": delta,
        },
        schema=INTERVENTION_SCHEMA,
    )  # fmt: skip
    return tokens, interventions


def run_meta(layer: int) -> dict:
    return {
        "model": "gpt2-small", "sae": f"gpt2-small-res-jb/blocks.{layer}.hook_resid_pre", "architecture": "standard",
        "hook_name": f"blocks.{layer}.hook_resid_pre", "hook_point": "resid_pre", "layer": layer,
        "scope": "all_tokens", "d_in": 768, "d_sae": 24576,
    }  # fmt: skip


def ingest(store: Store, args: argparse.Namespace) -> dict:
    """Write every shard; time only write_shard (generation excluded)."""
    sequences = args.tokens // args.positions
    job_id = store.create_job(JobSpec(model="gpt2-small", saes=[run_meta(0)["sae"]], tokens="bench"), VERSIONS)
    run_ids = store.add_runs(job_id, [run_meta(layer) for layer in range(args.layers)])
    step = args.sequences_per_shard
    ranges = [(s, min(s + step, sequences)) for s in range(0, sequences, step)]
    rng = np.random.default_rng(0)
    write_seconds, rows = 0.0, 0
    for number, (shard_id, (start, end)) in enumerate(zip(store.add_shards(job_id, ranges), ranges, strict=True)):
        records = {run_id: synthetic_run(rng, start, end, args.positions) for run_id in run_ids}
        began = time.perf_counter()
        written = store.write_shard(job_id, shard_id, records)
        write_seconds += time.perf_counter() - began
        rows += written.rows
        if number % 50 == 0:
            log.info("shard %d/%d: %.2fM rows/s so far", number + 1, len(ranges), rows / write_seconds / 1e6)
    return {"shards": len(ranges), "rows_written": rows, "write_seconds": round(write_seconds, 2),
            "rows_per_second": round(rows / write_seconds)}  # fmt: skip


def disk_bytes(config: StoreConfig) -> int | None:
    """Bytes under the data dir; None when the Parquet files are on S3 (not measured)."""
    if config.uses_s3:
        return None
    files = [p for p in config.data_dir.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def time_query(store: Store, sql: str, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        result = read.query(sql, store=store, timeout_s=600, max_rows=10_000)
        seconds.append(round(time.perf_counter() - began, 3))
    return {"best_s": min(seconds), "runs_s": seconds, "result_rows": result.num_rows}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    config = StoreConfig(data_dir=args.data_dir, data_path=args.data_path)
    if not args.reuse:
        shutil.rmtree(args.data_dir, ignore_errors=True)
    began = time.perf_counter()
    store = Store.open(config)  # on a lake from before intervention_sums, this fills it once
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "open_s": round(time.perf_counter() - began, 2)}
    if not args.reuse:
        report["ingest"] = ingest(store, args)
    counts = read.query(ROW_COUNTS, store=store).to_pylist()[0]
    report["rows"] = counts
    report["disk_bytes"] = disk_bytes(config)
    if report["disk_bytes"] is not None:
        report["bytes_per_row"] = round(report["disk_bytes"] / (counts["tokens"] + counts["interventions"]), 2)
    report["layer_summary"] = time_query(store, LAYER_SUMMARY, args.repeats)
    report["layer_summary_from_sums"] = time_query(store, LAYER_SUMMARY_FROM_SUMS, args.repeats)
    report["cross_layer_gap_corr"] = time_query(store, CROSS_LAYER_GAP_CORR, args.repeats)
    report["cross_layer_gap_corr_pivot"] = time_query(store, CROSS_LAYER_GAP_CORR_PIVOT, 1)
    print(json.dumps(report, indent=2))
    store.close()


if __name__ == "__main__":
    main()
