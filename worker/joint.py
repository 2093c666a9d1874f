"""All of a job's SAEs spliced at once: the joint run (docs/method.md §10; the seed's compounding-errors
hypothesis across layers, and the KL eval with every SAE spliced of EleutherAI/sparsify #100).

For each intervention variant, one forward pass from the embeddings with a hook at every SAE's
site, in the order of the job's SAEs (a later site's hook runs after an earlier one's): each
site's activation, as already patched upstream, is replaced by the intervention's formula
applied to it, with that site's SAE and fitted statistics. The SAE variant thus splices every
reconstruction, each SAE reading its input as patched upstream; a random baseline places, at
each site, a random point at that site's own distance ||SAE(x) - x||, drawn with a seed of its
own per site (site 0 uses the job's seed, so a one-SAE joint run equals the single-site run).
KL(P_clean || Q) and the loss are recorded as a run of its own, with the same records as any run.

The hooks live inside `with model.hooks(...)`: nothing stays attached. The engine is not used:
every variant runs the whole model once (a single-site run starts at its block).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from worker.engine import (
    EngineSettings,
    RunRecords,
    Target,
    Window,
    counted_positions,
    encode_decode,
    intervened_mask,
    next_token_ids,
    token_facts,
    variant_list,
)
from worker.interventions import Noise, Splice
from worker.to_arrow import intervention_table, token_table

_SITE_SEED_MIX = 0x5BD1E995  # site i > 0 draws with seed (seed + i * mix) mod 2^31


def site_seed(seed: int, site: int) -> int:
    """The seed of site `site`'s draws: the job's seed at site 0, a distinct one at every other site."""
    return (seed + site * _SITE_SEED_MIX) % 2**31


def evaluate_joint(
    model: HookedTransformer,
    targets: Sequence[Target],
    tokens: Int[Tensor, "batch pos"],
    sequence_ids: Int[Tensor, " batch"],
    settings: EngineSettings,
    key: Any,
) -> RunRecords:
    """The joint run's records on one batch: every target spliced at its own site in each variant's pass."""
    window = Window.for_scope(settings.scope, tokens.shape[1])
    prefix, recorded = tokens[:, : window.length], window.recorded.to(tokens.device)
    mask = intervened_mask(prefix, settings.scope, settings.special_token_ids)
    next_tokens = next_token_ids(tokens, recorded)
    variants = variant_list(settings)
    facts: dict[str, Tensor] = {}
    with torch.inference_mode():
        logp = F.log_softmax(model(prefix)[:, recorded].float(), -1)
        kl = torch.empty(len(variants), *next_tokens.shape, device=tokens.device)
        loss = torch.empty_like(kl)
        for v, (name, sample) in enumerate(variants):
            hooks = [(t.hook.name, _site_hook(t, i, name, sample, mask, sequence_ids, settings, facts))
                     for i, t in enumerate(targets)]  # fmt: skip
            with model.hooks(fwd_hooks=hooks):
                logq = F.log_softmax(model(prefix)[:, recorded].float(), -1)
            kl[v] = (logp.exp() * (logp - logq)).sum(-1)
            loss[v] = _loss(logq, next_tokens)
    clean_loss = _loss(logp, next_tokens)
    metrics = {n: values[:, recorded] for n, values in facts.items()}
    tokens_table = token_table(model.tokenizer, sequence_ids, recorded, prefix[:, recorded], next_tokens, clean_loss,
                               mask[:, recorded], metrics)  # fmt: skip
    counted = counted_positions(mask, window, settings.scope)
    return RunRecords(
        key, tokens_table, intervention_table(variants, sequence_ids, recorded, counted, kl, loss, clean_loss)
    )


def _site_hook(
    target: Target,
    site: int,
    name: str,
    sample: int,
    mask: Bool[Tensor, "batch pos"],
    sequence_ids: Int[Tensor, " batch"],
    settings: EngineSettings,
    facts: dict[str, Tensor],
) -> Any:
    """The hook replacing the intervened positions at one site with the variant's formula of the arriving activation."""
    b_idx, p_idx = mask.nonzero(as_tuple=True)
    noise = Noise(site_seed(settings.seed, site), sequence_ids[b_idx], p_idx)
    formula = settings.interventions[name].formula

    def hook(activation: Tensor, hook: Any) -> Tensor:
        flat = target.hook.flatten(activation).clone()  # (B, E, D), as patched upstream
        x = flat[mask]
        x_hat, latents = encode_decode(target.sae, x)
        splice = Splice(x, x_hat, target.stats, noise)
        if site == 0 and not facts:  # the same in every variant: nothing is patched upstream of site 0
            facts.update(token_facts(splice, latents, mask))
        flat[mask] = formula(splice, sample).to(flat.dtype)
        return flat.reshape(activation.shape)

    return hook


def _loss(logq: Float[Tensor, "batch rec vocab"], next_tokens: Int[Tensor, "batch rec"]) -> Float[Tensor, "batch rec"]:
    picked = -logq.gather(-1, next_tokens.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(next_tokens < 0, float("nan"))
