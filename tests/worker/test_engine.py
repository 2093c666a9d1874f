"""The engine against direct computations written independently here."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from schema.spec import SEED_INTERVENTION_NAMES, AllTokenScope, JobSpec, SingleTokenScope
from tests.worker.conftest import BOS, CONTEXT, random_tokens, settings, tiny_model, tiny_sae
from worker.commands import spec_args
from worker.engine import Target, Window, clean_pass, evaluate_batch
from worker.errors import BadInput
from worker.hooks import HookPoint
from worker.interventions import INTERVENTIONS, Intervention, fit_activation_stats
from worker.loading import check_fit
from worker.prepare import prepare_job


def target_at(model, hook_name: str, seed: int = 0) -> Target:
    hook = HookPoint.parse(hook_name)
    sae = tiny_sae(hook_name, hook.width(model), seed=seed)
    _, cache = model.run_with_cache(random_tokens(8, seed=99), names_filter=hook_name)
    acts = hook.flatten(cache[hook_name]).reshape(-1, hook.width(model))  # (B * P, D)
    return Target(key=hook_name, sae=sae, hook=hook, stats=fit_activation_stats(acts))


def run(model, target, tokens, **overrides):
    ids = torch.arange(tokens.shape[0])
    return evaluate_batch(model, [target], tokens, ids, settings(**overrides))[0]


def kl_of(records, name: str) -> np.ndarray:
    table = records.interventions.filter(pc.equal(records.interventions["intervention"], name))
    return table.sort_by([("sequence", "ascending"), ("position", "ascending")])["kl"].to_numpy()


def direct_metrics(model, tokens, hook: HookPoint, replace_fn, positions_mask):
    """Full forward pass from the embeddings with a hand-written hook: KL per position and loss."""

    def hook_fn(act, hook):  # replace only where positions_mask is set
        flat = hook_point.flatten(act)
        new = torch.where(positions_mask[..., None], replace_fn(flat), flat)
        return new.reshape(act.shape)

    hook_point = hook
    with torch.no_grad():
        clean = model(tokens)
        patched = model.run_with_hooks(tokens, fwd_hooks=[(hook.name, hook_fn)])
    logp, logq = F.log_softmax(clean, -1), F.log_softmax(patched, -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    loss = -logq[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    return kl, loss


HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.attn.hook_z", "blocks.2.hook_mlp_out"]


@pytest.mark.parametrize("hook_name", HOOKS)
def test_identity_splice_gives_zero_kl(model, hook_name):
    identity = Intervention(lambda s, k: s.x_hat + (s.x - s.x_hat), stochastic=False)
    records = run(model, target_at(model, hook_name), random_tokens(), interventions={"identity": identity})
    assert records.interventions.num_rows == 4 * (CONTEXT - 1)  # BOS left out
    assert float(pc.max(records.interventions["kl"]).as_py()) < 1e-6
    loss, delta = (records.interventions[c].to_numpy(zero_copy_only=False) for c in ("loss", "loss_delta"))
    np.testing.assert_allclose(loss - delta, loss, rtol=1e-4)  # patched loss == clean loss


@pytest.mark.parametrize("hook_name", HOOKS)
def test_sae_and_zero_ablation_match_direct_full_pass(model, hook_name):
    target, tokens = target_at(model, hook_name), random_tokens()
    records = run(model, target, tokens)
    not_bos = tokens != BOS
    sae_fn = lambda x: target.sae.decode(target.sae.encode(x))  # noqa: E731
    for name, fn in [("sae", sae_fn), ("zero_ablation", torch.zeros_like)]:
        kl, loss = direct_metrics(model, tokens, target.hook, fn, not_bos)
        np.testing.assert_allclose(kl_of(records, name), kl[not_bos].numpy(), rtol=1e-4, atol=1e-6)
        table = records.interventions.filter(pc.equal(records.interventions["intervention"], name))
        table = table.sort_by([("sequence", "ascending"), ("position", "ascending")])
        expected_loss = loss[not_bos[:, :-1]].numpy()
        got = table.filter(pc.less(table["position"], CONTEXT - 1))["loss"].to_numpy()
        np.testing.assert_allclose(got, expected_loss, rtol=1e-4, atol=1e-5)


def test_clean_loss_and_token_facts(model):
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    rows = run(model, target, tokens).tokens.to_pydict()
    with torch.no_grad():
        logp = F.log_softmax(model(tokens), -1)
    assert rows["clean_loss"][1] == pytest.approx(-logp[0, 1, tokens[0, 2]].item(), rel=1e-5)
    assert rows["next_token_id"][CONTEXT - 1] is None and rows["clean_loss"][CONTEXT - 1] is None
    assert rows["intervened"][0] is False and rows["norm"][0] is None  # BOS
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    x = cache["blocks.1.hook_resid_pre"][0, 5]
    x_hat = target.sae.decode(target.sae.encode(x[None]))[0]
    assert rows["norm"][5] == pytest.approx(x.norm().item(), rel=1e-5)
    assert rows["eps"][5] == pytest.approx((x_hat - x).norm().item(), rel=1e-4)
    assert rows["l0"][5] == int((target.sae.encode(x[None]) > 0).sum())


def test_special_tokens_included_on_request(model):
    records = run(
        model,
        target_at(model, "blocks.1.hook_resid_pre"),
        random_tokens(),
        scope=AllTokenScope(include_special_tokens=True),
    )
    assert records.interventions.num_rows == 10 * 4 * CONTEXT
    assert all(records.tokens["intervened"].to_pylist())


def test_single_token_scope_records_window_and_matches_direct(model):
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    scope = SingleTokenScope(position=10, window=5)
    records = run(model, target, tokens, scope=scope)
    assert sorted(set(records.tokens["position"].to_pylist())) == list(range(10, 16))
    only_p = torch.zeros_like(tokens, dtype=torch.bool)
    only_p[:, 10] = True
    kl, _ = direct_metrics(model, tokens, target.hook, lambda x: target.sae.decode(target.sae.encode(x)), only_p)
    np.testing.assert_allclose(kl_of(records, "sae"), kl[:, 10:16].reshape(-1).numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(kl[:, :10].numpy()).max() < 1e-6  # direct pass: nothing before P moves


MEAN_ONLY = {"mean_ablation": INTERVENTIONS["mean_ablation"]}


def full_batch_mean(model, tokens, hook: HookPoint) -> torch.Tensor:
    """The original scripts' mean: over every position of the batch, BOS included."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook.name)
    acts = hook.flatten(cache[hook.name])
    return acts.sum((0, 1)) / (acts.shape[0] * acts.shape[1])


@pytest.mark.parametrize("hook_name", ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_z"])
@pytest.mark.parametrize("include_special", [False, True])
def test_mean_ablation_uses_the_fit_mean_or_the_batch_mean_with_bos(model, hook_name, include_special):
    target, tokens = target_at(model, hook_name), random_tokens()
    scope = AllTokenScope(include_special_tokens=include_special)
    replaced = torch.ones_like(tokens, dtype=torch.bool) if include_special else tokens != BOS
    fit = run(model, target, tokens, scope=scope, interventions=MEAN_ONLY)
    kl, _ = direct_metrics(model, tokens, target.hook, lambda x: target.stats.mean.expand_as(x), replaced)
    np.testing.assert_allclose(kl_of(fit, "mean_ablation"), kl[replaced].numpy(), rtol=1e-4, atol=1e-6)
    batch = run(model, target, tokens, scope=scope, interventions=MEAN_ONLY, mean_ablation_mean="batch_with_bos")
    mean = full_batch_mean(model, tokens, target.hook)
    assert not torch.allclose(mean, target.stats.mean, rtol=1e-2)  # the two options really differ
    kl, _ = direct_metrics(model, tokens, target.hook, lambda x: mean.expand_as(x), replaced)
    np.testing.assert_allclose(kl_of(batch, "mean_ablation"), kl[replaced].numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(kl_of(batch, "mean_ablation"), kl_of(fit, "mean_ablation"), rtol=1e-3)


def test_batch_mean_with_bos_covers_the_whole_context_in_single_token_scope(model):
    target, tokens = target_at(model, "blocks.2.hook_resid_pre"), random_tokens()
    scope = SingleTokenScope(position=10, window=5)  # the clean pass runs only 16 of 24 positions
    records = run(model, target, tokens, scope=scope, interventions=MEAN_ONLY, mean_ablation_mean="batch_with_bos")
    only_p = torch.zeros_like(tokens, dtype=torch.bool)
    only_p[:, 10] = True
    mean = full_batch_mean(model, tokens, target.hook)
    kl, _ = direct_metrics(model, tokens, target.hook, lambda x: mean.expand_as(x), only_p)
    np.testing.assert_allclose(kl_of(records, "mean_ablation"), kl[:, 10:16].reshape(-1).numpy(), rtol=1e-4, atol=1e-6)


def test_mean_ablation_option_from_spec_and_cli_to_engine(tiny_assets):
    parser = argparse.ArgumentParser()
    spec_args.configure(parser)
    assets = ["--model", tiny_assets["model"], "--sae", tiny_assets["blocks.1.hook_resid_pre"]]
    args = [*assets, "--tokens", tiny_assets["tokens"], "--device", "cpu"]
    default = spec_args.spec_from_args(parser.parse_args(args), defaults={"fit_sequences": 4})
    assert default.mean_ablation_mean == "fit_tokens"
    assert prepare_job(default).settings.mean_ablation_mean == "fit_tokens"
    chosen = parser.parse_args([*args, "--mean-ablation-mean", "batch_with_bos"])
    spec = spec_args.spec_from_args(chosen, defaults={"fit_sequences": 4})
    assert prepare_job(spec).settings.mean_ablation_mean == "batch_with_bos"
    with pytest.raises(ValidationError, match="mean_ablation_mean"):
        JobSpec(mean_ablation_mean="batch")


def test_single_token_scope_leaves_positions_before_target_untouched(model):
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    scope = SingleTokenScope(position=10, window=3)
    records = run(model, target, tokens, scope=scope, interventions={"zero_ablation": INTERVENTIONS["zero_ablation"]})
    assert records.tokens["intervened"].to_pylist() == [True, False, False, False] * 4
    window = Window.for_scope(scope, CONTEXT)
    clean = clean_pass(model, tokens, window, [target])
    assert clean.tokens.shape[1] == 14  # sequences cut after P + W
    # Patching position 10 with zeros and re-running from the block: KL of positions < P is 0.
    zero_at_p = clean.acts[target.hook.name].clone()
    zero_at_p[:, 10] = 0
    with torch.no_grad():
        patched = model(zero_at_p, start_at_layer=1)
        full = model(tokens[:, :14])
    before = (F.log_softmax(full, -1).exp() * (F.log_softmax(full, -1) - F.log_softmax(patched, -1))).sum(-1)[:, :10]
    assert before.abs().max() < 1e-6


def test_many_variants_are_chunked_without_changing_results(model):
    target, tokens = target_at(model, "blocks.2.hook_resid_pre"), random_tokens()
    big = run(model, target, tokens, samples=3)
    small = run(model, target, tokens, samples=3, max_tokens_per_pass=CONTEXT)  # one sequence per pass
    np.testing.assert_allclose(
        big.interventions["kl"].to_numpy(), small.interventions["kl"].to_numpy(), rtol=1e-4, atol=1e-7
    )
    assert big.interventions.num_rows == (5 + 5 * 3) * 4 * (CONTEXT - 1)


def test_seeded_reruns_are_identical_and_seeds_differ(model):
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    first, again = run(model, target, tokens, seed=7), run(model, target, tokens, seed=7)
    assert first.interventions.equals(again.interventions) and first.tokens.equals(again.tokens)
    other = run(model, target, tokens, seed=8)
    assert not np.allclose(kl_of(first, "eps_random"), kl_of(other, "eps_random"))
    np.testing.assert_array_equal(kl_of(first, "sae"), kl_of(other, "sae"))


STOCHASTIC = [name for name in SEED_INTERVENTION_NAMES if INTERVENTIONS[name].stochastic]  # settings() runs these


def test_other_seeds_do_not_reshuffle_seed_zero_over_sequences(model):
    """Identical sequences: seed k's KL on a sequence matches seed 0's on no sequence (issue: s XOR k)."""
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens(1).repeat(4, 1)
    per_sequence = {
        seed: {name: kl_of(run(model, target, tokens, seed=seed), name).reshape(4, -1) for name in STOCHASTIC}
        for seed in (0, 1, 2, 3)
    }
    for seed, name, s, s0 in itertools.product((1, 2, 3), STOCHASTIC, range(4), range(4)):
        assert not np.array_equal(per_sequence[seed][name][s], per_sequence[0][name][s0]), (seed, name, s, s0)


def test_draws_do_not_depend_on_batch_composition(model):
    """Sequence 3 gets the same noise whether it is evaluated alone or in a batch."""
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    whole = run(model, target, tokens)
    alone = evaluate_batch(model, [target], tokens[3:], torch.tensor([3]), settings())[0]
    rows = whole.interventions.filter(pc.equal(whole.interventions["sequence"], 3))
    np.testing.assert_allclose(rows["kl"].to_numpy(), alone.interventions["kl"].to_numpy(), rtol=1e-4, atol=1e-7)


def test_one_clean_pass_serves_several_hooks(model):
    targets = [target_at(model, h) for h in HOOKS]
    tokens, ids = random_tokens(), torch.arange(4)
    together = evaluate_batch(model, targets, tokens, ids, settings())
    for target, records in zip(targets, together, strict=True):
        assert records.key == target.hook.name
        alone = evaluate_batch(model, [target], tokens, ids, settings())[0]
        np.testing.assert_allclose(
            records.interventions["kl"].to_numpy(), alone.interventions["kl"].to_numpy(), rtol=1e-5, atol=1e-8
        )


def test_bad_inputs_raise_clear_errors(model):
    target = target_at(model, "blocks.1.hook_resid_pre")
    with pytest.raises(BadInput, match="unknown hook"):
        HookPoint.parse("blocks.1.hook_banana")
    with pytest.raises(BadInput, match="does not exist"):
        HookPoint.parse("blocks.7.hook_resid_pre").check_exists(model)
    wrong_width = tiny_sae("blocks.1.hook_resid_pre", d_in=16)
    with pytest.raises(BadInput, match="d_in=16"):
        check_fit(wrong_width, target.hook, model, "tiny")
    with pytest.raises(BadInput, match="trained on model 'tiny', not 'gpt2'"):
        check_fit(target.sae, target.hook, model, "gpt2")
    with pytest.raises(BadInput, match="beyond the context"):
        run(model, target, random_tokens(), scope=SingleTokenScope(position=CONTEXT))
    with pytest.raises(BadInput, match="empty batch"):
        run(model, target, random_tokens()[:0])


def test_nan_activations_raise(model):
    broken = tiny_model()
    with torch.no_grad():
        broken.W_E[5] = float("nan")
    tokens = random_tokens()
    tokens[0, 3] = 5
    with pytest.raises(BadInput, match="non-finite"):
        run(broken, target_at(model, "blocks.1.hook_resid_pre"), tokens)


# Amplification through later layers (docs/method.md §9): r_l = ||h_l(patched) - h_l(clean)|| / ||h_l(clean)|| at
# each later block's resid_post, summed per (sequence, intervention, layer) over the counted positions.

AMPLIFIED_HOOKS = [*HOOKS, "blocks.1.hook_resid_post"]


def amplification_means(records) -> dict[tuple[str, int, int], tuple[int, float]]:
    """(intervention, layer, sequence) -> (n, mean r) from the engine's sums."""
    frame = records.amplification.to_pandas()
    return {(r.intervention, r.layer, r.sequence): (r.n, r.r_sum / r.n) for r in frame.itertuples()}


@pytest.mark.parametrize("hook_name", AMPLIFIED_HOOKS)
def test_identity_splice_gives_zero_amplification_at_every_later_layer(model, hook_name):
    identity = Intervention(lambda s, k: s.x_hat + (s.x - s.x_hat), stochastic=False)
    records = run(model, target_at(model, hook_name), random_tokens(), interventions={"identity": identity})
    frame = records.amplification.to_pandas()
    layer = HookPoint.parse(hook_name).layer
    assert sorted(frame.layer.unique()) == list(range(layer, model.cfg.n_layers))
    assert (frame.n == CONTEXT - 1).all() and len(frame) == 4 * (model.cfg.n_layers - layer)  # BOS left out
    assert frame.r_sum.max() / (CONTEXT - 1) < 1e-5 and frame.r_sq_sum.max() < 1e-9


def direct_amplification(model, tokens, hook: HookPoint, replace_fn, mask) -> dict[int, torch.Tensor]:
    """Per later layer, r per (sequence, position) from two plain full passes (run_with_cache on each)."""
    names = lambda n: n.endswith("hook_resid_post")  # noqa: E731

    def hook_fn(act, hook):
        flat = point.flatten(act)
        return torch.where(mask[..., None], replace_fn(flat), flat).reshape(act.shape)

    point = hook

    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names_filter=names)
        with model.hooks(fwd_hooks=[(point.name, hook_fn)]):
            _, patched = model.run_with_cache(tokens, names_filter=names)
    out = {}
    for layer in range(point.layer, model.cfg.n_layers):
        name = f"blocks.{layer}.hook_resid_post"
        out[layer] = (patched[name] - clean[name]).norm(dim=-1) / clean[name].norm(dim=-1)  # (B, P)
    return out


@pytest.mark.parametrize("hook_name", AMPLIFIED_HOOKS)
def test_planted_perturbation_gives_the_directly_computed_amplification(model, hook_name):
    hook, tokens = HookPoint.parse(hook_name), random_tokens()
    planted = torch.linspace(-1.0, 1.0, hook.width(model))  # a known vector added at every intervened position
    shift = Intervention(lambda s, k: s.x + planted, stochastic=False)
    records = run(model, target_at(model, hook_name), tokens, interventions={"shift": shift})
    direct = direct_amplification(model, tokens, hook, lambda x: x + planted, tokens != BOS)
    got = amplification_means(records)
    assert len(got) == 4 * len(direct)
    for layer, r in direct.items():
        assert float(r[:, 1:].min()) > 1e-3  # the perturbation really moves every later layer
        for sequence in range(4):
            n, mean = got[("shift", layer, sequence)]
            assert n == CONTEXT - 1
            assert mean == pytest.approx(float(r[sequence, 1:].double().mean()), rel=1e-5)
    row = records.amplification.to_pandas().iloc[0]  # r^2 sums too
    r = direct[row.layer][row.sequence, 1:].double()
    assert row.r_sq_sum == pytest.approx(float(r.square().sum()), rel=1e-5)


def test_single_token_amplification_with_reused_keys_equals_full_recomputation(model):
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    scope = SingleTokenScope(position=9, window=5)
    reused, full = (run(model, target, tokens, scope=scope, samples=2, reuse_prefix=reuse) for reuse in (True, False))
    order = [(c, "ascending") for c in ("intervention", "layer", "sequence")]
    a, b = reused.amplification.sort_by(order), full.amplification.sort_by(order)
    assert a.num_rows == b.num_rows == len(SEED_INTERVENTION_NAMES) * 4 * 2  # layers 1 and 2
    for column in ("intervention", "layer", "sequence", "n"):
        assert a[column].equals(b[column])
    assert (
        a["n"].to_numpy()
        == np.where(
            np.isin(
                a["intervention"].to_numpy(zero_copy_only=False),
                [n for n in SEED_INTERVENTION_NAMES if INTERVENTIONS[n].stochastic],
            ),
            2,
            1,
        )
        * 6
    ).all()  # W + 1 positions
    assert np.abs(a["r_sum"].to_numpy() - b["r_sum"].to_numpy()).max() < 1e-5
    assert b["r_sum"].to_numpy().max() > 1e-2


def test_single_token_amplification_matches_direct(model):
    hook, tokens = HookPoint.parse("blocks.0.hook_resid_pre"), random_tokens()
    planted = torch.full((hook.width(model),), 0.5)
    shift = Intervention(lambda s, k: s.x + planted, stochastic=False)
    scope = SingleTokenScope(position=9, window=5)
    records = run(model, target_at(model, hook.name), tokens, scope=scope, interventions={"shift": shift})
    at_p = torch.zeros_like(tokens, dtype=torch.bool)
    at_p[:, 9] = True
    direct = direct_amplification(model, tokens, hook, lambda x: x + planted, at_p)
    for (_, layer, sequence), (n, mean) in amplification_means(records).items():
        assert n == 6
        assert mean == pytest.approx(float(direct[layer][sequence, 9:15].double().mean()), rel=1e-5, abs=1e-6)


def test_amplification_rows_are_stored_and_replaced_with_their_shard(model, tmp_store):
    from tests.schema.records import VERSIONS, run_meta

    tokens = random_tokens()
    records = run(model, target_at(model, "blocks.1.hook_resid_pre"), tokens, samples=2)
    job_id = tmp_store.create_job(JobSpec(), VERSIONS)
    (run_id,) = tmp_store.add_runs(job_id, [run_meta(1)])
    (shard_id,) = tmp_store.add_shards(job_id, [(0, 4)])
    order = "ORDER BY intervention, layer, sequence"
    columns = "sequence, intervention, layer, n, r_sum, r_sq_sum"
    expected = records.amplification.sort_by([(c, "ascending") for c in ("intervention", "layer", "sequence")])
    for attempt in range(2):  # a retried shard replaces its rows
        tmp_store.write_shard(job_id, shard_id, {run_id: (records.tokens, records.interventions)},
                              {run_id: records.amplification})  # fmt: skip
        stored = tmp_store.reader().execute(f"SELECT {columns} FROM lake.amplification_sums {order}").to_arrow_table()
        assert stored.equals(expected.select(columns.split(", ")).cast(stored.schema)), attempt
    doubled = records.amplification.set_column(4, "r_sum", pc.multiply(records.amplification["r_sum"], 2.0))
    tmp_store.write_shard(job_id, shard_id, {run_id: (records.tokens, records.interventions)}, {run_id: doubled})
    total = tmp_store.reader().execute("SELECT count(*), sum(r_sum) FROM lake.amplification_sums").fetchone()
    assert total[0] == records.amplification.num_rows
    assert total[1] == pytest.approx(2 * pc.sum(records.amplification["r_sum"]).as_py())
