"""Time every analysis module on synthetic records at (up to) the seed's scale.

    .venv/bin/python -m bench.analysis --data-dir .work/bench-analysis --tokens 2000000 --layers 12
    .venv/bin/python -m bench.analysis --data-dir .work/bench-store --job 1   # bench/store.py's data

(Run it as a module: as a script, bench/ comes first on sys.path and this file would
shadow the `analysis` package.)

The seed's scale is 2M tokens (16k sequences x 128) x 12 layers x 10 interventions =
240M intervention rows. Generated records go through the real store API (write_shard),
one shard per `--sequences-per-shard` sequences covering all layers, like the engine.
KL values are lognormal with per-sequence and per-token factors shared across layers, so
the gap correlates, cross-layer correlations and top tokens have something to find.
Each module runs --repeats times on its default parameters (filtered to the job); the
median is reported. Speed targets live in BENCHMARKS.md, not in tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.registry import MODULES
from schema import read
from schema.config import StoreConfig
from schema.records import INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.spec import INTERVENTION_NAMES, JobSpec, SingleTokenScope
from schema.store import Store

log = logging.getLogger("bench.analysis")
POSITIONS = 128
TARGET, WINDOW = 48, 16  # single-token job: the seed's sigma-test position, and the 16 positions after
VERSIONS = {"torch": "none", "transformer_lens": "none", "sae_lens": "none", "saegap": "bench"}
VOCAB = pa.array([f" t{i}" for i in range(5000)])
RATIO = {"sae": 3.0, "sae_norm_corrected": 2.5, "norm_only": 0.3, "eps_random": 1.0, "cos_random_sae_norm": 1.1,
         "cos_random_true_norm": 1.0, "zero_ablation": 40.0, "mean_ablation": 10.0, "eps_cov_random": 1.3,
         "eps_real_diff": 1.6, "sae_error_linear": 2.0, "sae_error_nonlinear": 1.5, "eps_random_linear": 0.8,
         "eps_random_nonlinear": 0.6}  # fmt: skip  # mean KL relative to eps_random


def _tokens(rng: np.random.Generator, start: int, n_seq: int, token_ids: np.ndarray, cos: np.ndarray) -> pa.Table:
    """Engine tokens table for sequences [start, start + n_seq): BOS at position 0 is not intervened."""
    n = n_seq * POSITIONS
    position = np.tile(np.arange(POSITIONS, dtype=np.int16), n_seq)
    intervened = position > 0
    next_ids = np.roll(token_ids, -1)
    has_next = position < POSITIONS - 1
    mask = ~intervened
    norm = rng.uniform(50, 150, n).astype(np.float32)
    clean_loss = rng.gamma(2.0, 1.5, n).astype(np.float32)
    l1 = rng.gamma(5.0, 4.0, n).astype(np.float32)
    columns = {
        "sequence": np.repeat(np.arange(start, start + n_seq, dtype=np.int32), POSITIONS), "position": position,
        "token_id": token_ids, "token_text": VOCAB.take(pa.array(token_ids)),
        "next_token_id": pa.array(next_ids, mask=~has_next), "clean_loss": pa.array(clean_loss, mask=~has_next),
        "intervened": intervened, "norm": pa.array(norm, mask=mask), "sae_norm": pa.array(norm * 0.9, mask=mask),
        "eps": pa.array(norm * np.sqrt(2 * (1 - cos)), mask=mask), "cos_sim": pa.array(cos, mask=mask),
        "l0": pa.array(rng.integers(10, 100, n, dtype=np.int32), mask=mask), "l1": pa.array(l1, mask=mask),
    }  # fmt: skip
    return pa.Table.from_pydict(columns, schema=TOKEN_SCHEMA)


def _interventions(rng: np.random.Generator, start: int, n_seq: int, base: np.ndarray, layer: int) -> pa.Table:
    """Engine interventions table: one row per intervened token and intervention (sample 0)."""
    keep = np.tile(np.arange(POSITIONS) > 0, n_seq)  # (S * P,) intervened positions
    sequence = np.repeat(np.arange(start, start + n_seq, dtype=np.int32), POSITIONS)[keep]
    position = np.tile(np.arange(POSITIONS, dtype=np.int16), n_seq)[keep]
    kl_eps = base[keep] * (0.02 + 0.01 * layer)
    parts = []
    for name in INTERVENTION_NAMES:
        kl = (kl_eps * RATIO[name] * rng.lognormal(0.0, 0.3, len(kl_eps))).astype(np.float32)
        delta = (0.5 * kl + rng.normal(0, 0.01, len(kl))).astype(np.float32)
        has_next = position < POSITIONS - 1
        parts.append(pa.Table.from_pydict({
            "sequence": sequence, "position": position, "intervention": pa.array([name] * len(kl)),
            "sample": np.zeros(len(kl), np.int32), "kl": kl, "loss": pa.array(delta + 3.0, mask=~has_next),
            "loss_delta": pa.array(delta, mask=~has_next),
        }, schema=INTERVENTION_SCHEMA))  # fmt: skip
    return pa.concat_tables(parts)


def _shard_records(seed: int, start: int, n_seq: int, run_ids: list[int]) -> dict[int, tuple[pa.Table, pa.Table]]:
    rng = np.random.default_rng(seed)
    n = n_seq * POSITIONS
    token_ids = rng.zipf(1.3, n).clip(max=len(VOCAB) - 1).astype(np.int32)  # heavy-tailed, like text
    shared = rng.lognormal(0.0, 0.8, n_seq).repeat(POSITIONS) * rng.lognormal(0.0, 0.6, n)  # across layers
    records = {}
    for layer, run_id in enumerate(run_ids):
        cos = np.clip(rng.normal(0.93 - 0.01 * layer, 0.03, n), 0.5, 0.999).astype(np.float32)
        base = shared * rng.lognormal(0.0, 0.4, n)
        records[run_id] = (_tokens(rng, start, n_seq, token_ids, cos), _interventions(rng, start, n_seq, base, layer))
    return records


def generate(store: Store, n_tokens: int, n_layers: int, sequences_per_shard: int) -> int:
    """Write one synthetic all-token job of n_tokens (rounded to whole sequences) x n_layers; returns its id."""
    n_seq = max(2, n_tokens // POSITIONS)
    saes = [f"bench/blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    spec = JobSpec(model="bench", saes=saes, tokens="bench", n_sequences=n_seq, sequences_per_shard=sequences_per_shard)
    job_id = store.create_job(
        spec, {"torch": "none", "transformer_lens": "none", "sae_lens": "none", "saegap": "bench"}
    )
    runs = [{"model": "bench", "sae": sae, "architecture": "standard", "hook_name": sae.split("/")[1],
             "hook_point": "resid_pre", "layer": layer, "scope": "all_tokens", "d_in": 768, "d_sae": 24576}
            for layer, sae in enumerate(saes)]  # fmt: skip
    run_ids = store.add_runs(job_id, runs)
    ranges = [(s, min(s + sequences_per_shard, n_seq)) for s in range(0, n_seq, sequences_per_shard)]
    started = time.perf_counter()
    for shard_id, (start, end) in zip(store.add_shards(job_id, ranges), ranges, strict=True):
        store.start_shard(shard_id, "bench")
        written = store.write_shard(job_id, shard_id, _shard_records(shard_id, start, end - start, run_ids))
        store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)
        log.info("shard %d: sequences %d-%d, %d rows", shard_id, start, end, written.rows)
    log.info(
        "generated job %d: %d sequences x %d layers in %.1f s", job_id, n_seq, n_layers, time.perf_counter() - started
    )
    return job_id


def _single_token_records(rng: np.random.Generator, start: int, n_seq: int, run_id: int, samples: int) -> dict:
    """One run's records: target TARGET intervened, KL read there and WINDOW positions on, `samples` draws."""
    token_ids = rng.zipf(1.3, n_seq * POSITIONS).clip(max=len(VOCAB) - 1).astype(np.int32)
    cos = np.full(n_seq * POSITIONS, 0.92, np.float32)
    tokens = _tokens(rng, start, n_seq, token_ids, cos)
    intervened = (tokens.column("position").to_numpy() == TARGET).tolist()
    tokens = tokens.set_column(tokens.schema.get_field_index("intervened"), "intervened", pa.array(intervened))
    offsets = np.arange(WINDOW + 1)
    per_token = {"sae": 1, "eps_random": samples}
    parts = []
    for name, draws in per_token.items():
        n = n_seq * len(offsets) * draws  # rows: sequence x offset x sample
        kl = rng.lognormal(-2.0 + (name == "sae"), 0.5, n) / np.tile(np.repeat(offsets + 1.0, draws), n_seq)
        parts.append(pa.Table.from_pydict({
            "sequence": np.repeat(np.arange(start, start + n_seq, dtype=np.int32), len(offsets) * draws),
            "position": np.tile(np.repeat((TARGET + offsets).astype(np.int16), draws), n_seq),
            "intervention": pa.array([name] * n),
            "sample": np.tile(np.arange(draws, dtype=np.int32), n_seq * len(offsets)),
            "kl": kl.astype(np.float32), "loss": (3.0 + 0.5 * kl).astype(np.float32),
            "loss_delta": (0.5 * kl).astype(np.float32),
        }, schema=INTERVENTION_SCHEMA))  # fmt: skip
    return {run_id: (tokens, pa.concat_tables(parts))}


def generate_single_token(store: Store, n_seq: int, samples: int, sequences_per_shard: int) -> int:
    """A single-token job at layer 6 (the seed's sigma test): `samples` eps_random draws per position."""
    sae = "bench/blocks.6.hook_resid_pre"
    scope = SingleTokenScope(position=TARGET, window=WINDOW)
    spec = JobSpec(model="bench", saes=[sae], scope=scope, interventions=["sae", "eps_random"], samples=samples,
                   tokens="bench", n_sequences=n_seq, sequences_per_shard=sequences_per_shard)  # fmt: skip
    job_id = store.create_job(spec, VERSIONS)
    run = {"model": "bench", "sae": sae, "architecture": "standard", "hook_name": "blocks.6.hook_resid_pre",
           "hook_point": "resid_pre", "layer": 6, "scope": "single_token", "target_position": TARGET, "window": WINDOW,
           "d_in": 768, "d_sae": 24576}  # fmt: skip
    (run_id,) = store.add_runs(job_id, [run])
    rng = np.random.default_rng(job_id)
    ranges = [(s, min(s + sequences_per_shard, n_seq)) for s in range(0, n_seq, sequences_per_shard)]
    for shard_id, (start, end) in zip(store.add_shards(job_id, ranges), ranges, strict=True):
        store.start_shard(shard_id, "bench")
        written = store.write_shard(job_id, shard_id, _single_token_records(rng, start, end - start, run_id, samples))
        store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)
    log.info("generated single-token job %d: %d sequences x %d draws", job_id, n_seq, samples)
    return job_id


def time_modules(store: Store, job_id: int, repeats: int, names: list[str]) -> dict[str, tuple[float, int]]:
    """Median wall seconds and row count of each named module's default answer for the job."""
    started = time.perf_counter()
    read.query("SELECT count(*) FROM runs", store=store)  # start the read processes: not any module's time
    log.info("first query (read processes started) %.2f s", time.perf_counter() - started)
    results = {}
    for name in names:
        module = MODULES[name]
        seconds, rows = [], 0
        for _ in range(repeats):
            started = time.perf_counter()
            rows = module(module.params(job=job_id), store=store).num_rows
            seconds.append(time.perf_counter() - started)
        results[name] = (statistics.median(seconds), rows)
        log.info("%-18s %7.2f s  %d rows", name, results[name][0], rows)
    return results


TOKENS_SQL = "SELECT count(*) AS n FROM tokens WHERE run_id IN (SELECT run_id FROM runs WHERE job_id = $job)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".work/bench-analysis"))
    parser.add_argument("--tokens", type=int, default=2_000_000, help="tokens per layer (seed: 2M)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--sequences-per-shard", type=int, default=512)
    parser.add_argument("--job", type=int, help="time this existing job (nothing is generated)")
    parser.add_argument("--single-job", type=int, help="with --job: also time this existing single-token job")
    parser.add_argument("--single-sequences", type=int, default=1000, help="sequences of the single-token job")
    parser.add_argument("--samples", type=int, default=500, help="eps_random draws per position (seed: 500)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modules", help="comma-separated module names (default: every registered module)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with Store.open(StoreConfig(data_dir=args.data_dir)) as store:
        if args.job:  # an existing store (e.g. bench/store.py's): time what is there, write nothing
            jobs = [args.job, *([args.single_job] if args.single_job else [])]
        else:
            jobs = [generate(store, args.tokens, args.layers, args.sequences_per_shard),
                    generate_single_token(store, args.single_sequences, args.samples, 100)]  # fmt: skip
        for job in jobs:
            spec = store.get_job(job).spec
            results = time_modules(store, job, args.repeats, args.modules.split(",") if args.modules else list(MODULES))
            runs = len(store.job_run_ids(job))  # the spec may name one SAE release's pattern: count the runs
            tokens = read.query(TOKENS_SQL, {"job": job}, store=store).column("n")[0].as_py()
            print(f"job {job} ({spec.scope.kind}): {runs} runs, {tokens:,} token rows, {spec.samples} samples")
            print("| module | median s | rows |\n|---|---:|---:|")
            for name, (seconds, count) in results.items():
                print(f"| {name} | {seconds:.2f} | {count} |")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
