"""saegap's SAE and zero-ablation means agree with sae_lens.evals.run_evals on the same tokens."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
import torch
from datasets import Dataset
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.training.activations_store import ActivationsStore

from schema.spec import AllTokenScope
from tests.worker.conftest import random_tokens, settings
from tests.worker.test_engine import target_at
from worker.engine import evaluate_batch
from worker.interventions import INTERVENTIONS


def activation_store(model, tokens: torch.Tensor, hook_name: str, d_in: int) -> ActivationsStore:
    """A real ActivationsStore over an in-memory tokenized dataset that yields exactly `tokens`."""
    return ActivationsStore(
        model=model, dataset=Dataset.from_dict({"input_ids": tokens.tolist()}), d_in=d_in, hook_name=hook_name,
        hook_head_index=None, context_size=tokens.shape[1], prepend_bos=True, streaming=False,
        store_batch_size_prompts=tokens.shape[0], train_batch_size_tokens=256, n_batches_in_buffer=2,
        total_training_tokens=10**6, normalize_activations="none", dataset_trust_remote_code=False, dtype="float32",
        device=torch.device("cpu"), seqpos_slice=(None,), disable_concat_sequences=True, sequence_separator_token="bos",
    )  # fmt: skip


def mean_of(table, name: str, column: str) -> float:
    rows = table.filter(pc.equal(table["intervention"], name))
    return pc.mean(rows[column]).as_py()


@pytest.mark.parametrize("hook_name", ["blocks.1.hook_resid_pre", "blocks.2.attn.hook_z"])
def test_means_agree_with_run_evals(model, hook_name):
    target, tokens = target_at(model, hook_name), random_tokens(8)
    chosen = {name: INTERVENTIONS[name] for name in ("sae", "zero_ablation")}
    records = evaluate_batch(model, [target], tokens, torch.arange(8), settings(interventions=chosen))[0]
    store = activation_store(model, tokens, hook_name, target.hook.width(model))
    config = EvalConfig(
        batch_size_prompts=8, n_eval_reconstruction_batches=1, compute_kl=True, compute_ce_loss=True,
        n_eval_sparsity_variance_batches=0, compute_l2_norms=False, compute_sparsity_metrics=False,
        compute_variance_metrics=False, compute_featurewise_density_statistics=False,
        compute_featurewise_weight_based_metrics=False,
    )  # fmt: skip
    metrics, _ = run_evals(target.sae, store, model, ActivationScaler(), config, exclude_special_tokens=True)
    behaviour, performance = metrics["model_behavior_preservation"], metrics["model_performance_preservation"]
    table = records.interventions
    assert mean_of(table, "sae", "kl") == pytest.approx(behaviour["kl_div_with_sae"], rel=1e-3)
    assert mean_of(table, "sae", "loss") == pytest.approx(performance["ce_loss_with_sae"], rel=1e-3)
    clean = mean_of(table, "sae", "loss") - mean_of(table, "sae", "loss_delta")
    assert clean == pytest.approx(performance["ce_loss_without_sae"], rel=1e-3)
    # SAELens's zero-ablation hook ignores its special-token mask: it zeroes BOS too, then
    # averages over non-special positions. saegap reproduces that number with special tokens
    # included and BOS rows left out of the mean.
    assert mean_of(table, "zero_ablation", "kl") > 0  # saegap's own rule: BOS kept
    everything = settings(interventions=chosen, scope=AllTokenScope(include_special_tokens=True))
    table = evaluate_batch(model, [target], tokens, torch.arange(8), everything)[0].interventions
    table = table.filter(pc.greater(table["position"], 0))
    assert mean_of(table, "zero_ablation", "kl") == pytest.approx(behaviour["kl_div_with_ablation"], rel=1e-3)
    assert mean_of(table, "zero_ablation", "loss") == pytest.approx(performance["ce_loss_with_ablation"], rel=1e-3)
