"""Engine benchmark: saegap vs the naive way vs sae_lens run_evals vs the forward-work bound.

All measured in ONE process on the same model, SAEs and tokens (these machines are
shared and noisy: compare ratios from one run, not absolute figures across runs).

- saegap: worker.engine.evaluate_batch over the shards, all ten interventions.
- naive: what the original scripts did: per layer a full clean pass, then per
  intervention a full forward pass from the embeddings with the hook, KL at every
  position.
- bound: the strictly necessary forward work, as plain model passes: one clean pass,
  then every (intervention, sample) batch from its hook's layer on; no SAE, no KL.
- run_evals: sae_lens.evals.run_evals per SAE (KL + CE for the SAE and zero ablation)
  against saegap doing that same work (interventions sae + zero_ablation).
- single token (--single-token): P = 48, W = 16, 100 samples: the full recomputation of
  positions 0..P+W (EngineSettings.reuse_prefix=False, the path before keys were reused),
  saegap (positions P..P+W over the clean keys/values before P), and the bound of the latter
  (a clean pass, then plain block passes over P..P+W with the cached keys/values and logits).
- memory (--memory): peak RSS of one pass over the shards with the job's memory budget,
  measured with resource.getrusage in this process (run one configuration per process).
- before (--before REV): worker/engine.py as it was at git revision REV against today's, on
  the same job: max |KL difference| of their records (all-token, and single-token P = 48,
  W = 16) and their times, alternating.
- gap sources (--gap-sources REV): what issue 16's measurements cost the engine on one job:
  worker/engine.py at REV (before the amplification) with the seed's ten interventions, today's
  with the ten (the amplification alone; also with its hooks made no-ops) and with the ten
  plus the four error parts (error parts and amplification together), all SAEs, all-token
  scope, alternating shard by shard; wall and CPU time, ratios to REV.

    python bench/engine.py --model demo --sae demo-res --sequences 64
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from schema.spec import ERROR_PART_NAMES, SEED_INTERVENTION_NAMES, JobSpec, SingleTokenScope
from worker.engine import (
    EngineSettings,
    PrefixEntry,
    Target,
    encode_decode,
    evaluate_batch,
    intervened_mask,
    unembed_columns,
)
from worker.interventions import INTERVENTIONS, Noise, Splice
from worker.loading import as_tensor
from worker.peers import saelens_kl_and_ce
from worker.prepare import PreparedJob, prepare_job, shard_ranges

REPEATS = 3
ROWS_TOKENS = 16_384  # tokens per plain pass in the bounds (the old default max_tokens_per_pass)
RENAMED_MODULES = {"worker.records": "worker.to_arrow"}  # for --before: modules renamed since (issue 12)
LOGITS_BYTES = 32 * 2**20  # the single-token bound's logits per unembedding call (saegap's chunk size)


def timed(work: Callable[[], object]) -> float:
    """Best of REPEATS wall-clock runs: the least disturbed by other load on a shared machine."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        with torch.inference_mode():
            work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def saegap(job: PreparedJob, targets: list[Target], settings: EngineSettings) -> None:
    for start, end in shard_ranges(len(job.tokens), job.spec.sequences_per_shard):
        tokens = as_tensor(job.tokens[start:end], job.model.cfg.device)
        evaluate_batch(job.model, targets, tokens, torch.arange(start, end, device=tokens.device), settings)


def variants(settings: EngineSettings) -> list[tuple[str, int]]:
    return [(n, k) for n, iv in settings.interventions.items() for k in range(settings.samples if iv.stochastic else 1)]


def naive(job: PreparedJob, targets: list[Target], settings: EngineSettings) -> None:
    """Per layer: a clean pass, then one full forward pass per intervention (the original scripts)."""
    model = job.model
    for start, end in shard_ranges(len(job.tokens), job.spec.sequences_per_shard):
        tokens = as_tensor(job.tokens[start:end], model.cfg.device)
        for target in targets:
            logits, cache = model.run_with_cache(tokens, names_filter=target.hook.name)
            logp = F.log_softmax(logits.float(), -1)
            x = target.hook.flatten(cache[target.hook.name])
            mask = intervened_mask(tokens, settings.scope, settings.special_token_ids)
            b, p = mask.nonzero(as_tuple=True)
            x_hat, _ = encode_decode(target.sae, x[mask])
            splice = Splice(x[mask], x_hat, target.stats, Noise(settings.seed, b + start, p))
            for name, sample in variants(settings):
                patched = x.clone()
                patched[mask] = settings.interventions[name].formula(splice, sample)
                hook_fn = lambda act, hook, patched=patched: patched.reshape(act.shape)  # noqa: E731
                logq = F.log_softmax(model.run_with_hooks(tokens, fwd_hooks=[(target.hook.name, hook_fn)]).float(), -1)
                F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)


def bound(job: PreparedJob, targets: list[Target], settings: EngineSettings) -> None:
    """One clean pass, then each variant batch from its hook's layer: plain passes, nothing else."""
    model, n_variants = job.model, len(variants(settings))
    names = {f"blocks.{t.hook.layer}.hook_resid_pre" for t in targets}
    for start, end in shard_ranges(len(job.tokens), job.spec.sequences_per_shard):
        tokens = as_tensor(job.tokens[start:end], model.cfg.device)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        rows = max(1, ROWS_TOKENS // tokens.shape[1])
        for target in targets:
            resid = cache[f"blocks.{target.hook.layer}.hook_resid_pre"]
            stacked = resid.repeat(n_variants, 1, 1)  # (K * B, P, D)
            for chunk in stacked.split(rows):
                model(chunk, start_at_layer=target.hook.layer)


def with_interventions(settings: EngineSettings, names: tuple[str, ...]) -> EngineSettings:
    return EngineSettings(**{**vars(settings), "interventions": {n: INTERVENTIONS[n] for n in names}})


def saelens_run_evals(job: PreparedJob, targets: list[Target]) -> None:
    tokens = torch.as_tensor(job.tokens).long().to(job.model.cfg.device)
    for target in targets:
        saelens_kl_and_ce(target.sae, job.model, tokens, target.hook.name, job.spec.sequences_per_shard)


def report_scale(job: PreparedJob, label: str, targets: list[Target], run_naive: bool) -> None:
    settings = job.settings
    work = len(job.tokens) * job.tokens.shape[1] * len(targets) * len(variants(settings))
    t_saegap = timed(lambda: saegap(job, targets, settings))
    t_bound = timed(lambda: bound(job, targets, settings))
    line = f"| {label} | {work / t_saegap:,.0f} | {t_saegap:.2f} s | {t_bound:.2f} s ({t_saegap / t_bound:.2f}x) |"
    if run_naive:
        t_naive = timed(lambda: naive(job, targets, settings))
        line += f" {t_naive:.2f} s ({t_naive / t_saegap:.2f}x) | {t_naive / t_bound:.2f}x |"
    else:
        line += " not run | |"
    print(line, flush=True)


def report_run_evals(job: PreparedJob) -> None:
    same_work = with_interventions(job.settings, ("sae", "zero_ablation"))
    t_saegap = timed(lambda: saegap(job, job.targets, same_work))
    t_evals = timed(lambda: saelens_run_evals(job, job.targets))
    print(f"\nrun_evals (KL + CE, SAE + zero ablation, {len(job.targets)} SAEs): saegap {t_saegap:.2f} s, "
          f"run_evals {t_evals:.2f} s, run_evals / saegap = {t_evals / t_saegap:.2f}x")  # fmt: skip


def short_bound(job: PreparedJob, targets: list[Target], settings: EngineSettings) -> None:
    """Single token: a clean pass over 0..P+W, then plain passes over P..P+W from each hook's block with the clean
    keys/values of positions < P, shared by a sequence's variants as saegap shares them (one copy per block:
    worker.engine.PrefixEntry), ln_final and logits (in vocabulary chunks: a 16k-token block's full logits
    are GBs); no SAE, no metrics. Rows are (variant, sequence), variant-major, as saegap's."""
    model, n_variants, scope = job.model, len(variants(settings)), settings.scope
    first, end = scope.position, scope.position + scope.window + 1
    low = min(t.hook.layer for t in targets)
    names = {f"blocks.{t.hook.layer}.hook_resid_pre" for t in targets}
    names |= {f"blocks.{layer}.attn.hook_{kind}" for layer in range(low, model.cfg.n_layers) for kind in "kv"}
    per_block = max(1, ROWS_TOKENS // (end - first) // n_variants)  # sequences per block of rows
    for start, stop in shard_ranges(len(job.tokens), job.spec.sequences_per_shard):
        tokens = as_tensor(job.tokens[start:stop, :end], model.cfg.device)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        for target in targets:
            for s0 in range(0, tokens.shape[0], per_block):
                seqs = slice(s0, min(s0 + per_block, tokens.shape[0]))
                resid = cache[f"blocks.{target.hook.layer}.hook_resid_pre"][seqs, first:].repeat(n_variants, 1, 1)
                for layer in range(target.hook.layer, model.cfg.n_layers):
                    past = (cache[f"blocks.{layer}.attn.hook_{kind}"][seqs, :first] for kind in "kv")
                    entry = PrefixEntry(*past, frozen=True, variants=n_variants)
                    resid = model.blocks[layer](resid, past_kv_cache_entry=entry)  # (k * b, W + 1, d_model)
                _logits_in_chunks(model, model.ln_final(resid).flatten(0, 1))  # (k * b * (W + 1), d_model)


def _logits_in_chunks(model: HookedTransformer, normed: torch.Tensor) -> None:
    """Every row's logits, in vocabulary chunks of at most LOGITS_BYTES over all rows, made as saegap makes them
    (worker.engine.unembed_columns; TransformerLens's unembed copied W_U on each of its many small calls, 44% of
    the bound's time at GPT-2 shapes)."""
    chunk = max(1, LOGITS_BYTES // (normed.shape[0] * 4))
    for c0 in range(0, model.cfg.d_vocab, chunk):
        unembed_columns(model, normed, slice(c0, c0 + chunk))


def report_single_token(job: PreparedJob, target: Target, position: int, window: int, samples: int) -> None:
    """Full recomputation vs reused keys/values vs their bound, alternating (one repeat of each, REPEATS times)."""
    new = replace(job.settings, scope=SingleTokenScope(position=position, window=window), samples=samples)
    old = replace(new, reuse_prefix=False)
    works = {
        "full recomputation": lambda: saegap(job, [target], old),
        "saegap (reused keys/values)": lambda: saegap(job, [target], new),
        "bound (plain passes over P..P+W)": lambda: short_bound(job, [target], new),
    }
    best = {name: float("inf") for name in works}
    for _ in range(REPEATS):
        for name, work in works.items():
            best[name] = min(best[name], timed_once(work))
    n = len(job.tokens) * (window + 1) * len(variants(new))
    t_old, t_new, t_bound = best.values()
    print(f"\nsingle token {target.hook.name}, P = {position}, W = {window}, {samples} samples "
          f"({len(variants(new))} variants), {len(job.tokens)} sequences, load {os.getloadavg()[0]:.1f}:\n"
          f"| path | time | token-interventions/s |\n|---|---|---|\n"
          f"| full recomputation (before) | {t_old:.2f} s ({t_old / t_new:.2f}x saegap) | {n / t_old:,.0f} |\n"
          f"| saegap, reused keys/values | {t_new:.2f} s ({t_new / t_bound:.2f}x bound) | {n / t_new:,.0f} |\n"
          f"| bound over P..P+W | {t_bound:.2f} s | {n / t_bound:,.0f} |", flush=True)  # fmt: skip


def timed_once(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        work()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def report_memory(job: PreparedJob) -> None:
    """Peak RSS of the process (getrusage) over one pass over the shards, against the RSS after loading and the budget.

    The peak may be prepare_job's (its fit pass) when that was higher: the figure bounds the engine's from above."""
    loaded = _current_rss()
    elapsed = timed_once(lambda: saegap(job, job.targets, job.settings))
    peak, budget = _peak_rss(), job.settings.memory_budget
    cfg = job.model.cfg
    print(f"memory: vocabulary {cfg.d_vocab}, d_model {cfg.d_model}, {len(job.tokens)} sequences x "
          f"{job.tokens.shape[1]}, scope {job.spec.scope.kind}, budget {budget / 2**30:.2f} GiB: peak RSS "
          f"{peak / 2**30:.2f} GiB, after loading {loaded / 2**30:.2f} GiB, engine {(peak - loaded) / 2**30:.2f} GiB "
          f"({(peak - loaded) / budget:.0%} of the budget), {elapsed:.1f} s, load {os.getloadavg()[0]:.1f}",
          flush=True)  # fmt: skip


def engine_at(rev: str) -> object:
    """worker/engine.py at git revision `rev`, imported as a module beside today's."""
    source = subprocess.run(["git", "show", f"{rev}:worker/engine.py"], capture_output=True, text=True, check=True)
    path = Path(tempfile.mkdtemp(prefix="saegap-engine-")) / "engine_before.py"
    text = source.stdout
    for old_name, new_name in RENAMED_MODULES.items():
        text = text.replace(f"from {old_name} import", f"from {new_name} import")
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("engine_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine_before"] = module
    spec.loader.exec_module(module)
    return module


def run_all(job: PreparedJob, target: Target, settings: object, evaluate: Callable[..., list]) -> list:
    out = []
    for start, end in shard_ranges(len(job.tokens), job.spec.sequences_per_shard):
        tokens = as_tensor(job.tokens[start:end], job.model.cfg.device)
        ids = torch.arange(start, end, device=tokens.device)
        out += evaluate(job.model, [target], tokens, ids, settings)
    return out


def report_before(job: PreparedJob, rev: str, samples: int) -> None:
    """The engine at `rev` against today's: records' max |KL difference| and alternating times."""
    before = engine_at(rev)
    target = job.targets[len(job.targets) // 2]
    fields = {k: v for k, v in vars(job.settings).items() if k in before.EngineSettings.__dataclass_fields__}
    scopes = {"all tokens": job.settings.scope, "single token P 48 W 16": SingleTokenScope(position=48, window=16)}
    for label, scope in scopes.items():
        draws = 1 if label == "all tokens" else samples
        new = replace(job.settings, scope=scope, samples=draws)
        old = before.EngineSettings(**{**fields, "scope": scope, "samples": draws, "max_tokens_per_pass": ROWS_TOKENS})
        works = {
            "before": lambda old=old: run_all(job, target, old, before.evaluate_batch),
            "today": lambda new=new: run_all(job, target, new, evaluate_batch),
        }
        best, records = {name: float("inf") for name in works}, {}
        for _ in range(REPEATS):
            for name, work in works.items():
                start = time.perf_counter()
                with torch.inference_mode():
                    records[name] = work()
                best[name] = min(best[name], time.perf_counter() - start)
        worst = max(_kl_difference(a, b) for a, b in zip(records["before"], records["today"], strict=True))
        print(f"{label}: {draws} draws, {len(job.tokens)} sequences, max |KL today - KL at {rev}| = {worst:.2e}; "
              f"before {best['before']:.2f} s, today {best['today']:.2f} s "
              f"(today / before = {best['today'] / best['before']:.3f}), load {os.getloadavg()[0]:.1f}",
              flush=True)  # fmt: skip


def report_gap_sources(job: PreparedJob, rev: str) -> None:
    """Engine time of the seed's ten at `rev` against today's ten (with amplification, and with its hooks made
    no-ops) and fourteen: wall and this process's CPU time, the median of REPEATS per shard, summed.

    The four alternate shard by shard (in turn reversed), so a change in the machine's load falls on all
    alike; with --threads 1 the CPU time is the least disturbed by other processes (no spinning threads).
    """
    before = engine_at(rev)
    ten = {name: INTERVENTIONS[name] for name in SEED_INTERVENTION_NAMES}
    fields = {k: v for k, v in vars(job.settings).items() if k in before.EngineSettings.__dataclass_fields__}
    works = {
        f"{rev}, ten": (before.evaluate_batch, before.EngineSettings(**{**fields, "interventions": ten})),
        "today, ten (amplification)": (evaluate_batch, replace(job.settings, interventions=ten)),
        "today, ten, amplification hooks no-ops": (_without_measuring, replace(job.settings, interventions=ten)),
        "today, ten + error parts (both)": (evaluate_batch, job.settings),
    }
    shards = shard_ranges(len(job.tokens), job.spec.sequences_per_shard)
    wall = {name: [[] for _ in shards] for name in works}
    cpu = {name: [[] for _ in shards] for name in works}
    start_load = os.getloadavg()[0]
    for repeat in range(REPEATS):
        for i, (begin, end) in enumerate(shards):
            tokens = as_tensor(job.tokens[begin:end], job.model.cfg.device)
            ids = torch.arange(begin, end, device=tokens.device)
            for name in list(works)[:: 1 if (repeat + i) % 2 == 0 else -1]:
                evaluate, settings = works[name]
                start, start_cpu = time.perf_counter(), time.process_time()
                with torch.inference_mode():
                    evaluate(job.model, job.targets, tokens, ids, settings)
                wall[name][i].append(time.perf_counter() - start)
                cpu[name][i].append(time.process_time() - start_cpu)
    total = {name: (sum(map(np.median, wall[name])), sum(map(np.median, cpu[name]))) for name in works}
    base = total[f"{rev}, ten"]
    print(f"{len(job.targets)} SAEs, {len(job.tokens)} sequences in {len(shards)} shards, all tokens, median of "
          f"{REPEATS} per shard, torch threads {torch.get_num_threads()}, load {start_load:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"| engine | wall | wall / {rev} | CPU | CPU / {rev} |\n|---|---|---|---|---|")
    for name, (seconds, cpu_seconds) in total.items():
        print(f"| {name} | {seconds:.2f} s | {seconds / base[0]:.3f} | {cpu_seconds:.2f} s | "
              f"{cpu_seconds / base[1]:.3f} |", flush=True)  # fmt: skip


def _without_measuring(*args: object) -> list:
    """Today's evaluate_batch with the amplification's resid_post hooks doing nothing (what they cost)."""
    import worker.engine as engine

    measure = engine._measure_hook
    engine._measure_hook = lambda *a: lambda activation, hook: None
    try:
        return evaluate_batch(*args)
    finally:
        engine._measure_hook = measure


def _kl_difference(a: object, b: object) -> float:
    order = [
        ("intervention", "ascending"),
        ("sample", "ascending"),
        ("sequence", "ascending"),
        ("position", "ascending"),
    ]
    x, y = a.interventions.sort_by(order), b.interventions.sort_by(order)
    assert x.num_rows == y.num_rows and x["position"].equals(y["position"])
    return float(np.abs(x["kl"].to_numpy() - y["kl"].to_numpy()).max())


def _current_rss() -> int:
    """Resident set size now (Linux), after loading: the peak so far includes prepare_job's fit pass."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--sae", action="append", default=None, help="repeatable; default demo-res")
    parser.add_argument("--tokens", default="demo")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--per-shard", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-naive", action="store_true", help="the naive loop is slow on big models")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="best of N runs per figure")
    parser.add_argument("--single-token", action="store_true", help="only the single-token row (P 48, W 16)")
    parser.add_argument("--samples", type=int, default=100, help="single token: draws per random intervention")
    parser.add_argument("--memory", action="store_true", help="only the peak-RSS run (all-token, the job's budget)")
    parser.add_argument("--budget", type=int, default=None, help="memory_budget_bytes (default: JobSpec's)")
    parser.add_argument("--before", metavar="REV", help="compare with worker/engine.py at this git revision")
    parser.add_argument("--gap-sources", metavar="REV", help="issue 16's cost: today's engine against REV's")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    globals()["REPEATS"] = args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = {} if args.budget is None else {"memory_budget_bytes": args.budget}
    parts = {"interventions": [*SEED_INTERVENTION_NAMES, *ERROR_PART_NAMES]} if args.gap_sources else {}
    spec = JobSpec(
        model=args.model, saes=args.sae or ["demo-res"], tokens=args.tokens, n_sequences=args.sequences,
        sequences_per_shard=args.per_shard, device=args.device, **budget, **parts,
    )  # fmt: skip
    job = prepare_job(spec)
    if args.gap_sources:
        report_gap_sources(job, args.gap_sources)
        return
    if args.memory:
        report_memory(job)
        return
    if args.before:
        report_before(job, args.before, args.samples)
        return
    if args.single_token:
        report_single_token(job, job.targets[len(job.targets) // 2], 48, 16, args.samples)
        return
    print(f"model {spec.model} on {job.model.cfg.device}, {len(job.targets)} SAEs, {args.sequences} x "
          f"{job.tokens.shape[1]} tokens, {len(variants(job.settings))} interventions, torch threads "
          f"{torch.get_num_threads()}\n")  # fmt: skip
    print("| scale | saegap token-interventions/s | saegap | bound (saegap / bound) | naive (naive / saegap) "
          "| bound's advantage over naive |\n|---|---|---|---|---|---|")  # fmt: skip
    saegap(job, job.targets[:1], job.settings)  # warm-up: first-call allocations and kernel selection
    middle = len(job.targets) // 2
    report_scale(job, f"one layer ({job.targets[middle].hook.name})", job.targets[middle : middle + 1], True)
    report_scale(job, f"all {len(job.targets)} layers", job.targets, not args.skip_naive)
    report_run_evals(job)


if __name__ == "__main__":
    main()
