"""The evaluation engine: model + SAEs + a token batch in, per-token Arrow records out.

For one batch: one clean pass caches the activations at every hook the job evaluates
(and the residual stream before each hook's block); then, per SAE, every intervention
variant (intervention x sample) is spliced in with a TransformerLens hook and the model's
blocks are re-run from that hook's block on, many variants x sequences stacked in the
batch dimension in blocks sized from a memory budget in bytes (worker/budget.py). In
single-token scope the patched passes run only positions P..P+W, attending over the clean
keys and values of the positions before P, which no intervention at P can change. KL(P_clean
|| Q) over the full vocabulary and the CE loss are computed only at the recorded positions,
fused and in vocabulary chunks (docs/method.md §3, docs/engine.md). The same patched passes
measure how far each variant pushes the residual stream at every later block's resid_post
(docs/method.md §9), against clean values the clean pass keeps at the recorded positions.

It knows nothing of databases or queues: see worker/prepare.py for the job-level loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities.activation_functions import apply_softcap

from schema.spec import DEFAULT_MEMORY_BUDGET_BYTES, AllTokenScope, MeanAblationMean, SingleTokenScope
from worker.budget import REPLACEMENT_SHARE, BatchShape, BlockPlan, plan_blocks
from worker.errors import BadInput
from worker.hooks import HookPoint
from worker.interventions import ActivationStats, Intervention, Noise, Splice
from worker.to_arrow import amplification_table, intervention_table, token_table

# Positional schemes whose patched passes may start at P over cached keys and values: learned
# positions live in the residual stream, rotary is applied from the cache's offset.
_PREFIX_REUSE_POSITIONS = ("standard", "rotary")


TokensDone = Callable[[int, int], None]  # (recorded token positions done, of the batch's total)


@dataclass(frozen=True)
class EngineSettings:
    scope: AllTokenScope | SingleTokenScope
    interventions: Mapping[str, Intervention]
    samples: int
    seed: int
    special_token_ids: tuple[int, ...]
    mean_ablation_mean: MeanAblationMean = "fit_tokens"  # "batch_with_bos": see batch_means
    memory_budget: int = DEFAULT_MEMORY_BUDGET_BYTES  # bytes of working memory per batch (worker/budget.py)
    max_tokens_per_pass: int | None = None  # the old token budget, from specs stored before the byte budget
    # Single-token scope: run only P..P+W over the clean keys/values before P. False: rerun every
    # position from the hook's block (the oracle the tests and bench/engine.py compare against).
    reuse_prefix: bool = True


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
    amplification: pa.Table | None = None  # schema.records.AMPLIFICATION_SCHEMA; None: not measured (joint run)


@dataclass(frozen=True)
class Window:
    """Which prefix of each sequence is run, which positions patched passes run and which are recorded."""

    length: int  # positions fed to the model (single-token: cut after P + W)
    recorded: Int[Tensor, " r"]  # positions whose KL/loss are recorded
    start: int = 0  # first position of the patched passes (single-token with reused keys/values: P)

    @classmethod
    def for_scope(cls, scope: AllTokenScope | SingleTokenScope, context: int, reuse_prefix: bool = False) -> Window:
        if isinstance(scope, AllTokenScope):
            return cls(length=context, recorded=torch.arange(context))
        if scope.position >= context:
            raise BadInput(f"target position {scope.position} is beyond the context of {context} tokens")
        length = min(scope.position + scope.window + 1, context)
        start = scope.position if reuse_prefix else 0
        return cls(length=length, recorded=torch.arange(scope.position, length), start=start)


@dataclass(frozen=True)
class CleanPass:
    tokens: Int[Tensor, "batch pos"]  # the prefix that was run
    recorded: Int[Tensor, " rec"]  # recorded positions
    next_tokens: Int[Tensor, "batch rec"]  # -1 where the context ends
    final: Float[Tensor, "batch rec d_model"]  # clean final residual (before ln_final) at recorded positions
    acts: dict[str, Tensor]  # hook name -> clean activation; includes resid_pre of each start layer
    prefix_kv: dict[int, tuple[Tensor, Tensor]]  # layer -> clean keys, values of positions < Window.start
    resid_post: dict[int, Tensor]  # layer -> clean resid_post at recorded positions (batch, rec, d_model), every
    # layer from the first hook's on (the last is `final`)
    resid_norm: dict[int, Tensor]  # layer -> ||clean resid_post|| (batch, rec), float32


@dataclass(frozen=True)
class CleanProbs:
    """The clean next-token distribution of some sequences at the recorded positions."""

    logits: Float[Tensor, "seqs rec vocab"]  # float32, softcapped
    p: Float[Tensor, "seqs rec vocab"]
    lse: Float[Tensor, "seqs rec"]  # logsumexp of the clean logits
    loss: Float[Tensor, "seqs rec"]  # -log P(next token); NaN where the context ends


def evaluate_batch(
    model: HookedTransformer,
    targets: Sequence[Target],
    tokens: Int[Tensor, "batch pos"],
    sequence_ids: Int[Tensor, " batch"],
    settings: EngineSettings,
    on_tokens: TokensDone | None = None,
) -> list[RunRecords]:
    """Records for every target on one batch of sequences (`sequence_ids` index the token set).

    `on_tokens(done, total)` hears after each block of sequences how many of the batch's recorded
    token positions are done (the worker shows it as progress inside a shard).
    """
    if tokens.numel() == 0:
        raise BadInput("empty batch: no sequences to evaluate")
    reuse = settings.reuse_prefix and model.cfg.positional_embedding_type in _PREFIX_REUSE_POSITIONS
    window = Window.for_scope(settings.scope, tokens.shape[1], reuse)
    plan = plan_blocks(batch_shape(model, targets, tokens.shape[0], window, settings), settings.memory_budget,
                       settings.max_tokens_per_pass)  # fmt: skip
    with torch.inference_mode():
        clean = clean_pass(model, tokens, window, targets, plan.clean_seqs)
        if settings.mean_ablation_mean == "batch_with_bos":
            means = batch_means(model, tokens, targets, clean)
            targets = [replace(t, stats=replace(t.stats, mean=means[t.hook.name])) for t in targets]
        prepared = [_prepare(target, clean, sequence_ids, settings) for target in targets]
        clean_loss = _patched_metrics(model, prepared, clean, window, plan, on_tokens)
        return [_records(model, p, clean, clean_loss, window, sequence_ids, settings) for p in prepared]


def batch_shape(
    model: HookedTransformer, targets: Sequence[Target], batch: int, window: Window, settings: EngineSettings
) -> BatchShape:
    cfg = model.cfg
    variants = len(variant_list(settings))
    return BatchShape(
        sequences=batch, length=window.length, run=window.length - window.start, keys=window.length,
        recorded=len(window.recorded), variants=variants, targets=len(targets),
        width=max([t.hook.width(model) for t in targets], default=cfg.d_model), d_model=cfg.d_model,
        d_mlp=cfg.d_mlp or 4 * cfg.d_model, n_heads=cfg.n_heads, d_vocab=cfg.d_vocab,
        act_bytes=torch.finfo(cfg.dtype).bits // 8, later_layers=len(later_layers(model, targets)),
    )  # fmt: skip


def clean_pass(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    window: Window,
    targets: Sequence[Target],
    seqs_per_pass: int | None = None,
) -> CleanPass:
    """Forward passes (`seqs_per_pass` sequences each) caching every target's activation and its block's input residual.

    With `window.start` > 0 it also keeps the keys and values of positions before it at every
    layer from the first hook's on: the patched passes attend over them.
    """
    prefix = tokens[:, : window.length]
    names = {t.hook.name for t in targets} | {_resid_pre(t.hook.layer) for t in targets}
    kv_layers = range(min(t.hook.layer for t in targets), model.cfg.n_layers) if window.start else range(0)
    names |= {_kv_name(layer, kind) for layer in kv_layers for kind in "kv"}
    later = later_layers(model, targets)
    posts = {_resid_post(layer) for layer in later[:-1]}  # the last block's resid_post is `final`
    recorded = window.recorded.to(tokens.device)
    finals, caches, recorded_posts = [], [], []
    for chunk in prefix.split(seqs_per_pass or prefix.shape[0]):
        final, cache = model.run_with_cache(
            chunk, names_filter=lambda n: n in names or n in posts, stop_at_layer=model.cfg.n_layers
        )
        finals.append(final[:, recorded])
        caches.append({name: cache[name] for name in names})
        recorded_posts.append({name: cache[name][:, recorded] for name in posts})  # (b, rec, d_model) each
        del final, cache
    acts = {name: torch.cat([c[name] for c in caches]) for name in names}
    prefix_kv = {
        layer: (acts.pop(_kv_name(layer, "k"))[:, : window.start].contiguous(),
                acts.pop(_kv_name(layer, "v"))[:, : window.start].contiguous())
        for layer in kv_layers
    }  # fmt: skip
    final = torch.cat(finals)
    resid_post = {layer: torch.cat([c[_resid_post(layer)] for c in recorded_posts]) for layer in later[:-1]}
    resid_post |= {later[-1]: final} if later else {}
    resid_norm = {layer: torch.linalg.vector_norm(r.float(), dim=-1) for layer, r in resid_post.items()}
    return CleanPass(prefix, recorded, next_token_ids(tokens, recorded), final, acts, prefix_kv, resid_post, resid_norm)


def later_layers(model: HookedTransformer, targets: Sequence[Target]) -> range:
    """The blocks whose resid_post is measured for some target: from the first hook's block to the last block."""
    return range(min((t.hook.layer for t in targets), default=model.cfg.n_layers), model.cfg.n_layers)


def next_token_ids(tokens: Int[Tensor, "batch pos"], recorded: Int[Tensor, " rec"]) -> Int[Tensor, "batch rec"]:
    """The token after each recorded position of the full sequences; -1 where the context ends."""
    next_positions = recorded + 1
    next_tokens = torch.full((tokens.shape[0], len(recorded)), -1, dtype=torch.long, device=tokens.device)
    has_next = next_positions < tokens.shape[1]
    next_tokens[:, has_next] = tokens[:, next_positions[has_next]]
    return next_tokens


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


def _resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def _kv_name(layer: int, kind: str) -> str:
    return f"blocks.{layer}.attn.hook_{kind}"


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


@dataclass
class _Prepared:
    """One target's splice over the batch, its variants and (filled block by block) their KL and loss."""

    target: Target
    mask: Bool[Tensor, "batch pos"]
    splice: Splice
    metrics: dict[str, Tensor]  # per-token SAE facts, (B, E)
    variants: list[tuple[str, int]]
    formulas: list[Intervention]
    replacements: Float[Tensor, "variants n d"] | None  # for the whole batch, when within REPLACEMENT_SHARE
    kl: Float[Tensor, "variants batch rec"]
    loss: Float[Tensor, "variants batch rec"]
    layers: range  # blocks whose resid_post is measured: the hook's block to the last
    amplification: Float[Tensor, "layers variants batch rec"]  # ||h_l(patched) - h_l(clean)|| / ||h_l(clean)||


def _prepare(
    target: Target, clean: CleanPass, sequence_ids: Int[Tensor, " batch"], settings: EngineSettings
) -> _Prepared:
    x = target.hook.flatten(clean.acts[target.hook.name])  # (B, E, D)
    if not torch.isfinite(x).all():
        raise BadInput(f"non-finite (NaN/inf) activations at {target.hook.name}; check the model and tokens")
    mask = intervened_mask(clean.tokens, settings.scope, settings.special_token_ids)
    b_idx, p_idx = mask.nonzero(as_tuple=True)
    x_hat, latents = encode_decode(target.sae, x[mask])
    splice = Splice(x[mask], x_hat, target.stats, Noise(settings.seed, sequence_ids[b_idx], p_idx))
    variants = variant_list(settings)
    kl = torch.empty(len(variants), *clean.next_tokens.shape, device=x.device)
    metrics = token_facts(splice, latents, mask)
    formulas = [settings.interventions[name] for name, _ in variants]
    replacements = None
    if len(variants) * x_hat.numel() * x_hat.element_size() <= settings.memory_budget * REPLACEMENT_SHARE:
        replacements = torch.stack([iv.formula(splice, k) for iv, (_, k) in zip(formulas, variants, strict=True)])
    layers = range(target.hook.layer, max(clean.resid_post) + 1)
    amplification = kl.new_empty(len(layers), *kl.shape)
    return _Prepared(target, mask, splice, metrics, variants, formulas, replacements, kl, torch.empty_like(kl),
                     layers, amplification)  # fmt: skip


def _records(
    model: HookedTransformer,
    prepared: _Prepared,
    clean: CleanPass,
    clean_loss: Float[Tensor, "batch rec"],
    window: Window,
    sequence_ids: Int[Tensor, " batch"],
    settings: EngineSettings,
) -> RunRecords:
    recorded, mask = clean.recorded, prepared.mask
    metrics = {name: values[:, recorded] for name, values in prepared.metrics.items()}
    tokens_table = token_table(
        model.tokenizer, sequence_ids, recorded, clean.tokens[:, recorded], clean.next_tokens, clean_loss,
        mask[:, recorded], metrics,
    )  # fmt: skip
    counted = counted_positions(mask, window, settings.scope)
    interventions_table = intervention_table(
        prepared.variants, sequence_ids, recorded, counted, prepared.kl, prepared.loss, clean_loss
    )
    amplification = _amplification_sums(prepared, counted, sequence_ids)
    return RunRecords(prepared.target.key, tokens_table, interventions_table, amplification)


def _amplification_sums(
    prepared: _Prepared, counted: Bool[Tensor, "batch rec"], sequence_ids: Int[Tensor, " batch"]
) -> pa.Table:
    """Per (sequence, intervention, layer): n, sum r and sum r^2 over the counted positions and every sample."""
    names = list(dict.fromkeys(name for name, _ in prepared.variants))
    group = torch.tensor([names.index(name) for name, _ in prepared.variants], device=counted.device)
    r = torch.where(counted, prepared.amplification, 0.0).double()  # (L, V, B, R)
    by_name = lambda t: t.new_zeros(t.shape[0], len(names), t.shape[2]).index_add_(1, group, t)  # noqa: E731
    draws = torch.bincount(group, minlength=len(names))  # (I,)
    n = draws[:, None] * counted.sum(-1)[None]  # (I, B)
    return amplification_table(names, sequence_ids, prepared.layers, n, by_name(r.sum(-1)), by_name(r.square().sum(-1)))


def token_facts(
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


def variant_list(settings: EngineSettings) -> list[tuple[str, int]]:
    """Every (intervention, sample) the settings ask for: the random ones `samples` times, the others once."""
    return [
        (name, k)
        for name, iv in settings.interventions.items()
        for k in range(settings.samples if iv.stochastic else 1)
    ]


def counted_positions(
    mask: Bool[Tensor, "batch pos"], window: Window, scope: AllTokenScope | SingleTokenScope
) -> Bool[Tensor, "batch rec"]:
    """Recorded positions whose metrics enter the intervention records."""
    recorded = window.recorded.to(mask.device)
    if isinstance(scope, SingleTokenScope):
        return torch.ones(mask.shape[0], len(recorded), dtype=torch.bool, device=mask.device)
    return mask[:, recorded]  # all-token: the intervened (non-special by default) positions


def _patched_metrics(
    model: HookedTransformer,
    prepared: Sequence[_Prepared],
    clean: CleanPass,
    window: Window,
    plan: BlockPlan,
    on_tokens: TokensDone | None = None,
) -> Float[Tensor, "batch rec"]:
    """Fill every target's KL, loss and amplification, block by block (sequences x variants, from `plan`); returns
    the clean loss.

    Sequence blocks are the outer loop, so each sequence's clean probabilities are made once
    and serve every target and variant. A block is rectangular (variants x sequences), so they
    broadcast over its variants instead of being copied per row.
    """
    batch = clean.tokens.shape[0]
    clean_loss = torch.empty(clean.next_tokens.shape, device=clean.final.device)
    for b0 in range(0, batch, plan.seqs):
        seqs = slice(b0, b0 + plan.seqs)
        probs = clean_probs(model, clean.final[seqs], clean.next_tokens[seqs])
        clean_loss[seqs] = probs.loss
        for p in prepared:
            sub = _sub_splice(p, seqs)
            for k0 in range(0, len(p.variants), plan.variants):
                ks = range(k0, min(k0 + plan.variants, len(p.variants)))
                patched = _patched_activation(p, clean, window, sub, ks)
                final = _patched_final(
                    model, p.target.hook, clean, window, seqs, patched, p.amplification[:, k0 : ks.stop]
                )
                kl, loss = block_metrics(model, final, probs, clean.next_tokens[seqs], plan.vocab_chunk)
                p.kl[k0 : ks.stop, seqs], p.loss[k0 : ks.stop, seqs] = kl, loss
        if on_tokens is not None:
            on_tokens(min(b0 + plan.seqs, batch) * clean.next_tokens.shape[1], clean.next_tokens.numel())
    return clean_loss


@dataclass(frozen=True)
class _SeqBlock:
    """One block's sequences in a target's splice: its rows there, as a splice, and each position's row."""

    seqs: slice
    rows: slice  # rows of the batch's splice (its tokens are in sequence order)
    splice: Splice
    index: Int[Tensor, "seqs pos"]  # row in `splice` of each position; -1: not replaced


def _sub_splice(prepared: _Prepared, seqs: slice) -> _SeqBlock:
    mask = prepared.mask[seqs]
    before = int(prepared.mask[: seqs.start].sum())
    rows = slice(before, before + int(mask.sum()))
    s = prepared.splice
    noise = Noise(s.noise.seed, s.noise.sequence[rows], s.noise.position[rows])
    index = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    index[mask] = torch.arange(rows.stop - rows.start, device=mask.device)
    return _SeqBlock(seqs, rows, Splice(s.x[rows], s.x_hat[rows], s.stats, noise), index)


def _patched_activation(
    prepared: _Prepared, clean: CleanPass, window: Window, block: _SeqBlock, variants: range
) -> Float[Tensor, "variants seqs run d"]:
    """The clean activation of each sequence over the run positions, with each variant's replacements scattered in."""
    hook = prepared.target.hook
    clean_act = hook.flatten(clean.acts[hook.name])[block.seqs, window.start :]  # (b, T, D)
    act = clean_act.expand(len(variants), *clean_act.shape).clone()  # (k, b, T, D)
    token_index = block.index[:, window.start :]
    hit = token_index >= 0
    if bool(hit.any()):
        if prepared.replacements is not None:
            replacements = prepared.replacements[variants.start : variants.stop, block.rows]
        else:
            formulas = [(prepared.formulas[k], prepared.variants[k][1]) for k in variants]
            replacements = torch.stack([iv.formula(block.splice, sample) for iv, sample in formulas])
        act[:, hit] = replacements[:, token_index[hit]].to(act.dtype)
    return act


@dataclass
class PrefixEntry(TransformerLensKeyValueCacheEntry):
    """The clean keys/values before P of a block's sequences, shared by its variants (rows are variant-major)."""

    variants: int = 1

    def append(self, new_keys: Tensor, new_values: Tensor) -> tuple[Tensor, Tensor]:
        return _prepend(self.past_keys, new_keys, self.variants), _prepend(self.past_values, new_values, self.variants)


def _prepend(
    past: Float[Tensor, "seqs prefix heads d_head"], new: Float[Tensor, "rows run heads d_head"], variants: int
) -> Float[Tensor, "rows keys heads d_head"]:
    seqs, prefix = past.shape[:2]
    out = new.new_empty(variants, seqs, prefix + new.shape[1], *new.shape[2:])
    out[:, :, :prefix] = past
    out[:, :, prefix:] = new.unflatten(0, (variants, seqs))
    return out.flatten(0, 1)


def _patched_final(
    model: HookedTransformer,
    hook: HookPoint,
    clean: CleanPass,
    window: Window,
    seqs: slice,
    patched: Float[Tensor, "variants seqs run d"],
    amplification: Float[Tensor, "layers variants batch rec"],
) -> Float[Tensor, "rows rec d_model"]:
    """Run the blocks from the hook's on with the activation replaced; the final residual at recorded positions.

    Rows are (variant, sequence), variant-major. From `window.start` > 0, only the run positions
    are computed, attending over the clean keys and values before them. Each block's resid_post
    hook writes its relative distance from the clean one into `amplification[layer - hook.layer, :, seqs]`.
    """
    n_variants = patched.shape[0]
    rows = patched.flatten(0, 1)  # (k * b, T, D)

    def replace(activation: Tensor, hook: Any) -> Tensor:
        return rows.reshape(activation.shape).to(activation.dtype)  # hook_z: (k * b, T, H, d_head)

    measures = [
        (_resid_post(layer), _measure_hook(clean, window, seqs, layer, amplification[i, :, seqs]))
        for i, layer in enumerate(range(hook.layer, model.cfg.n_layers))
    ]
    resid = clean.acts[_resid_pre(hook.layer)][seqs, window.start :].repeat(n_variants, 1, 1)  # (k * b, T, d_model)
    entries = {layer: PrefixEntry(k[seqs], v[seqs], variants=n_variants) for layer, (k, v) in clean.prefix_kv.items()}
    with model.hooks(fwd_hooks=[(hook.name, replace), *measures]):  # replace first: a resid_post splice is measured
        for layer in range(hook.layer, model.cfg.n_layers):
            resid = model.blocks[layer](resid, past_kv_cache_entry=entries.get(layer))
    return resid[:, clean.recorded - window.start]


def _measure_hook(
    clean: CleanPass, window: Window, seqs: slice, layer: int, out: Float[Tensor, "variants seqs rec"]
) -> Any:
    """A resid_post hook writing r = ||h(patched) - h(clean)|| / ||h(clean)|| at the recorded positions into `out`."""
    clean_post, clean_norm = clean.resid_post[layer][seqs], clean.resid_norm[layer][seqs]  # (b, rec, D), (b, rec)
    at = slice(int(window.recorded[0]) - window.start, int(window.recorded[-1]) + 1 - window.start)  # contiguous

    def measure(activation: Tensor, hook: Any) -> None:
        patched = activation[:, at].unflatten(0, (out.shape[0], -1))  # (k, b, rec, D), variant-major rows
        distance = torch.linalg.vector_norm(patched.float() - clean_post.float(), dim=-1)  # (k, b, rec)
        out.copy_(distance.div_(clean_norm))

    return measure


def _normed(model: HookedTransformer, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    return model.ln_final(resid) if model.cfg.normalization_type is not None else resid


def unembed_columns(model: HookedTransformer, normed: Float[Tensor, "n d_model"], vocab: slice) -> Float[Tensor, "n v"]:
    """float32 logits of vocabulary columns `vocab`: ln_final and the unembedding act position by position."""
    logits = torch.addmm(model.unembed.b_U[vocab], normed, model.unembed.W_U[:, vocab]).float()
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


def clean_probs(
    model: HookedTransformer, final: Float[Tensor, "seqs rec d_model"], next_tokens: Int[Tensor, "seqs rec"]
) -> CleanProbs:
    """Clean logits, probabilities, logsumexp and loss; temporaries one sequence at a time."""
    seqs, rec, _ = final.shape
    logits = unembed_columns(model, _normed(model, final).flatten(0, 1), slice(None)).unflatten(0, (seqs, rec))
    p = torch.empty_like(logits)
    lse = torch.empty(seqs, rec, device=logits.device)
    for i, row in enumerate(logits):  # (R, V)
        lse[i] = torch.logsumexp(row, -1)
        torch.sub(row, lse[i].unsqueeze(-1), out=p[i]).exp_()
    picked = logits.gather(-1, next_tokens.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    loss = (lse - picked).masked_fill(next_tokens < 0, float("nan"))
    return CleanProbs(logits, p, lse, loss)


def block_metrics(
    model: HookedTransformer,
    final: Float[Tensor, "rows rec d_model"],
    probs: CleanProbs,
    next_tokens: Int[Tensor, "seqs rec"],
    vocab_chunk: int,
) -> tuple[Float[Tensor, "variants seqs rec"], Float[Tensor, "variants seqs rec"]]:
    """KL(P_clean || Q) and -log Q(next) of a block's rows (variant-major), over the vocabulary in chunks.

    With d = logits_Q - logits_P (exactly 0 where nothing changed), log q = log p + d - log E_p[e^d], so
    KL = log E_p[e^d] - E_p[d] and -log Q(next) = -log P(next) - d_next + log E_p[e^d].
    Both expectations add up chunk by chunk, as bmm's over positions with the variants as rows
    (p broadcasts over variants uncopied), so no vocabulary-wide log Q is ever made. Where e^d
    overflows or E_p[e^d] underflows (a logit moved by ~88), the block is redone in the
    max-shifted form (`_stable_metrics`).
    """
    seqs, rec = probs.lse.shape
    n, variants = seqs * rec, final.shape[0] // seqs
    normed = _normed(model, final).unflatten(0, (variants, seqs)).permute(1, 2, 0, 3).reshape(n * variants, -1)
    logits, p = probs.logits.view(n, 1, -1), probs.p.view(n, -1, 1)
    nxt = next_tokens.clamp_min(0).view(n, 1, 1).expand(n, variants, 1)
    mean_d, mean_exp, d_next = (torch.zeros(n, variants, device=final.device) for _ in range(3))
    for c0 in range(0, logits.shape[-1], vocab_chunk):
        d = unembed_columns(model, normed, slice(c0, c0 + vocab_chunk)).view(n, variants, -1)  # (n, k, c)
        chunk = slice(c0, c0 + d.shape[-1])
        d.sub_(logits[..., chunk])
        mean_d += torch.bmm(d, p[:, chunk]).squeeze(-1)
        d_next += _gather_in_chunk(d, nxt - c0)
        mean_exp += torch.bmm(d.exp_(), p[:, chunk]).squeeze(-1)
    log_mean_exp = mean_exp.log()
    if not bool(torch.isfinite(log_mean_exp).all()):
        return _stable_metrics(model, normed, probs, next_tokens, vocab_chunk)
    kl = log_mean_exp - mean_d
    loss = (probs.loss.view(n, 1) - d_next + log_mean_exp).masked_fill(next_tokens.view(n, 1) < 0, float("nan"))
    return kl.view(seqs, rec, variants).permute(2, 0, 1), loss.view(seqs, rec, variants).permute(2, 0, 1)


def _gather_in_chunk(values: Float[Tensor, "n k c"], local: Int[Tensor, "n k 1"]) -> Float[Tensor, "n k"]:
    """values at `local` where it falls inside this chunk, else 0."""
    inside = (local >= 0) & (local < values.shape[-1])
    return torch.where(inside, values.gather(-1, local.clamp(0, values.shape[-1] - 1)), 0.0).squeeze(-1)


def _stable_metrics(
    model: HookedTransformer,
    normed: Float[Tensor, "rows d_model"],
    probs: CleanProbs,
    next_tokens: Int[Tensor, "seqs rec"],
    vocab_chunk: int,
) -> tuple[Float[Tensor, "variants seqs rec"], Float[Tensor, "variants seqs rec"]]:
    """`block_metrics` with u = logits_Q - logsumexp(logits_P) and a running max-shifted logsumexp of u.

    KL = sum_v p (log p - u) + logsumexp(u), -log Q(next) = logsumexp(u) - u_next.
    """
    seqs, rec = probs.lse.shape
    n = seqs * rec
    variants = normed.shape[0] // n
    logp = (probs.logits - probs.lse.unsqueeze(-1)).view(n, 1, -1)
    p, lse = probs.p.view(n, -1, 1), probs.lse.view(n, 1, 1)
    nxt = next_tokens.clamp_min(0).view(n, 1, 1).expand(n, variants, 1)
    gap = torch.zeros(n, variants, device=normed.device)
    top, total, picked = torch.full_like(gap, -torch.inf), torch.zeros_like(gap), torch.zeros_like(gap)
    for c0 in range(0, logp.shape[-1], vocab_chunk):
        u = unembed_columns(model, normed, slice(c0, c0 + vocab_chunk)).view(n, variants, -1).sub_(lse)  # (n, k, c)
        chunk = slice(c0, c0 + u.shape[-1])
        gap += torch.bmm(logp[..., chunk] - u, p[:, chunk]).squeeze(-1)
        picked += _gather_in_chunk(u, nxt - c0)
        new_top = torch.maximum(top, u.amax(-1))
        total = total * torch.exp(top - new_top) + u.sub_(new_top.unsqueeze(-1)).exp_().sum(-1)
        top = new_top
    lse_u = top + total.log()
    kl, loss = gap + lse_u, (lse_u - picked).masked_fill(next_tokens.view(n, 1) < 0, float("nan"))
    return kl.view(seqs, rec, variants).permute(2, 0, 1), loss.view(seqs, rec, variants).permute(2, 0, 1)
