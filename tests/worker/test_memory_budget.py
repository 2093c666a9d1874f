"""The memory budget in bytes: block sizes, vocabulary chunks, the spec field and old stored specs."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from pydantic import ValidationError
from transformer_lens import HookedTransformer, HookedTransformerConfig

from schema.spec import DEFAULT_MEMORY_BUDGET_BYTES, AllTokenScope, JobSpec, SingleTokenScope
from tests.worker.conftest import CONTEXT, random_tokens, settings
from tests.worker.test_engine import target_at
from worker import engine
from worker.budget import plan_blocks
from worker.engine import Window, batch_shape, evaluate_batch
from worker.errors import BadInput
from worker.interventions import INTERVENTIONS
from worker.prepare import prepare_job

BIG_VOCAB = 4096
SMALL_BUDGET = 2 * 2**20  # forces vocabulary chunks on BIG_VOCAB (see test_small_budget_chunks_the_vocabulary)
SORT = [("intervention", "ascending"), ("sample", "ascending"), ("sequence", "ascending"), ("position", "ascending")]


@pytest.fixture(scope="module")
def big_vocab_model() -> HookedTransformer:
    """Token ids stay below 64 (the tiny tokenizer); the unembedding is 4096 wide.

    Unscaled random weights: logits of order 1, so float32 rounding of the logits (the same in
    any summation) stays far below the 1e-5 compared.
    """
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=BIG_VOCAB, n_ctx=CONTEXT,
        act_fn="gelu_new", normalization_type="LN", seed=3, default_prepend_bos=True,
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


def plan_for(model, scope, budget: int, samples: int = 2):
    target = target_at(model, "blocks.1.hook_resid_pre")
    window = Window.for_scope(scope, CONTEXT, reuse_prefix=True)
    overrides = dict(scope=scope, samples=samples, memory_budget=budget)
    return plan_blocks(batch_shape(model, [target], 4, window, settings(**overrides)), budget)


@pytest.mark.parametrize("scope", [AllTokenScope(), SingleTokenScope(position=7, window=6)])
def test_small_budget_chunks_the_vocabulary(big_vocab_model, scope):
    small, default = (plan_for(big_vocab_model, scope, b) for b in (SMALL_BUDGET, DEFAULT_MEMORY_BUDGET_BYTES))
    assert small.vocab_chunk < BIG_VOCAB
    assert default.vocab_chunk == BIG_VOCAB
    assert small.seqs * small.variants <= default.seqs * default.variants


@pytest.mark.parametrize("hook_name", ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_z"])
@pytest.mark.parametrize("scope", [AllTokenScope(), SingleTokenScope(position=7, window=6)])
def test_vocabulary_chunks_give_the_same_kl(big_vocab_model, hook_name, scope):
    target, tokens = target_at(big_vocab_model, hook_name), random_tokens()
    ids = torch.arange(tokens.shape[0])
    runs = [
        evaluate_batch(big_vocab_model, [target], tokens, ids, settings(scope=scope, samples=2, memory_budget=b))[0]
        for b in (SMALL_BUDGET, DEFAULT_MEMORY_BUDGET_BYTES)
    ]
    chunked, whole = (r.interventions.sort_by(SORT) for r in runs)
    assert chunked.num_rows == whole.num_rows > 0
    kl_chunked, kl_whole = chunked["kl"].to_numpy(), whole["kl"].to_numpy()
    assert np.abs(kl_chunked - kl_whole).max() < 1e-5
    assert kl_whole.max() > 1e-2
    loss = [t["loss"].to_numpy(zero_copy_only=False) for t in (chunked, whole)]
    np.testing.assert_allclose(*loss, rtol=1e-5, atol=1e-5)
    assert runs[0].tokens.equals(runs[1].tokens)  # clean loss and token facts too


def test_fused_metrics_match_log_softmax(big_vocab_model):
    """KL and loss against F.log_softmax over the whole vocabulary, written independently here."""
    target, tokens = target_at(big_vocab_model, "blocks.2.hook_resid_pre"), random_tokens()
    only = {"zero_ablation": settings().interventions["zero_ablation"]}
    small = settings(interventions=only, memory_budget=SMALL_BUDGET)
    records = evaluate_batch(big_vocab_model, [target], tokens, torch.arange(4), small)[0]
    hook = lambda act, hook: torch.where(tokens[..., None] == 0, act, torch.zeros_like(act))  # noqa: E731
    with torch.no_grad():
        logp = torch.log_softmax(big_vocab_model(tokens), -1)
        logq = torch.log_softmax(big_vocab_model.run_with_hooks(tokens, fwd_hooks=[(target.hook.name, hook)]), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)[tokens != 0].numpy()
    table = records.interventions.sort_by([("sequence", "ascending"), ("position", "ascending")])
    np.testing.assert_allclose(table["kl"].to_numpy(), kl, rtol=1e-4, atol=1e-6)
    last = table.filter(pc.equal(table["position"], CONTEXT - 1))
    assert last["loss"].null_count == last.num_rows  # no next token


def test_budget_too_small_is_one_clear_error(big_vocab_model):
    with pytest.raises(BadInput, match="memory_budget_bytes=4096 is too small"):
        plan_for(big_vocab_model, AllTokenScope(), 4096)


def test_old_token_cap_still_limits_blocks(big_vocab_model):
    target = target_at(big_vocab_model, "blocks.1.hook_resid_pre")
    window = Window.for_scope(AllTokenScope(), CONTEXT)
    shape = batch_shape(big_vocab_model, [target], 4, window, settings())
    capped = plan_blocks(shape, DEFAULT_MEMORY_BUDGET_BYTES, max_tokens_per_pass=CONTEXT)
    assert capped.seqs * capped.variants == 1


def test_spec_budget_field_and_stored_specs_with_the_old_field():
    assert JobSpec().memory_budget_bytes == DEFAULT_MEMORY_BUDGET_BYTES
    assert JobSpec().max_tokens_per_pass is None
    with pytest.raises(ValidationError, match="memory_budget_bytes"):
        JobSpec(memory_budget_bytes=1000)
    stored = JobSpec().model_dump(mode="json")  # as the job table keeps it before this field existed
    del stored["memory_budget_bytes"]
    stored["max_tokens_per_pass"] = 16_384
    old = JobSpec.model_validate(stored)
    assert old.max_tokens_per_pass == 16_384 and old.memory_budget_bytes == DEFAULT_MEMORY_BUDGET_BYTES
    assert JobSpec.model_validate_json(old.model_dump_json()) == old


def test_budget_reaches_the_engine(tiny_assets):
    spec = JobSpec(
        model=tiny_assets["model"], saes=[tiny_assets["blocks.1.hook_resid_pre"]], tokens=tiny_assets["tokens"],
        device="cpu", fit_sequences=4, memory_budget_bytes=3 * 2**20, max_tokens_per_pass=256,
    )  # fmt: skip
    job_settings = prepare_job(spec).settings
    assert job_settings.memory_budget == 3 * 2**20 and job_settings.max_tokens_per_pass == 256


def test_logits_moved_beyond_exp_range_take_the_stable_form(big_vocab_model, monkeypatch):
    """With the unembedding x 300, zero ablation moves logits by far more than 88: e^d overflows, and the
    max-shifted form gives the KL of a direct log_softmax."""
    model = copy.deepcopy(big_vocab_model)
    with torch.no_grad():
        model.unembed.W_U.mul_(300.0)
    target, tokens = target_at(model, "blocks.2.hook_resid_pre"), random_tokens()
    only = {"zero_ablation": INTERVENTIONS["zero_ablation"]}
    calls = []
    stable = engine._stable_metrics
    monkeypatch.setattr(engine, "_stable_metrics", lambda *args: calls.append(1) or stable(*args))
    records = evaluate_batch(model, [target], tokens, torch.arange(4), settings(interventions=only))[0]
    hook = lambda act, hook: torch.where(tokens[..., None] == 0, act, torch.zeros_like(act))  # noqa: E731
    with torch.no_grad():
        clean = model(tokens)
        patched = model.run_with_hooks(tokens, fwd_hooks=[(target.hook.name, hook)])
    assert float((patched - clean).max()) > 100
    logp, logq = torch.log_softmax(clean.double(), -1), torch.log_softmax(patched.double(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)[tokens != 0].numpy()
    got = records.interventions.sort_by([("sequence", "ascending"), ("position", "ascending")])["kl"].to_numpy()
    assert calls and np.isfinite(got).all()
    np.testing.assert_allclose(got, kl, rtol=1e-3, atol=1e-3)
