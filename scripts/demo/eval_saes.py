"""Evaluate every shipped SAE with sae_lens.evals.run_evals on the held-out tokens.

Offline: the held-out split is an in-memory tokenized datasets.Dataset read in order, so a fresh
ActivationsStore sees the same rows every time and the figures are deterministic. BOS positions are
excluded (exclude_special_tokens=True, SAEBench convention). Writes models/demo/sae_evals.json.
"""

from typing import Any

import numpy as np
import torch
from datasets import Dataset
from sae_lens import SAE
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.training.activations_store import ActivationsStore
from transformer_lens import HookedTransformer

from scripts.demo.common import (
    HELDOUT_TOKENS_PATH,
    MODEL_CONFIG,
    RELEASES,
    SAE_EVALS_PATH,
    SEQ_LEN,
    TORCH_THREADS,
    sae_dir,
    setup_logging,
    write_json,
)
from scripts.demo.load_demo import load_demo_model

BATCH_PROMPTS = 32
CARD_N_BATCHES = 8  # 256 held-out sequences for the reconstruction and for the sparsity/variance pass each
# (group, metric) pairs copied from run_evals' nested output into the card.
CARD_METRICS: dict[str, tuple[str, str]] = {
    "l0": ("sparsity", "l0"),
    "explained_variance": ("reconstruction_quality", "explained_variance"),
    "mse": ("reconstruction_quality", "mse"),
    "ce_loss_score": ("model_performance_preservation", "ce_loss_score"),
    "ce_loss_without_sae": ("model_performance_preservation", "ce_loss_without_sae"),
    "ce_loss_with_sae": ("model_performance_preservation", "ce_loss_with_sae"),
    "ce_loss_with_ablation": ("model_performance_preservation", "ce_loss_with_ablation"),
    "kl_div_with_sae": ("model_behavior_preservation", "kl_div_with_sae"),
    "kl_div_score": ("model_behavior_preservation", "kl_div_score"),
}

log = setup_logging("eval_saes")


def heldout_dataset(n_rows: int) -> Dataset:
    """The first n_rows held-out sequences as a tokenized Dataset (column input_ids, each row BOS + 127)."""
    rows = np.load(HELDOUT_TOKENS_PATH)[:n_rows].astype(np.int64)
    return Dataset.from_dict({"input_ids": rows.tolist()})


def evaluate_sae(model: HookedTransformer, sae: SAE, n_batches: int) -> dict[str, float]:
    """run_evals over n_batches reconstruction batches then n_batches sparsity/variance batches."""
    dataset = heldout_dataset(2 * n_batches * BATCH_PROMPTS)
    store = ActivationsStore.from_sae(
        model, sae, dataset=dataset, context_size=SEQ_LEN, streaming=False, store_batch_size_prompts=BATCH_PROMPTS
    )
    eval_config = EvalConfig(
        batch_size_prompts=BATCH_PROMPTS,
        n_eval_reconstruction_batches=n_batches,
        n_eval_sparsity_variance_batches=n_batches,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    with torch.no_grad():
        metrics, _ = run_evals(sae, store, model, ActivationScaler(), eval_config, exclude_special_tokens=True)
    return {name: float(metrics[group][key]) for name, (group, key) in CARD_METRICS.items()}


def evaluate_all(model: HookedTransformer) -> dict[str, dict[str, dict[str, Any]]]:
    """{release: {hook_name: figures}} for every shipped SAE."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for release, spec in RELEASES.items():
        results[release] = {}
        for hook_name in spec.hook_names(MODEL_CONFIG["n_layers"]):
            sae = SAE.load_from_disk(str(sae_dir(release, hook_name)), device="cpu", dtype="float32")
            figures = evaluate_sae(model, sae, CARD_N_BATCHES)
            results[release][hook_name] = {"architecture": spec.architecture, "d_sae": sae.cfg.d_sae, **figures}
            log.info("%s %s %s", release, hook_name, figures)
    return results


def main() -> None:
    torch.set_num_threads(TORCH_THREADS)
    model = load_demo_model()
    payload = {
        "n_batches": CARD_N_BATCHES,
        "batch_size_prompts": BATCH_PROMPTS,
        "exclude_special_tokens": True,
        "saes": evaluate_all(model),
    }
    write_json(SAE_EVALS_PATH, payload)


if __name__ == "__main__":
    main()
