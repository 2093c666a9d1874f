"""Cost of issue 16's measurements on one job, in ONE process (compare ratios, not absolute times):

- fit: worker.error_parts.fit_error_maps (the ridge fit of every run's error, at prepare time)
  against the rest of prepare_job;
- error parts: worker.engine.evaluate_batch with the seed's ten interventions, then with the
  four error-part interventions added (the job's own choice: they are opt-in);
- joint: worker.joint.evaluate_joint (every SAE at once) against evaluate_batch of the single-site
  runs, both with the same interventions.

    python bench/gap_sources.py --sequences 32
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from schema.spec import ERROR_PART_NAMES, SEED_INTERVENTION_NAMES, JobSpec
from worker.engine import evaluate_batch
from worker.error_parts import fit_error_maps
from worker.interventions import INTERVENTIONS
from worker.joint import evaluate_joint
from worker.loading import as_tensor
from worker.prepare import fit_activations, prepare_job, shard_ranges


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--saes", default="demo-res")
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = JobSpec(saes=[args.saes], n_sequences=args.sequences, device="cpu",
                   interventions=["sae", *SEED_INTERVENTION_NAMES[1:], *ERROR_PART_NAMES])  # fmt: skip
    prepare_s, job = _timed(lambda: prepare_job(spec))
    special = job.settings.special_token_ids
    saes, hooks = [t.sae for t in job.targets], [t.hook for t in job.targets]
    fit_acts = fit_activations(job.model, hooks, job.tokens[: spec.fit_sequences], special)
    fit_s, _ = _timed(lambda: fit_error_maps(saes, hooks, fit_acts))
    print(
        f"prepare_job {prepare_s:.2f}s, of which the error fit ~{fit_s:.2f}s; R² per run:",
        [None if r.error_linear_r2 is None else round(r.error_linear_r2, 4) for r in job.runs],
    )
    seed = replace(job.settings, interventions={n: INTERVENTIONS[n] for n in SEED_INTERVENTION_NAMES})
    both = job.settings

    def engine(settings: object) -> float:
        total = 0.0
        for start, end in shard_ranges(len(job.tokens), spec.sequences_per_shard):
            tokens, ids = as_tensor(job.tokens[start:end], "cpu"), torch.arange(start, end)
            total += _timed(lambda: evaluate_batch(job.model, job.targets, tokens, ids, settings))[0]  # noqa: B023
        return total

    def joint(settings: object) -> tuple[float, list]:
        total, kls = 0.0, []
        for start, end in shard_ranges(len(job.tokens), spec.sequences_per_shard):
            tokens, ids = as_tensor(job.tokens[start:end], "cpu"), torch.arange(start, end)
            seconds, records = _timed(lambda: evaluate_joint(job.model, job.targets, tokens, ids, settings, "j"))  # noqa: B023
            total += seconds
            kls.append(records.interventions.to_pandas())
        return total, kls

    engine(seed)  # warm-up
    seed_s, both_s = engine(seed), engine(both)
    print(f"engine, seed's ten: {seed_s:.2f}s; with the four error parts: {both_s:.2f}s ({both_s / seed_s:.2f}x)")
    joint_s, frames = joint(seed)
    print(f"joint run, seed's ten: {joint_s:.2f}s ({joint_s / seed_s:.2f}x the single-site runs' engine time)")
    frame = frames[0].groupby("intervention").kl.mean()
    print(
        "joint mean KL (first shard):", {k: round(float(v), 4) for k, v in frame.items() if k in ("sae", "eps_random")}
    )
    print("sequences", len(job.tokens), "runs", len(job.targets), "threads", torch.get_num_threads(), np.__name__)


if __name__ == "__main__":
    main()
