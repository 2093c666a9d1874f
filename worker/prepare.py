"""A job's evaluation as plain functions: prepare once per process, then evaluate shards.

The Celery tasks (worker/tasks.py) and the embedded runner call these; tests call
them directly. Nothing here touches the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from schema.config import StoreConfig
from schema.jobs import RunInfo
from schema.spec import JobSpec
from worker.engine import EngineSettings, RunRecords, Target, TokensDone, evaluate_batch
from worker.error_parts import fit_error_maps
from worker.errors import BadInput
from worker.hooks import HookPoint
from worker.interventions import INTERVENTIONS, ErrorMap, fit_activation_stats
from worker.joint import evaluate_joint
from worker.loading import (
    SaeRef,
    as_tensor,
    check_fit,
    check_model_name,
    load_model,
    load_sae,
    load_token_set,
    resolve_device,
    resolve_saes,
    special_token_ids,
)
from worker.token_sources import TokenCache, is_array_name, job_token_set

log = logging.getLogger(__name__)

_LOGIT_CHECK_SEQUENCES = 4  # fit sequences whose full-vocabulary logits are checked finite


@dataclass(frozen=True)
class PreparedJob:
    """Everything a shard needs, loaded once per worker process and job."""

    spec: JobSpec
    model: HookedTransformer
    targets: list[Target]  # key = index into `runs`
    runs: list[RunInfo]
    tokens: Int[np.ndarray, "seq pos"]  # the job's sequences (first n_sequences of the set)
    settings: EngineSettings
    warnings: tuple[str, ...] = ()  # e.g. a bare .npy's unknown tokenizer (worker/token_sources.py)


def prepare_job(spec: JobSpec, store: StoreConfig | None = None) -> PreparedJob:
    """Check the tokens, resolve and load the model and SAEs, check every pairing, fit the baselines.

    The cheap checks (token file, n_sequences, target position) run before anything is
    loaded. Raises BadInput naming the first problem; nothing has been written at that point.
    A tokenized set is cached in `store`'s data dir (None: the store SAEGAP_DATA describes).
    """
    if spec.tokens is not None and is_array_name(spec.tokens):
        job_tokens(spec, load_token_set(spec.tokens))  # a token file's checks, before anything loads
    device = resolve_device(spec.device)
    refs = [ref for entry in spec.saes for ref in resolve_saes(entry)]
    saes = [load_sae(ref, device, spec.dtype) for ref in refs]
    for sae in saes:
        check_model_name(sae, spec.model)  # before paying for the model
    model = cached_model(spec.model, device, spec.dtype, _model_kwargs(saes))
    hooks = [_hook_of(sae) for sae in saes]
    for sae, hook in zip(saes, hooks, strict=True):
        check_fit(sae, hook, model, spec.model)
        if hook.point == "attn_z":
            sae.turn_off_forward_pass_hook_z_reshaping()  # the engine flattens heads itself
    token_set = job_token_set(
        spec.tokens, saes, model, spec.model, TokenCache.of(store or StoreConfig.from_env()),
        text_column=spec.text_column, context_size=spec.context_size, limit=spec.n_sequences,
    )  # fmt: skip
    tokens = job_tokens(spec, token_set.tokens, token_set.source)
    _check_tokens_fit(tokens, model)
    special = tuple(special_token_ids(model))
    fit_acts = fit_activations(model, hooks, tokens[: spec.fit_sequences], special)  # one pass serves both fits
    stats = {name: fit_activation_stats(acts) for name, acts in fit_acts.items()}
    fits = fit_error_maps(saes, hooks, fit_acts)  # per run: e ~ W x + b
    targets = [
        Target(i, sae, hook, replace(stats[hook.name], error_map=fit))
        for i, (sae, hook, fit) in enumerate(zip(saes, hooks, fits, strict=True))
    ]
    runs = [_run_info(spec, *run) for run in zip(refs, saes, hooks, fits, strict=True)]
    if spec.joint:  # the last run: every SAE at once (key len(targets))
        runs.append(_joint_run_info(runs))
    warnings = (token_set.warning,) if token_set.warning else ()
    return PreparedJob(spec, model, targets, runs, tokens, _settings(spec, special), warnings)


def evaluate_shard(
    job: PreparedJob, seq_start: int, seq_end: int, on_tokens: TokensDone | None = None
) -> list[RunRecords]:
    """Records of every run for sequences [seq_start, seq_end) of the job's token set (`on_tokens`: engine.py)."""
    if not 0 <= seq_start < seq_end <= len(job.tokens):
        raise BadInput(f"shard [{seq_start}, {seq_end}) is outside the job's {len(job.tokens)} sequences")
    device = job.model.cfg.device
    tokens = as_tensor(job.tokens[seq_start:seq_end], device)
    ids = torch.arange(seq_start, seq_end, device=device)
    records = evaluate_batch(job.model, job.targets, tokens, ids, job.settings, on_tokens)
    if job.spec.joint:
        records.append(evaluate_joint(job.model, job.targets, tokens, ids, job.settings, key=len(job.targets)))
    return records


def shard_ranges(n_sequences: int, per_shard: int) -> list[tuple[int, int]]:
    return [(start, min(start + per_shard, n_sequences)) for start in range(0, n_sequences, per_shard)]


_MODELS: dict[tuple[Any, ...], HookedTransformer] = {}  # this process's one loaded model


def cached_model(name: str, device: str, dtype: str, kwargs: dict[str, Any]) -> HookedTransformer:
    """One model per worker process (a HookedTransformer going out of scope can keep GPU memory)."""
    key = (name, device, dtype, tuple(sorted(kwargs.items())))
    models = _MODELS
    if key not in models:
        models.clear()
        if device == "cuda":
            torch.cuda.empty_cache()
        log.info("loading model %s on %s (%s)", name, device, dtype)
        models[key] = load_model(name, device, dtype, kwargs)
    return models[key]


def _model_kwargs(saes: list[SAE[Any]]) -> dict[str, Any]:
    """The SAEs' model_from_pretrained_kwargs (e.g. center_writing_weights), which must agree."""
    kwargs = [dict(sae.cfg.metadata.get("model_from_pretrained_kwargs") or {}) for sae in saes]
    if any(k != kwargs[0] for k in kwargs):
        raise BadInput(f"the job's SAEs need the model loaded differently: {kwargs}; split them into separate jobs")
    return kwargs[0]


def _hook_of(sae: SAE[Any]) -> HookPoint:
    hook_name = sae.cfg.metadata.get("hook_name")
    if not hook_name:
        raise BadInput("the SAE's cfg.json has no metadata.hook_name: saegap cannot tell where to splice it")
    return HookPoint.parse(hook_name)


def job_tokens(
    spec: JobSpec, tokens: Int[np.ndarray, "seq pos"], source: str | None = None
) -> Int[np.ndarray, "seq pos"]:
    """The job's sequences of its token set `tokens`, checked against the spec (n_sequences, position)."""
    if spec.n_sequences is not None:
        if spec.n_sequences > len(tokens):
            name = source or spec.tokens
            raise BadInput(f"n_sequences={spec.n_sequences} but token set {name!r} has {len(tokens)} sequences")
        tokens = tokens[: spec.n_sequences]
    if spec.scope.kind == "single_token" and spec.scope.position >= tokens.shape[1]:
        raise BadInput(f"target position {spec.scope.position} is beyond the context of {tokens.shape[1]} tokens")
    return tokens


def _check_tokens_fit(tokens: Int[np.ndarray, "seq pos"], model: HookedTransformer) -> None:
    if tokens.shape[1] > model.cfg.n_ctx:
        raise BadInput(f"sequences of {tokens.shape[1]} tokens exceed the model's context of {model.cfg.n_ctx}")
    if tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab:
        raise BadInput(f"token ids must lie in [0, {model.cfg.d_vocab}) for this model")


def fit_activations(
    model: HookedTransformer, hooks: list[HookPoint], tokens: Int[np.ndarray, "seq pos"], special: tuple[int, ...]
) -> dict[str, Float[Tensor, "n d"]]:
    """Each hook's activations on the fit sequences' non-special tokens, flattened to rows, in float32.

    The baselines' statistics and the error's linear fit both read them. Refuses (BadInput) a
    model whose activations or outputs on these sequences are not finite.
    """
    names = {h.name for h in hooks}
    batch = as_tensor(tokens, model.cfg.device)
    with torch.inference_mode():
        final, cache = model.run_with_cache(batch, names_filter=lambda n: n in names, stop_at_layer=model.cfg.n_layers)
        _check_finite_outputs(model, final, {name: cache[name] for name in names})
    keep = ~torch.isin(batch, torch.tensor(special or (-1,), device=batch.device))  # (B, P)
    by_name = {h.name: h for h in hooks}
    return {name: by_name[name].flatten(cache[name])[keep].float() for name in names}  # (n, d) each


def _check_finite_outputs(
    model: HookedTransformer, final: Float[Tensor, "batch pos d_model"], acts: dict[str, Tensor]
) -> None:
    """The fit batch's hook activations and final residual, and the logits of its first sequences, are finite."""
    bad = [name for name, value in sorted(acts.items()) if not bool(torch.isfinite(value).all())]
    head = final[:_LOGIT_CHECK_SEQUENCES]
    logits = model.unembed(model.ln_final(head) if model.cfg.normalization_type is not None else head)
    if not bool(torch.isfinite(final).all()) or not bool(torch.isfinite(logits).all()):
        bad.append("the model's output logits")
    if bad:
        raise BadInput(
            f"the model gives NaN or infinite values on the fit sequences at {', '.join(bad)}; "
            f"check its weights and dtype"
        )


def _settings(spec: JobSpec, special: tuple[int, ...]) -> EngineSettings:
    return EngineSettings(
        scope=spec.scope,
        interventions={name: INTERVENTIONS[name] for name in spec.interventions},
        samples=spec.samples,
        seed=spec.seed,
        memory_budget=spec.memory_budget_bytes,
        max_tokens_per_pass=spec.max_tokens_per_pass,
        special_token_ids=special,
        mean_ablation_mean=spec.mean_ablation_mean,
    )


def _run_info(spec: JobSpec, ref: SaeRef, sae: SAE[Any], hook: HookPoint, fit: ErrorMap) -> RunInfo:
    single = spec.scope.kind == "single_token"
    return RunInfo(
        model=spec.model,
        sae=ref.name,
        architecture=sae.cfg.architecture(),
        hook_name=hook.name,
        hook_point=hook.point,
        layer=hook.layer,
        scope=spec.scope.kind,
        target_position=spec.scope.position if single else None,
        window=spec.scope.window if single else None,
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        error_ridge=fit.ridge,
        error_linear_r2=fit.r2 if np.isfinite(fit.r2) else None,
    )


def _joint_run_info(runs: list[RunInfo]) -> RunInfo:
    """The joint run (worker/joint.py): hook_point 'joint', the earliest site's layer, the sites in its names."""
    first = min(runs, key=lambda run: run.layer)
    update = {
        "sae": "joint:" + "+".join(run.sae for run in runs),
        "architecture": "joint",
        "hook_name": "joint:" + ",".join(run.hook_name for run in runs),
        "hook_point": "joint",
        "d_sae": sum(run.d_sae for run in runs),
        "error_ridge": None,
        "error_linear_r2": None,
    }
    return first.model_copy(update=update)
