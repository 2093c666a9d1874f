"""The error split into its linear and nonlinear parts (issue 16, docs/method.md §8)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from schema.spec import ERROR_PART_NAMES, JobSpec
from tests.worker.conftest import random_tokens
from tests.worker.test_engine import run, target_at
from worker.error_parts import fit_error_map, sae_error
from worker.hooks import HookPoint
from worker.interventions import INTERVENTIONS, Noise, Splice, fit_activation_stats
from worker.prepare import evaluate_shard, prepare_job

N, D = 256, 24


class AffineSae(torch.nn.Module):
    """A stand-in SAE with SAE(x) = x + A x exactly (the latents are x itself, so l0/l1 are defined)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a
        self.dtype = a.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents + latents @ self.a.T


def _acts(n: int = N, d: int = D, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 2.0


def test_exactly_linear_error_gives_r2_one_and_recovers_the_map():
    x = _acts()
    a = torch.randn(D, D, generator=torch.Generator().manual_seed(1)) * 0.1
    fit = fit_error_map(x, x @ a.T)
    assert fit.r2 == pytest.approx(1.0, abs=1e-8)
    torch.testing.assert_close(fit.weight, a, atol=1e-3, rtol=0)  # x is ill-conditioned; e in float32
    torch.testing.assert_close(fit.bias, torch.zeros(D), atol=1e-3, rtol=0)
    assert fit.ridge > 0


def test_nonlinear_error_gives_r2_below_one_and_the_fit_is_least_squares():
    x = _acts()
    e = torch.relu(x) - x  # not affine in x
    fit = fit_error_map(x, e)
    assert 0.0 < fit.r2 < 0.999
    residual = (e - x @ fit.weight.T - fit.bias).double()
    # normal equations: the residual is orthogonal to every column of [x, 1]
    design = torch.cat([x.double(), torch.ones(N, 1, dtype=torch.float64)], 1)
    assert (design.T @ residual).abs().max() < 1e-3 * (design.abs().max() * residual.abs().max() * N)


def test_constant_error_has_no_variance_to_explain():
    x = _acts()
    fit = fit_error_map(x, torch.zeros_like(x) + 0.5)
    assert np.isnan(fit.r2)
    torch.testing.assert_close(fit.bias, torch.full((D,), 0.5), atol=1e-5, rtol=0)


@pytest.fixture
def splice() -> Splice:
    acts = _acts(500, seed=3)
    x = acts[:64]
    x_hat = torch.relu(x) * 0.9 + 0.1 * torch.randn(64, D, generator=torch.Generator().manual_seed(4))
    stats = replace(fit_activation_stats(acts), error_map=fit_error_map(acts, torch.relu(acts) * 0.9 - acts))
    noise = Noise(seed=1, sequence=torch.arange(64) // 8, position=torch.arange(64) % 8)
    return Splice(x, x_hat, stats, noise)


def _moved(name: str, s: Splice, sample: int = 0) -> torch.Tensor:
    return (INTERVENTIONS[name].formula(s, sample) - s.x).norm(dim=-1, keepdim=True)


def test_parts_and_baselines_have_the_stated_norms(splice):
    fit = splice.stats.error_map
    linear = splice.x @ fit.weight.T + fit.bias
    nonlinear = (splice.x_hat - splice.x) - linear
    for name, part in [("sae_error_linear", linear), ("eps_random_linear", linear)]:
        torch.testing.assert_close(_moved(name, splice), part.norm(dim=-1, keepdim=True), rtol=1e-4, atol=0)
    for name, part in [("sae_error_nonlinear", nonlinear), ("eps_random_nonlinear", nonlinear)]:
        torch.testing.assert_close(_moved(name, splice), part.norm(dim=-1, keepdim=True), rtol=1e-4, atol=0)
    # the two parts add up to the SAE's error
    both = INTERVENTIONS["sae_error_linear"].formula(splice, 0) + INTERVENTIONS["sae_error_nonlinear"].formula(
        splice, 0
    )
    torch.testing.assert_close(both - splice.x, splice.x_hat, rtol=1e-4, atol=1e-4)


def test_random_parts_use_their_own_streams(splice):
    lin = INTERVENTIONS["eps_random_linear"].formula(splice, 0) - splice.x
    nonlin = INTERVENTIONS["eps_random_nonlinear"].formula(splice, 0) - splice.x
    eps = INTERVENTIONS["eps_random"].formula(splice, 0) - splice.x
    cos = lambda a, b: torch.cosine_similarity(a, b, -1).abs().max()  # noqa: E731
    assert cos(lin, nonlin) < 0.99 and cos(lin, eps) < 0.99
    assert not torch.equal(INTERVENTIONS["eps_random_linear"].formula(splice, 1), lin + splice.x)


def test_error_parts_without_a_fit_raise_a_clear_error(splice):
    bare = Splice(splice.x, splice.x_hat, replace(splice.stats, error_map=None), splice.noise)
    with pytest.raises(ValueError, match="error fit"):
        INTERVENTIONS["sae_error_linear"].formula(bare, 0)


def test_linear_sae_error_has_zero_nonlinear_kl(model):
    hook_name = "blocks.1.hook_resid_mid"
    hook = HookPoint.parse(hook_name)
    d = hook.width(model)
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(5)) * 0.3
    sae = AffineSae(a)
    base = target_at(model, hook_name)
    _, cache = model.run_with_cache(random_tokens(8, seed=99), names_filter=hook_name)
    x_fit = hook.flatten(cache[hook_name]).reshape(-1, d)
    fit = fit_error_map(x_fit, sae_error(sae, x_fit))
    assert fit.r2 == pytest.approx(1.0, abs=1e-6)
    target = replace(base, sae=sae, stats=replace(base.stats, error_map=fit))
    names = ["sae", *ERROR_PART_NAMES]
    records = run(model, target, random_tokens(), interventions={n: INTERVENTIONS[n] for n in names})
    kl = {
        n: records.interventions.filter(pc.equal(records.interventions["intervention"], n))["kl"].to_numpy()
        for n in names
    }
    assert kl["sae"].mean() > 1e-3  # the SAE moves the logits
    assert np.abs(kl["sae_error_nonlinear"]).max() < 1e-5  # ... and all of that is the linear part
    np.testing.assert_allclose(kl["sae_error_linear"], kl["sae"], rtol=1e-3, atol=1e-6)


def test_error_parts_are_opt_in_and_runs_carry_the_fit(tiny_assets):
    assert not set(ERROR_PART_NAMES) & set(JobSpec().interventions)
    saes = [tiny_assets["blocks.1.hook_resid_pre"], tiny_assets["blocks.1.attn.hook_z"]]
    spec = JobSpec(
        model=tiny_assets["model"], saes=saes, tokens=tiny_assets["tokens"], device="cpu",
        fit_sequences=4, interventions=["sae", *ERROR_PART_NAMES],
    )  # fmt: skip

    job = prepare_job(spec)
    assert all(run.error_ridge > 0 and 0.0 < run.error_linear_r2 <= 1.0 for run in job.runs)
    records = evaluate_shard(job, 0, 2)[0]
    assert set(records.interventions["intervention"].to_pylist()) == {"sae", *ERROR_PART_NAMES}
