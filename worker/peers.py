"""SAELens's own evaluation on exactly saegap's tokens: the peer the engine must agree with (and beat)."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from jaxtyping import Int
from sae_lens import SAE
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.training.activations_store import ActivationsStore
from torch import Tensor
from transformer_lens import HookedTransformer


def activation_store(
    model: HookedTransformer, tokens: Int[Tensor, "seq pos"], hook_name: str, d_in: int, batch: int
) -> ActivationsStore:
    """A real ActivationsStore over an in-memory tokenized dataset that yields exactly `tokens`, in order."""
    return ActivationsStore(
        model=model, dataset=Dataset.from_dict({"input_ids": tokens.tolist()}), d_in=d_in, hook_name=hook_name,
        hook_head_index=None, context_size=tokens.shape[1], prepend_bos=True, streaming=False,
        store_batch_size_prompts=batch, train_batch_size_tokens=4096, n_batches_in_buffer=2,
        total_training_tokens=10**9, normalize_activations="none", dataset_trust_remote_code=False, dtype="float32",
        device=torch.device(model.cfg.device), seqpos_slice=(None,), disable_concat_sequences=True,
        sequence_separator_token="bos",
    )  # fmt: skip


def saelens_kl_and_ce(
    sae: SAE[Any], model: HookedTransformer, tokens: Int[Tensor, "seq pos"], hook_name: str, batch: int
) -> dict[str, Any]:
    """`sae_lens.evals.run_evals` with KL and CE only (SAE and zero ablation), special tokens excluded."""
    config = EvalConfig(
        batch_size_prompts=batch, n_eval_reconstruction_batches=len(tokens) // batch, compute_kl=True,
        compute_ce_loss=True, n_eval_sparsity_variance_batches=0, compute_l2_norms=False,
        compute_sparsity_metrics=False, compute_variance_metrics=False, compute_featurewise_density_statistics=False,
        compute_featurewise_weight_based_metrics=False,
    )  # fmt: skip
    store = activation_store(model, tokens, hook_name, sae.cfg.d_in, batch)
    metrics, _ = run_evals(sae, store, model, ActivationScaler(), config, exclude_special_tokens=True)
    return metrics
