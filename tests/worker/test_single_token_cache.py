"""Single-token scope with reused keys and values equals the full recomputation.

The patched passes run only positions P..P+W over the clean keys/values of positions < P
(EngineSettings.reuse_prefix, the default); the oracle reruns every position from the hook's
block (reuse_prefix=False). Both must write the same records.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from schema.spec import SingleTokenScope
from tests.worker.conftest import CONTEXT, VOCAB, random_tokens, settings, tiny_tokenizer
from tests.worker.test_engine import HOOKS, target_at
from worker.engine import evaluate_batch

SORT = [("intervention", "ascending"), ("sample", "ascending"), ("sequence", "ascending"), ("position", "ascending")]


def both_ways(model, hook_name: str, position: int, window: int = 5, samples: int = 2):
    target, tokens = target_at(model, hook_name), random_tokens()
    ids = torch.arange(tokens.shape[0])
    scope = SingleTokenScope(position=position, window=window)
    reused, full = (
        evaluate_batch(model, [target], tokens, ids, settings(scope=scope, samples=samples, reuse_prefix=reuse))[0]
        for reuse in (True, False)
    )
    return reused, full


def assert_same_records(reused, full) -> None:
    a, b = reused.interventions.sort_by(SORT), full.interventions.sort_by(SORT)
    assert a.num_rows == b.num_rows > 0
    for column in ("intervention", "sample", "sequence", "position"):
        assert a[column].equals(b[column])
    kl_a, kl_b = a["kl"].to_numpy(), b["kl"].to_numpy()
    assert np.abs(kl_a - kl_b).max() < 1e-5
    assert kl_b.max() > 1e-3  # the interventions really move the output
    loss_a, loss_b = (t["loss"].to_numpy(zero_copy_only=False) for t in (a, b))
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    assert reused.tokens.equals(full.tokens)


@pytest.mark.parametrize("hook_name", HOOKS)
@pytest.mark.parametrize("position", [1, 9, CONTEXT - 1])  # first admissible, inside, last (window cut)
def test_reused_keys_equal_full_recomputation(model, hook_name, position):
    reused, full = both_ways(model, hook_name, position)
    assert_same_records(reused, full)
    assert sorted(set(reused.tokens["position"].to_pylist())) == list(range(position, min(position + 6, CONTEXT)))


def test_patched_passes_run_only_the_window(model):
    """The blocks after the hook see W + 1 positions with reuse, P + W + 1 without."""
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    scope, clean_length = SingleTokenScope(position=9, window=5), 9 + 5 + 1
    for reuse, patched_length in [(True, 6), (False, clean_length)]:
        seen: list[int] = []
        handle = model.blocks[2].register_forward_hook(lambda module, args, out, seen=seen: seen.append(out.shape[1]))
        try:
            evaluate_batch(model, [target], tokens, torch.arange(4), settings(scope=scope, reuse_prefix=reuse))
        finally:
            handle.remove()
        assert seen[0] == clean_length  # the clean pass, over the whole prefix
        assert len(seen) > 1 and set(seen[1:]) == {patched_length}


def rotary_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=VOCAB, n_ctx=CONTEXT, act_fn="silu",
        normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8, seed=1,
        default_prepend_bos=True,
    )  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=tiny_tokenizer(), default_padding_side="right")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    return model.eval()


@pytest.mark.parametrize("hook_name", ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_z"])
def test_rotary_positions_are_offset_by_the_cache(hook_name):
    model = rotary_model()
    reused, full = both_ways(model, hook_name, position=12, window=4, samples=1)
    assert_same_records(reused, full)


def test_seeded_draws_do_not_depend_on_reuse(model):
    """Random interventions draw the same noise: per-sample KL agrees, and samples differ from each other."""
    reused, full = both_ways(model, "blocks.2.hook_resid_pre", position=5, samples=3)
    rows = reused.interventions.filter(pc.equal(reused.interventions["intervention"], "eps_random"))
    per_sample = [rows.filter(pc.equal(rows["sample"], k))["kl"].to_numpy() for k in range(3)]
    assert not np.allclose(per_sample[0], per_sample[1])
    assert_same_records(reused, full)
