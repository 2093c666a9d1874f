"""Next-token distributions at one position of one sequence: clean vs SAE vs eps_random (for the UI).

Reuses the engine's pieces (the intervened mask, encode_decode, the intervention
formulas, the seeded noise), so the SAE and eps_random replacements are exactly the
ones the job's records measured (sample 0). Hooks are applied inside `with model.hooks(...)`.
"""

from __future__ import annotations

import pyarrow as pa
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from schema.records import NEXT_TOKEN_SCHEMA
from schema.spec import BASELINE, SAE, JobSpec
from worker.engine import Target, encode_decode, intervened_mask
from worker.errors import BadInput
from worker.interventions import INTERVENTIONS, Noise, Splice
from worker.loading import as_tensor
from worker.prepare import PreparedJob
from worker.steps import prepared

COMPARED = (SAE, BASELINE)  # replacements shown against the clean distribution


def next_token_table(spec: JobSpec, run_index: int, sequence: int, position: int, top_k: int) -> pa.Table:
    """One row per token in the union of the clean, SAE and eps_random top-k; rank = rank under clean (1 = top)."""
    job = prepared(spec)
    _check_request(job, run_index, sequence, position, top_k)
    tokens = as_tensor(job.tokens[sequence : sequence + 1, : position + 1], job.model.cfg.device)  # (1, P+1)
    with torch.inference_mode():
        logprobs = next_token_logprobs(job, job.targets[run_index], tokens, sequence)  # name -> (vocab,)
    return _top_k_table(job, logprobs, top_k)


def _check_request(job: PreparedJob, run_index: int, sequence: int, position: int, top_k: int) -> None:
    n_sequences, context = job.tokens.shape
    if not 0 <= run_index < len(job.targets):
        raise BadInput(f"run index {run_index} is outside the job's {len(job.targets)} runs")
    if not 0 <= sequence < n_sequences:
        raise BadInput(f"sequence {sequence} is outside the job's {n_sequences} sequences")
    if not 0 <= position < context:
        raise BadInput(f"position {position} is outside the context of {context} tokens")
    if top_k < 1:
        raise BadInput(f"top_k must be at least 1, got {top_k}")


def next_token_logprobs(
    job: PreparedJob, target: Target, tokens: Int[Tensor, "1 pos"], sequence: int
) -> dict[str, Float[Tensor, " vocab"]]:
    """Log-probs of the token after the last position: clean, and with each COMPARED replacement spliced in."""
    model, hook = job.model, target.hook
    clean_logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name == hook.name)
    x = hook.flatten(cache[hook.name])  # (1, P, D)
    mask = intervened_mask(tokens, job.settings.scope, job.settings.special_token_ids)  # (1, P)
    _, positions = mask.nonzero(as_tuple=True)
    x_hat, _ = encode_decode(target.sae, x[mask])
    ids = torch.full_like(positions, sequence)
    splice = Splice(x[mask], x_hat, target.stats, Noise(job.settings.seed, ids, positions))
    result = {"clean": F.log_softmax(clean_logits[0, -1].float(), dim=-1)}
    for name in COMPARED:
        patched = x.clone()
        patched[mask] = INTERVENTIONS[name].formula(splice, 0).to(patched.dtype)
        result[name] = _patched_logprobs(model, hook.name, tokens, patched)
    return result


def _patched_logprobs(
    model: torch.nn.Module, hook_name: str, tokens: Int[Tensor, "1 pos"], patched: Float[Tensor, "1 pos d"]
) -> Float[Tensor, " vocab"]:
    def replace(activation: Tensor, hook: object) -> Tensor:
        return patched.reshape(activation.shape).to(activation.dtype)  # hook_z: (1, P, H, d_head)

    with model.hooks(fwd_hooks=[(hook_name, replace)]):
        logits = model(tokens)
    return F.log_softmax(logits[0, -1].float(), dim=-1)


def _top_k_table(job: PreparedJob, logprobs: dict[str, Float[Tensor, " vocab"]], top_k: int) -> pa.Table:
    k = min(top_k, logprobs["clean"].numel())
    shown = torch.unique(torch.cat([lp.topk(k).indices for lp in logprobs.values()]))
    clean_rank = logprobs["clean"].argsort(descending=True).argsort() + 1  # (vocab,) 1 = most likely
    order = shown[clean_rank[shown].argsort()]
    ids = order.cpu().tolist()
    return pa.Table.from_pydict(
        {
            "token_id": ids,
            "token_text": [job.model.tokenizer.decode([i]) for i in ids],
            "logprob_clean": logprobs["clean"][order].cpu().numpy(),
            "logprob_sae": logprobs["sae"][order].cpu().numpy(),
            "logprob_eps_random": logprobs["eps_random"][order].cpu().numpy(),
            "rank": clean_rank[order].cpu().numpy().astype("int32"),
        },
        schema=NEXT_TOKEN_SCHEMA,
    )
