"""The evaluation engine: model + SAEs + a token batch in, per-token Arrow records out.

For one batch: one clean pass caches the activations at every hook the job evaluates
(and the residual stream before each hook's block); then, per SAE, every intervention
variant (intervention x sample) is spliced in with a TransformerLens hook and the model
is re-run from that block on (`start_at_layer`), many variants stacked in the batch
dimension up to a token budget. KL(P_clean || Q) over the full vocabulary and the CE
loss are computed only at the positions that are recorded (docs/method.md §3).

It knows nothing of databases or queues: see worker/evaluate.py for the job-level loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities.activation_functions import apply_softcap

from schema.spec import AllTokenScope, MeanAblationMean, SingleTokenScope
from worker.errors import BadInput
from worker.hooks import HookPoint
from worker.interventions import ActivationStats, Intervention, Noise, Splice
from worker.records import intervention_table, token_table


@dataclass(frozen=True)
class EngineSettings:
    scope: AllTokenScope | SingleTokenScope
    interventions: Mapping[str, Intervention]
    samples: int
    seed: int
    max_tokens_per_pass: int
    special_token_ids: tuple[int, ...]
    mean_ablation_mean: MeanAblationMean = "fit_tokens"  # "batch_with_bos": see batch_means


@dataclass(frozen=True)
class Target:
    """One SAE spliced at the hook it reads; `key` names the run in the output."""

    key: Any
    sae: SAE[Any]
    hook: HookPoint
    stats: ActivationStats


@dataclass(frozen=True)
class RunRecords:
    key: Any
    tokens: pa.Table  # schema.records.TOKEN_SCHEMA
    interventions: pa.Table  # schema.records.INTERVENTION_SCHEMA


@dataclass(frozen=True)
class Window:
    """Which prefix of each sequence is run and which positions are recorded."""

    length: int  # positions fed to the model (single-token: cut after P + W)
    recorded: Int[Tensor, " r"]  # positions whose KL/loss are recorded

    @classmethod
    def for_scope(cls, scope: AllTokenScope | SingleTokenScope, context: int) -> Window:
        if isinstance(scope, AllTokenScope):
            return cls(length=context, recorded=torch.arange(context))
        if scope.position >= context:
            raise BadInput(f"target position {scope.position} is beyond the context of {context} tokens")
        length = min(scope.position + scope.window + 1, context)
        return cls(length=length, recorded=torch.arange(scope.position, length))


@dataclass(frozen=True)
class CleanPass:
    tokens: Int[Tensor, "batch pos"]  # the prefix that was run
    recorded: Int[Tensor, " rec"]  # recorded positions
    next_tokens: Int[Tensor, "batch rec"]  # -1 where the context ends
    logp: Float[Tensor, "batch rec vocab"]  # clean log-probs at recorded positions
    acts: dict[str, Tensor]  # hook name -> clean activation; includes resid_pre of each start layer


def evaluate_batch(
    model: HookedTransformer,
    targets: Sequence[Target],
    tokens: Int[Tensor, "batch pos"],
    sequence_ids: Int[Tensor, " batch"],
    settings: EngineSettings,
) -> list[RunRecords]:
    """Records for every target on one batch of sequences (`sequence_ids` index the token set)."""
    if tokens.numel() == 0:
        raise BadInput("empty batch: no sequences to evaluate")
    window = Window.for_scope(settings.scope, tokens.shape[1])
    with torch.inference_mode():
        clean = clean_pass(model, tokens, window, targets)
        if settings.mean_ablation_mean == "batch_with_bos":
            means = batch_means(model, tokens, targets, clean)
            targets = [replace(t, stats=replace(t.stats, mean=means[t.hook.name])) for t in targets]
        return [_evaluate_target(model, target, clean, window, sequence_ids, settings) for target in targets]


def clean_pass(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"], window: Window, targets: Sequence[Target]
) -> CleanPass:
    """One forward pass caching every target's activation and its block's input residual."""
    prefix = tokens[:, : window.length]
    names = {t.hook.name for t in targets} | {_resid_pre(t.hook.layer) for t in targets}
    final_resid, cache = model.run_with_cache(
        prefix, names_filter=lambda n: n in names, stop_at_layer=model.cfg.n_layers
    )
    recorded = window.recorded.to(tokens.device)
    next_positions = recorded + 1
    next_tokens = torch.full((tokens.shape[0], len(recorded)), -1, dtype=torch.long, device=tokens.device)
    has_next = next_positions < tokens.shape[1]
    next_tokens[:, has_next] = tokens[:, next_positions[has_next]]
    logp = _log_probs_at(model, final_resid, recorded)
    return CleanPass(prefix, recorded, next_tokens, logp, {name: cache[name] for name in names})


def batch_means(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"], targets: Sequence[Target], clean: CleanPass
) -> dict[str, Float[Tensor, " d"]]:
    """Each hook's mean activation over every position of the batch, BOS and other special tokens included.

    This is the original scripts' mean_ablation mean, taken per batch over the whole context:
    a single-token window ran only a prefix, so the hooks are re-run on the full sequences.
    """
    acts: Mapping[str, Tensor] = clean.acts
    if clean.tokens.shape[1] < tokens.shape[1]:
        names = {t.hook.name for t in targets}
        last = max(t.hook.layer for t in targets)
        _, acts = model.run_with_cache(tokens, names_filter=lambda n: n in names, stop_at_layer=last + 1)
    means = {}
    for t in targets:
        x = t.hook.flatten(acts[t.hook.name]).flatten(0, 1)  # (B * P, D)
        means[t.hook.name] = x.double().mean(0).float()  # float32, as the fitted statistics
    return means


def _resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def _log_probs_at(
    model: HookedTransformer, final_resid: Float[Tensor, "batch pos d_model"], positions: Int[Tensor, " rec"]
) -> Float[Tensor, "batch rec vocab"]:
    """ln_final + unembed only where recorded: exact, since both act position by position."""
    resid = final_resid[:, positions]  # (B, R, D)
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    logits = apply_softcap(model.unembed(resid), model.cfg.output_logits_soft_cap)
    return F.log_softmax(logits.float(), dim=-1)


def intervened_mask(
    tokens: Int[Tensor, "batch pos"], scope: AllTokenScope | SingleTokenScope, special_ids: Sequence[int]
) -> Bool[Tensor, "batch pos"]:
    """Positions whose activation is replaced."""
    if isinstance(scope, SingleTokenScope):
        return torch.arange(tokens.shape[1], device=tokens.device).eq(scope.position).expand_as(tokens)
    if scope.include_special_tokens or not special_ids:
        return torch.ones_like(tokens, dtype=torch.bool)
    return ~torch.isin(tokens, torch.tensor(list(special_ids), device=tokens.device))


def encode_decode(sae: SAE[Any], x: Float[Tensor, "n d"]) -> tuple[Float[Tensor, "n d"], Float[Tensor, "n d_sae"]]:
    """SAE(x) and its latents, with the SAE's own run-time normalisation applied and undone (as SAELens does)."""
    latents = sae.encode(x.to(sae.dtype))
    return sae.decode(latents).to(x.dtype), latents


def _evaluate_target(
    model: HookedTransformer,
    target: Target,
    clean: CleanPass,
    window: Window,
    sequence_ids: Int[Tensor, " batch"],
    settings: EngineSettings,
) -> RunRecords:
    x = target.hook.flatten(clean.acts[target.hook.name])  # (B, E, D)
    if not torch.isfinite(x).all():
        raise BadInput(f"non-finite (NaN/inf) activations at {target.hook.name}; check the model and tokens")
    mask = intervened_mask(clean.tokens, settings.scope, settings.special_token_ids)
    b_idx, p_idx = mask.nonzero(as_tuple=True)
    x_hat, latents = encode_decode(target.sae, x[mask])
    splice = Splice(x[mask], x_hat, target.stats, Noise(settings.seed, sequence_ids[b_idx], p_idx))
    variants = [(name, k) for name, iv in settings.interventions.items() for k in range(_draws(iv, settings))]
    replacements = torch.stack([settings.interventions[name].formula(splice, k) for name, k in variants])  # (K, N, D)
    kl, loss = _patched_metrics(model, target.hook, clean, mask, replacements, settings.max_tokens_per_pass)
    recorded = clean.recorded
    clean_loss = _token_loss(clean.logp, clean.next_tokens)  # (B, R)
    metrics = {name: values[:, recorded] for name, values in _token_metrics(splice, latents, mask).items()}
    tokens_table = token_table(
        model.tokenizer, sequence_ids, recorded, clean.tokens[:, recorded], clean.next_tokens, clean_loss,
        mask[:, recorded], metrics,
    )  # fmt: skip
    counted = _counted(mask, window, settings.scope)
    interventions_table = intervention_table(variants, sequence_ids, recorded, counted, kl, loss, clean_loss)
    return RunRecords(target.key, tokens_table, interventions_table)


def _token_metrics(
    splice: Splice, latents: Float[Tensor, "n d_sae"], mask: Bool[Tensor, "batch pos"]
) -> dict[str, Float[Tensor, "batch pos"]]:
    """Per-token SAE facts (schema.records.TOKEN_SCHEMA names), scattered back to (B, E)."""
    per_token = {
        "norm": splice.norm[:, 0],
        "sae_norm": splice.sae_norm[:, 0],
        "eps": splice.eps[:, 0],
        "cos_sim": splice.cos[:, 0],
        "l0": (latents > 0).sum(-1),
        "l1": latents.abs().sum(-1),
    }
    scattered = {}
    for name, values in per_token.items():
        full = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        full[mask] = values.float()
        scattered[name] = full
    return scattered


def _draws(intervention: Intervention, settings: EngineSettings) -> int:
    return settings.samples if intervention.stochastic else 1


def _counted(
    mask: Bool[Tensor, "batch pos"], window: Window, scope: AllTokenScope | SingleTokenScope
) -> Bool[Tensor, "batch rec"]:
    """Recorded positions whose metrics enter the intervention records."""
    recorded = window.recorded.to(mask.device)
    if isinstance(scope, SingleTokenScope):
        return torch.ones(mask.shape[0], len(recorded), dtype=torch.bool, device=mask.device)
    return mask[:, recorded]  # all-token: the intervened (non-special by default) positions


def _patched_metrics(
    model: HookedTransformer,
    hook: HookPoint,
    clean: CleanPass,
    mask: Bool[Tensor, "batch pos"],
    replacements: Float[Tensor, "variants n d"],
    max_tokens_per_pass: int,
) -> tuple[Float[Tensor, "variants batch rec"], Float[Tensor, "variants batch rec"]]:
    """KL and loss of every (variant, sequence), run in blocks of variants x sequences within the token budget.

    Blocks are rectangular so the clean log-probs of a block's sequences broadcast over its
    variants instead of being gathered (copied) once per row.
    """
    n_variants, (batch, length) = replacements.shape[0], mask.shape
    token_index = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    token_index[mask] = torch.arange(int(mask.sum()), device=mask.device)  # (B, E): row in `replacements`
    seqs_per_pass = min(batch, max(1, max_tokens_per_pass // length))
    variants_per_pass = max(1, max_tokens_per_pass // (length * seqs_per_pass))
    kl = torch.empty(n_variants, batch, len(clean.recorded), device=mask.device)
    loss = torch.empty_like(kl)
    for k0 in range(0, n_variants, variants_per_pass):
        for b0 in range(0, batch, seqs_per_pass):
            ks, bs = slice(k0, k0 + variants_per_pass), slice(b0, b0 + seqs_per_pass)
            patched = _patched_activation(clean, hook, token_index[bs], replacements[ks], bs)
            kl[ks, bs], loss[ks, bs] = _patched_pass(model, hook, clean, bs, patched)
    return kl, loss


def _patched_activation(
    clean: CleanPass,
    hook: HookPoint,
    token_index: Int[Tensor, "seqs pos"],
    replacements: Float[Tensor, "variants n d"],
    seqs: slice,
) -> Float[Tensor, "variants seqs pos d"]:
    """The clean activation of each sequence with each variant's replacements scattered in."""
    clean_act = hook.flatten(clean.acts[hook.name])[seqs]  # (b, E, D)
    act = clean_act.expand(replacements.shape[0], *clean_act.shape).clone()  # (k, b, E, D)
    hit = token_index >= 0
    act[:, hit] = replacements[:, token_index[hit]].to(act.dtype)
    return act


def _patched_pass(
    model: HookedTransformer,
    hook: HookPoint,
    clean: CleanPass,
    seqs: slice,
    patched: Float[Tensor, "variants seqs pos d"],
) -> tuple[Float[Tensor, "variants seqs rec"], Float[Tensor, "variants seqs rec"]]:
    """Run from the hook's block with the activation replaced; KL and loss at recorded positions."""
    n_variants, n_seqs = patched.shape[:2]
    rows = patched.flatten(0, 1)  # (k * b, E, D), variant-major

    def replace(activation: Tensor, hook: Any) -> Tensor:
        return rows.reshape(activation.shape).to(activation.dtype)  # hook_z: (k * b, E, H, d_head)

    resid = clean.acts[_resid_pre(hook.layer)][seqs].repeat(n_variants, 1, 1)  # (k * b, E, d_model)
    with model.hooks(fwd_hooks=[(hook.name, replace)]):
        final = model(resid, start_at_layer=hook.layer, stop_at_layer=model.cfg.n_layers)
    logq = _log_probs_at(model, final, clean.recorded).unflatten(0, (n_variants, n_seqs))  # (k, b, R, V)
    loss = _token_loss(logq, clean.next_tokens[seqs].expand(n_variants, -1, -1))
    logp = clean.logp[seqs]  # (b, R, V), broadcast over variants
    # KL(P_clean || Q) = sum_v p (log p - log q), in place on log q: no (k, b, R, V) temporaries.
    kl = logq.neg_().add_(logp).mul_(logp.exp()).sum(-1)
    return kl, loss


def _token_loss(
    logq: Float[Tensor, "rows rec vocab"], next_tokens: Int[Tensor, "rows rec"]
) -> Float[Tensor, "rows rec"]:
    """-log Q(next token); NaN where the context ends (written as null)."""
    picked = -logq.gather(-1, next_tokens.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(next_tokens < 0, float("nan"))
