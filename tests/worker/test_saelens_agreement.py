"""saegap's SAE and zero-ablation means agree with sae_lens.evals.run_evals on the same tokens."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
import torch

from schema.spec import AllTokenScope
from tests.worker.conftest import random_tokens, settings
from tests.worker.test_engine import target_at
from worker.engine import evaluate_batch
from worker.interventions import INTERVENTIONS
from worker.peers import saelens_kl_and_ce


def mean_of(table, name: str, column: str) -> float:
    rows = table.filter(pc.equal(table["intervention"], name))
    return pc.mean(rows[column]).as_py()


@pytest.mark.parametrize("hook_name", ["blocks.1.hook_resid_pre", "blocks.2.attn.hook_z"])
def test_means_agree_with_run_evals(model, hook_name):
    target, tokens = target_at(model, hook_name), random_tokens(8)
    chosen = {name: INTERVENTIONS[name] for name in ("sae", "zero_ablation")}
    records = evaluate_batch(model, [target], tokens, torch.arange(8), settings(interventions=chosen))[0]
    metrics = saelens_kl_and_ce(target.sae, model, tokens, hook_name, batch=8)
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
