"""The joint run (every SAE spliced at once) against single-site runs and a direct computation here."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from tests.worker.conftest import random_tokens, settings
from tests.worker.test_engine import target_at
from worker.engine import encode_decode, evaluate_batch
from worker.interventions import INTERVENTIONS, Intervention
from worker.joint import evaluate_joint, site_seed

NAMES = ["sae", "eps_random", "zero_ablation"]
IDENTITY = {"identity": Intervention(lambda s, k: s.x_hat + (s.x - s.x_hat), stochastic=False)}


def _kl(records, name: str) -> np.ndarray:
    table = records.interventions.filter(pc.equal(records.interventions["intervention"], name))
    return table.sort_by([("sequence", "ascending"), ("position", "ascending")])["kl"].to_numpy()


def _run_both(model, targets, tokens, **overrides):
    ids = torch.arange(tokens.shape[0])
    s = settings(**overrides)
    return evaluate_batch(model, targets, tokens, ids, s), evaluate_joint(model, targets, tokens, ids, s, key="joint")


def test_one_sae_jointly_equals_the_single_site_run(model):
    target, tokens = target_at(model, "blocks.1.hook_resid_pre"), random_tokens()
    (single,), joint = _run_both(model, [target], tokens, interventions={n: INTERVENTIONS[n] for n in NAMES})
    for name in NAMES:
        np.testing.assert_allclose(_kl(joint, name), _kl(single, name), rtol=1e-4, atol=1e-6)
    assert joint.tokens.column("eps").to_pylist() == single.tokens.column("eps").to_pylist()


def test_identity_at_every_site_gives_zero_kl(model):
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.2.hook_mlp_out"]
    targets = [target_at(model, h, seed=i) for i, h in enumerate(hooks)]
    _, joint = _run_both(model, targets, random_tokens(), interventions=IDENTITY)
    assert joint.interventions.num_rows > 0
    assert float(pc.max(joint.interventions["kl"]).as_py()) < 1e-6


def test_two_sites_agree_with_a_direct_computation(model):
    first, second = target_at(model, "blocks.0.hook_resid_post", seed=1), target_at(model, "blocks.2.hook_resid_pre")
    tokens = random_tokens()
    _, joint = _run_both(model, [first, second], tokens, interventions={"sae": INTERVENTIONS["sae"]})
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[:, 0] = False  # BOS is not intervened

    def splice(target):
        def hook(act, hook):
            return torch.where(keep[..., None], encode_decode(target.sae, act)[0], act)

        return hook

    with torch.no_grad():
        clean = F.log_softmax(model(tokens), -1)
        hooks = [(first.hook.name, splice(first)), (second.hook.name, splice(second))]
        patched = F.log_softmax(model.run_with_hooks(tokens, fwd_hooks=hooks), -1)
    direct = (clean.exp() * (clean - patched)).sum(-1)[:, 1:].flatten().numpy()
    np.testing.assert_allclose(_kl(joint, "sae"), direct, rtol=1e-4, atol=1e-6)
    assert direct.mean() > 1e-3
    assert not model.hook_dict[first.hook.name].fwd_hooks  # nothing left attached


def test_sites_draw_with_their_own_seeds():
    assert site_seed(7, 0) == 7
    assert len({site_seed(7, i) for i in range(5)}) == 5 and all(0 <= site_seed(7, i) < 2**31 for i in range(5))


def test_joint_job_stores_a_run_of_its_own_and_error_parts_with_it(tiny_assets, tmp_store) -> None:
    from schema.read import query
    from schema.spec import ERROR_PART_NAMES
    from tests.worker.test_api import tiny_spec
    from worker import api

    spec = tiny_spec(tiny_assets, joint=True, interventions=["sae", "eps_random", *ERROR_PART_NAMES])
    job_id = api.submit(spec, store=tmp_store)
    assert api.get_job(job_id, store=tmp_store).status == "done"
    sql = "SELECT r.hook_point, r.sae, count(*) AS n FROM interventions i JOIN runs r USING (run_id) GROUP BY ALL"
    counts = {row["hook_point"]: row["n"] for row in query(sql, store=tmp_store).to_pylist()}
    assert set(counts) == {"resid_pre", "attn_z", "joint"}
    assert counts["joint"] == counts["resid_pre"] > 0
    r2 = query("SELECT error_linear_r2 FROM runs WHERE hook_point != 'joint'", store=tmp_store).column(0).to_pylist()
    assert all(0 < value <= 1 for value in r2)


def test_cli_flags_ask_for_a_joint_run_and_the_error_parts() -> None:
    import argparse

    from worker.commands import spec_args

    parser = argparse.ArgumentParser()
    spec_args.configure(parser)
    args = parser.parse_args(["--joint", "--interventions", "sae,sae_error_linear,eps_random_linear"])
    spec = spec_args.spec_from_args(args)
    assert spec.joint and spec.interventions == ["sae", "sae_error_linear", "eps_random_linear"]
    assert not spec_args.spec_from_args(parser.parse_args([])).joint
