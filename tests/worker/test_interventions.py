"""Each intervention's formula, checked on its defining property."""

from __future__ import annotations

import pytest
import torch

from schema.spec import INTERVENTION_NAMES
from worker import rng
from worker.interventions import INTERVENTIONS, Noise, Splice, fit_activation_stats

N, D = 64, 48


@pytest.fixture
def splice() -> Splice:
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(500, D, generator=g) @ torch.randn(D, D, generator=g) + 3.0  # anisotropic, offset
    x = acts[:N]
    x_hat = 0.8 * x + 0.3 * torch.randn(N, D, generator=g)
    noise = Noise(seed=1, sequence=torch.arange(N) // 8, position=torch.arange(N) % 8)
    return Splice(x, x_hat, fit_activation_stats(acts), noise)


def apply(name: str, s: Splice, sample: int = 0) -> torch.Tensor:
    return INTERVENTIONS[name].formula(s, sample)


def test_registry_matches_the_schema_names():
    assert tuple(INTERVENTIONS) == INTERVENTION_NAMES
    for name, intervention in INTERVENTIONS.items():
        assert intervention.formula.__name__ == name and intervention.formula.__doc__


@pytest.mark.parametrize("name", ["eps_random", "eps_cov_random", "eps_real_diff"])
def test_eps_interventions_move_x_by_exactly_eps(splice, name):
    moved = (apply(name, splice) - splice.x).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(moved, splice.eps, rtol=1e-4, atol=0)


@pytest.mark.parametrize(("name", "norm"), [("cos_random_sae_norm", "sae_norm"), ("cos_random_true_norm", "norm")])
def test_cos_interventions_keep_cosine_and_norm(splice, name, norm):
    v = apply(name, splice)
    cos = torch.nn.functional.cosine_similarity(v, splice.x, dim=-1).unsqueeze(-1)
    torch.testing.assert_close(cos, splice.cos, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(v.norm(dim=-1, keepdim=True), getattr(splice, norm), rtol=1e-4, atol=0)


def test_norm_interventions(splice):
    corrected = apply("sae_norm_corrected", splice)
    torch.testing.assert_close(corrected.norm(dim=-1, keepdim=True), splice.norm, rtol=1e-5, atol=0)
    torch.testing.assert_close(
        torch.cosine_similarity(corrected, splice.x_hat, -1), torch.ones(N), rtol=1e-5, atol=1e-5
    )
    only = apply("norm_only", splice)
    torch.testing.assert_close(only.norm(dim=-1, keepdim=True), splice.sae_norm, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.cosine_similarity(only, splice.x, -1), torch.ones(N), rtol=1e-5, atol=1e-5)


def test_ablations_and_sae(splice):
    assert torch.equal(apply("sae", splice), splice.x_hat)
    assert torch.count_nonzero(apply("zero_ablation", splice)) == 0
    torch.testing.assert_close(apply("mean_ablation", splice), splice.stats.mean.expand(N, D))


def test_stats_come_from_the_stated_data():
    g = torch.Generator().manual_seed(3)
    acts = torch.randn(2000, 8, generator=g) * torch.arange(1, 9) + 5.0
    stats = fit_activation_stats(acts, pool_size=100)
    torch.testing.assert_close(stats.mean, acts.mean(0), rtol=1e-5, atol=1e-5)
    covariance = stats.cov_factor.double() @ stats.cov_factor.double().T
    torch.testing.assert_close(covariance, torch.cov(acts.T.double()), rtol=1e-4, atol=1e-4)
    assert torch.equal(stats.pool, acts[:100])


def test_cov_random_directions_follow_the_covariance():
    """Directions d ~ L(g1 - g2) put more mass on high-variance axes than isotropic noise does."""
    acts = torch.randn(4000, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor([10.0, 1.0, 1.0, 1.0])
    stats = fit_activation_stats(acts)
    n = 2000
    s = Splice(
        torch.ones(n, 4), torch.ones(n, 4) * 1.5, stats, Noise(0, torch.arange(n), torch.zeros(n, dtype=torch.long))
    )
    d = apply("eps_cov_random", s) - s.x
    share_axis0 = (d[:, 0] ** 2 / (d**2).sum(-1)).mean()
    assert share_axis0 > 0.8  # isotropic would give 0.25


def test_samples_are_independent_and_reproducible(splice):
    first, again, second = (
        apply("eps_random", splice, 0),
        apply("eps_random", splice, 0),
        apply("eps_random", splice, 1),
    )
    assert torch.equal(first, again)
    assert not torch.allclose(first, second)


def test_gaussian_draws_are_standard_normal():
    z = rng.gaussian(rng.token_keys(0, torch.arange(4000), torch.zeros(4000, dtype=torch.long), 0, 1), 64)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    corr = torch.corrcoef(z[:, :8].T)
    assert (corr - torch.eye(8)).abs().max() < 0.05
