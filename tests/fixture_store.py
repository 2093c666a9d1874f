"""A small seeded store with planted answers, for the analysis and UI tests.

`fixture_jobs()` builds the engine's record tables (schema.records) for two jobs;
`build_fixture_store(path)` writes them through the real store API. The PLANTED_*
constants below are what the analysis modules must find; they hold by construction
(exact means and exactly orthogonalised vectors), not because a seed happened to give them.

Job "all": all-token scope, 40 sequences x 8 positions (position 0 is BOS: never
intervened; position 7 has no next token, so no loss), SAE "fixture-a" at layers 0, 1, 2
and a second SAE "fixture-b" on layer 1's hook, every intervention, one sample.
Job "single": single-token scope at position 4 with a window of 3, layer 1, 4 sequences,
interventions sae and eps_random with 50 eps_random draws per position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from schema.records import INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.spec import JobSpec, SingleTokenScope

MODEL = "fixture-model"
SEQUENCES = 40
POSITIONS = 8  # 0 = BOS (not intervened), 7 = last (no next token)
LAYERS = (0, 1, 2)
SAE_A = "fixture-a/blocks.{layer}.hook_resid_pre"
SAE_B = "fixture-b/blocks.1.hook_resid_pre"  # second SAE on layer 1's hook (compare_saes)

# --- planted answers, job "all" ---
PLANTED_KL_RATIO = {0: 2.0, 1: 3.0, 2: 4.0}  # mean KL sae / mean KL eps_random, SAE_A per layer
PLANTED_KL_RATIO_B = 1.5  # the same for SAE_B at layer 1
EPS_KL_MEAN = 0.25  # mean eps_random KL, every run; constant within a sequence
EPS_KL_SEQUENCE_STD = 0.05  # population std of the per-sequence eps_random KL
# Expected 95% bootstrap CI width of mean eps_random KL (normal approximation, sequences resampled):
PLANTED_EPS_CI_WIDTH = 2 * 1.959964 * EPS_KL_SEQUENCE_STD / math.sqrt(SEQUENCES)
GAP_SCALE = 0.05  # kl_gap = (ratio - 1) * EPS_KL_MEAN + GAP_SCALE * g, g centred, unit variance
PLANTED_GAP_POSITION_CORR = 0.5  # Pearson(kl_gap, position), SAE_A layer 0
PLANTED_GAP_COS_CORR = -1.0  # Pearson and Spearman(kl_gap, cos_sim), every SAE_A layer: cos = 0.9 - 0.02 g
PLANTED_CROSS_LAYER_CORR = {(0, 1): 0.8, (0, 2): 0.0}  # Pearson of kl_gap between SAE_A layers
PLANTED_TOP_TOKEN = " zebra"  # top mean kl_gap at layer 2 among tokens seen >= 5 times
ZEBRA_COUNT = 6
RARE_TOKEN = " quokka"  # larger gap than zebra at layer 2 but seen only 3 times
RARE_COUNT = 3
ZERO_ABLATION_KL = 5.0
MEAN_ABLATION_KL = 1e-6  # below any sensible histogram range: lands in the clamped first bin
CLEAN_LOSS = 3.0
SAE_LOSS_DELTA = 0.2
ZERO_ABLATION_LOSS_DELTA = 2.0
# ce_loss_score = (ce_abl - ce_sae) / (ce_abl - ce_clean), docs/method.md §3.6
PLANTED_CE_LOSS_SCORE = (ZERO_ABLATION_LOSS_DELTA - SAE_LOSS_DELTA) / ZERO_ABLATION_LOSS_DELTA
PLANTED_KL_DIV_SCORE = {
    layer: (ZERO_ABLATION_KL - r * EPS_KL_MEAN) / ZERO_ABLATION_KL for layer, r in PLANTED_KL_RATIO.items()
}
# Sensitivity curve: KL of the cos-matched random vectors as a function of the token's cos_sim.
COS_RANDOM_TRUE_NORM_SLOPE = 2.0  # kl = 2.0 * (1 - cos_sim)
COS_RANDOM_SAE_NORM_SLOPE = 2.5

# --- planted answers, job "single" ---
SINGLE_SEQUENCES = 4
TARGET_POSITION = 4
WINDOW = 3
SAMPLES = 50  # eps_random draws per position
DRAW_MEAN = 1.0  # eps_random draws at the target: exactly this mean and sample std
DRAW_STD = 0.1
PLANTED_Z = (3.0, -0.5, 1.0, 0.0)  # SAE KL at the target, per sequence, in draw standard deviations
# Mean KL per offset from the target (0..WINDOW), per intervention (eps_random: over all draws).
PLANTED_DOWNSTREAM = {
    "sae": (DRAW_MEAN + DRAW_STD * float(np.mean(PLANTED_Z)), 0.4, 0.2, 0.1),
    "eps_random": (DRAW_MEAN, 0.2, 0.1, 0.05),
}

VOCAB = ["<|endoftext|>"] + [f" w{i}" for i in range(25)] + [PLANTED_TOP_TOKEN, RARE_TOKEN]
BOS_ID = 0


@dataclass
class FixtureRun:
    """One run's metadata (relations.RUN_SCHEMA minus the ids) and its engine tables."""

    meta: dict[str, Any]
    tokens: pa.Table
    interventions: pa.Table


@dataclass
class FixtureJob:
    name: str
    spec: JobSpec
    runs: list[FixtureRun]


@dataclass
class Fixture:
    """What build_fixture_store returns: the store and the ids it gave the fixture's jobs and runs."""

    store: Any
    job_ids: dict[str, int] = field(default_factory=dict)  # "all" | "single" -> job id
    run_ids: dict[tuple[str, str], int] = field(default_factory=dict)  # (job name, sae) -> run id


def _standard(vector: np.ndarray) -> np.ndarray:
    centred = vector - vector.mean()
    return centred / centred.std()


def _orthogonal_to(vector: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """`vector` centred, with its projections on the (centred) `others` removed, unit variance."""
    result = vector - vector.mean()
    basis: list[np.ndarray] = []
    for other in others:
        direction = other - other.mean()
        for b in basis:
            direction = direction - (direction @ b) * b
        basis.append(direction / np.linalg.norm(direction))
    for b in basis:
        result = result - (result @ b) * b
    return _standard(result)


def _token_ids(rng: np.random.Generator) -> np.ndarray:
    """(SEQUENCES, POSITIONS) token ids: BOS first, common words, zebra x6 and quokka x3 planted."""
    ids = rng.integers(1, 26, size=(SEQUENCES, POSITIONS))  # (S, P)
    ids[:, 0] = BOS_ID
    slots = rng.choice(SEQUENCES * (POSITIONS - 1), size=ZEBRA_COUNT + RARE_COUNT, replace=False)
    body = ids[:, 1:].reshape(-1)  # (S * (P - 1),) view of the intervened positions
    body[slots[:ZEBRA_COUNT]] = VOCAB.index(PLANTED_TOP_TOKEN)
    body[slots[ZEBRA_COUNT:]] = VOCAB.index(RARE_TOKEN)
    ids[:, 1:] = body.reshape(SEQUENCES, POSITIONS - 1)
    return ids


def _gap_directions(rng: np.random.Generator, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Centred unit-variance gap shapes over the intervened tokens, with the planted correlations."""
    n = SEQUENCES * (POSITIONS - 1)
    position = np.tile(np.arange(1, POSITIONS), SEQUENCES).astype(np.float64)  # (T,)
    rho = PLANTED_GAP_POSITION_CORR
    g0 = rho * _standard(position) + math.sqrt(1 - rho**2) * _orthogonal_to(rng.normal(size=n), position)
    w1 = _orthogonal_to(rng.normal(size=n), g0)
    g1 = PLANTED_CROSS_LAYER_CORR[(0, 1)] * g0 + math.sqrt(1 - PLANTED_CROSS_LAYER_CORR[(0, 1)] ** 2) * w1
    body = ids[:, 1:].reshape(-1)  # (T,)
    spike = 6.0 * (body == VOCAB.index(PLANTED_TOP_TOKEN)) + 9.0 * (body == VOCAB.index(RARE_TOKEN))
    g2 = _orthogonal_to(rng.normal(size=n) + spike, g0)  # corr(g0, g2) = 0 exactly
    return {"0": g0, "1": g1, "2": g2, "b": _standard(rng.normal(size=n))}


def planted_tokens(n_sequences: int, n_positions: int) -> pa.Table:
    """Token rows for a planted test store: ids 1-19 from a seed-0 generator, BOS (id 0, not intervened) at
    position 0, cos_sim 0.9 on every intervened token."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, size=(n_sequences, n_positions))
    ids[:, 0] = 0
    intervened = np.arange(n_positions)[None, :].repeat(n_sequences, 0) > 0  # (S, P)
    return _token_table(ids, intervened, np.where(intervened, 0.9, np.nan), rng)


def _token_table(ids: np.ndarray, intervened: np.ndarray, cos_sim: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Engine tokens table for (S, P) ids; cos_sim is (S, P) with NaN where not intervened."""
    n_seq, n_pos = ids.shape
    next_ids = np.concatenate([ids[:, 1:], np.full((n_seq, 1), -1)], axis=1)  # (S, P), -1 = none
    has_next = next_ids >= 0
    norm = np.where(intervened, 10.0 + rng.random(ids.shape), np.nan)
    eps = norm * np.sqrt(np.clip(2 * (1 - cos_sim), 0, None))

    def column(values: np.ndarray, keep: np.ndarray) -> list[Any]:
        return [v.item() if k else None for v, k in zip(values.ravel(), keep.ravel(), strict=True)]

    data = {
        "sequence": np.repeat(np.arange(n_seq), n_pos), "position": np.tile(np.arange(n_pos), n_seq),
        "token_id": ids.ravel(), "token_text": [VOCAB[i] for i in ids.ravel()],
        "next_token_id": column(next_ids, has_next), "clean_loss": column(np.full(ids.shape, CLEAN_LOSS), has_next),
        "intervened": intervened.ravel(), "norm": column(norm, intervened), "sae_norm": column(0.9 * norm, intervened),
        "eps": column(eps, intervened), "cos_sim": column(cos_sim, intervened),
        "l0": column(rng.integers(5, 30, ids.shape), intervened), "l1": column(rng.random(ids.shape) * 40, intervened),
    }  # fmt: skip
    return pa.Table.from_pydict(data, schema=TOKEN_SCHEMA)


def _intervention_table(rows: dict[str, list[Any]]) -> pa.Table:
    return pa.Table.from_pydict(rows, schema=INTERVENTION_SCHEMA)


def _all_token_kls(kl_eps: np.ndarray, kl_sae: np.ndarray, cos_sim: np.ndarray) -> dict[str, np.ndarray]:
    """Per-token KL of every intervention for one run of job "all" (arrays over intervened tokens)."""
    return {
        "sae": kl_sae, "sae_norm_corrected": 0.9 * kl_sae, "norm_only": 0.1 * kl_eps, "eps_random": kl_eps,
        "cos_random_sae_norm": COS_RANDOM_SAE_NORM_SLOPE * (1 - cos_sim),
        "cos_random_true_norm": COS_RANDOM_TRUE_NORM_SLOPE * (1 - cos_sim),
        "zero_ablation": np.full_like(kl_eps, ZERO_ABLATION_KL),
        "mean_ablation": np.full_like(kl_eps, MEAN_ABLATION_KL),
        "eps_cov_random": 1.2 * kl_eps, "eps_real_diff": 1.5 * kl_eps,
    }  # fmt: skip


def _loss_delta(name: str, kl: np.ndarray) -> np.ndarray:
    fixed = {"sae": SAE_LOSS_DELTA, "zero_ablation": ZERO_ABLATION_LOSS_DELTA}
    return np.full_like(kl, fixed[name]) if name in fixed else 0.5 * kl


def _all_token_run(
    ids: np.ndarray, gap: np.ndarray, ratio: float, rng: np.random.Generator
) -> tuple[pa.Table, pa.Table]:
    """Engine tables for one SAE of job "all"; `gap` is the centred unit gap shape over intervened tokens."""
    sequence_z = _standard(np.random.default_rng(1).normal(size=SEQUENCES))  # same eps KL in every run
    kl_eps = np.repeat(EPS_KL_MEAN + EPS_KL_SEQUENCE_STD * sequence_z, POSITIONS - 1)  # (T,) constant per sequence
    kl_sae = kl_eps + (ratio - 1) * EPS_KL_MEAN + GAP_SCALE * gap
    cos_body = 0.9 - 0.02 * gap  # (T,)
    intervened = np.arange(POSITIONS)[None, :].repeat(SEQUENCES, 0) > 0  # (S, P)
    cos_sim = np.full((SEQUENCES, POSITIONS), np.nan)
    cos_sim[:, 1:] = cos_body.reshape(SEQUENCES, POSITIONS - 1)
    tokens = _token_table(ids, intervened, cos_sim, rng)
    sequence = np.repeat(np.arange(SEQUENCES), POSITIONS - 1)
    position = np.tile(np.arange(1, POSITIONS), SEQUENCES)
    has_next = position < POSITIONS - 1
    rows: dict[str, list[Any]] = {name: [] for name in INTERVENTION_SCHEMA.names}
    for name, kl in _all_token_kls(kl_eps, kl_sae, cos_body).items():
        delta = _loss_delta(name, kl)
        rows["sequence"] += sequence.tolist()
        rows["position"] += position.tolist()
        rows["intervention"] += [name] * len(kl)
        rows["sample"] += [0] * len(kl)
        rows["kl"] += kl.tolist()
        rows["loss"] += [CLEAN_LOSS + d if h else None for d, h in zip(delta, has_next, strict=True)]
        rows["loss_delta"] += [d if h else None for d, h in zip(delta, has_next, strict=True)]
    return tokens, _intervention_table(rows)


def _run_meta(sae: str, layer: int, scope: str, target: int | None = None, window: int | None = None) -> dict[str, Any]:
    return {
        "model": MODEL, "sae": sae, "architecture": "standard", "hook_name": f"blocks.{layer}.hook_resid_pre",
        "hook_point": "resid_pre", "layer": layer, "scope": scope, "target_position": target, "window": window,
        "d_in": 16, "d_sae": 64,
    }  # fmt: skip


def _job_all() -> FixtureJob:
    rng = np.random.default_rng(0)
    ids = _token_ids(rng)
    shapes = _gap_directions(rng, ids)
    runs = []
    for layer in LAYERS:
        tokens, interventions = _all_token_run(ids, shapes[str(layer)], PLANTED_KL_RATIO[layer], rng)
        runs.append(FixtureRun(_run_meta(SAE_A.format(layer=layer), layer, "all_tokens"), tokens, interventions))
    tokens, interventions = _all_token_run(ids, shapes["b"], PLANTED_KL_RATIO_B, rng)
    runs.append(FixtureRun(_run_meta(SAE_B, 1, "all_tokens"), tokens, interventions))
    saes = [SAE_A.format(layer=layer) for layer in LAYERS] + [SAE_B]
    spec = JobSpec(model=MODEL, saes=saes, tokens="fixture", n_sequences=SEQUENCES, sequences_per_shard=20)
    return FixtureJob("all", spec, runs)


def _draws(mean: float, std: float, rng: np.random.Generator) -> np.ndarray:
    """SAMPLES values with exactly this mean and sample (ddof=1) standard deviation."""
    z = rng.normal(size=SAMPLES)
    return mean + std * (z - z.mean()) / z.std(ddof=1)


def _single_token_rows(rng: np.random.Generator) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {name: [] for name in INTERVENTION_SCHEMA.names}

    def add(sequence: int, position: int, name: str, kls: np.ndarray) -> None:
        has_next = position < POSITIONS - 1
        rows["sequence"] += [sequence] * len(kls)
        rows["position"] += [position] * len(kls)
        rows["intervention"] += [name] * len(kls)
        rows["sample"] += list(range(len(kls)))
        rows["kl"] += kls.tolist()
        rows["loss"] += [CLEAN_LOSS + 0.5 * k if has_next else None for k in kls]
        rows["loss_delta"] += [0.5 * k if has_next else None for k in kls]

    for sequence in range(SINGLE_SEQUENCES):
        for offset in range(WINDOW + 1):
            position = TARGET_POSITION + offset
            sae_kl = DRAW_MEAN + PLANTED_Z[sequence] * DRAW_STD if offset == 0 else PLANTED_DOWNSTREAM["sae"][offset]
            add(sequence, position, "sae", np.array([sae_kl]))
            draw_std = DRAW_STD if offset == 0 else 0.01
            add(sequence, position, "eps_random", _draws(PLANTED_DOWNSTREAM["eps_random"][offset], draw_std, rng))
    return rows


def _job_single() -> FixtureJob:
    rng = np.random.default_rng(2)
    ids = _token_ids(rng)[:SINGLE_SEQUENCES]
    intervened = np.zeros(ids.shape, dtype=bool)
    intervened[:, TARGET_POSITION] = True
    cos_sim = np.where(intervened, 0.9, np.nan)
    tokens = _token_table(ids, intervened, cos_sim, rng)
    run = FixtureRun(_run_meta(SAE_A.format(layer=1), 1, "single_token", TARGET_POSITION, WINDOW), tokens,
                     _intervention_table(_single_token_rows(rng)))  # fmt: skip
    spec = JobSpec(
        model=MODEL, saes=[run.meta["sae"]], scope=SingleTokenScope(position=TARGET_POSITION, window=WINDOW),
        interventions=["sae", "eps_random"], samples=SAMPLES, tokens="fixture", n_sequences=SINGLE_SEQUENCES,
    )  # fmt: skip
    return FixtureJob("single", spec, [run])


def fixture_jobs() -> list[FixtureJob]:
    """The fixture's two jobs with their runs' engine tables (deterministic)."""
    return [_job_all(), _job_single()]


# Library versions recorded with the fixture's jobs (the store requires them; no worker ran).
FIXTURE_VERSIONS = {"torch": "none", "transformer_lens": "none", "sae_lens": "none", "saegap": "fixture"}


def _shard_slice(table: pa.Table, start: int, end: int) -> pa.Table:
    sequence = table.column("sequence").to_numpy()
    return table.filter(pa.array((sequence >= start) & (sequence < end)))


def _write_job(store: Any, job: FixtureJob, fixture: Fixture) -> None:
    """Create the job and its runs, then write every shard through Store.write_shard."""
    job_id = store.create_job(job.spec, FIXTURE_VERSIONS)
    run_ids = store.add_runs(job_id, [run.meta for run in job.runs])
    fixture.job_ids[job.name] = job_id
    fixture.run_ids.update({(job.name, run.meta["sae"]): rid for run, rid in zip(job.runs, run_ids, strict=True)})
    step = job.spec.sequences_per_shard
    ranges = [(start, min(start + step, job.spec.n_sequences)) for start in range(0, job.spec.n_sequences, step)]
    for shard_id, (start, end) in zip(store.add_shards(job_id, ranges), ranges, strict=True):
        store.start_shard(shard_id, "fixture")
        records = {rid: (_shard_slice(run.tokens, start, end), _shard_slice(run.interventions, start, end))
                   for run, rid in zip(job.runs, run_ids, strict=True)}  # fmt: skip
        written = store.write_shard(job_id, shard_id, records)
        store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)


def build_fixture_store(path: Path) -> Fixture:
    """Open a fresh store under `path` and write the fixture's jobs "all" and "single" into it."""
    from schema.config import StoreConfig
    from schema.store import Store

    store = Store.open(StoreConfig(data_dir=Path(path)))
    fixture = Fixture(store=store)
    for job in fixture_jobs():
        _write_job(store, job, fixture)
    return fixture
