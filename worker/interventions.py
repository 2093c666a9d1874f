"""The interventions: what replaces an activation x (docs/method.md §2).

Each formula is written once, below, with the formula in its docstring, and listed once
in `INTERVENTIONS`. A formula maps the `Splice` of the N intervened tokens at one hook
(x, SAE(x), the fitted activation statistics and the seeded noise) and a sample index
to the N replacement vectors. Adding an intervention is one function, one registry
line and its name in `schema.spec.InterventionName` (the torch-free list the UI and
the job spec validate against).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Float, Int
from torch import Tensor

from schema.spec import INTERVENTION_NAMES, InterventionName
from worker import rng


@dataclass(frozen=True)
class ActivationStats:
    """Statistics of real activations at one hook, fitted once per run."""

    mean: Float[Tensor, " d"]
    cov_factor: Float[Tensor, "d d"]  # L with L @ L.T = covariance (+ jitter)
    pool: Float[Tensor, "n d"]  # real activations, for eps_real_diff
    error_map: ErrorMap | None = None  # this run's SAE only: e ~ W x + b (worker/error_parts.py)


@dataclass(frozen=True)
class ErrorMap:
    """The ridge fit of a run's SAE error e = SAE(x) - x on x: e ~ x @ weight.T + bias."""

    weight: Float[Tensor, "d d"]
    bias: Float[Tensor, " d"]
    ridge: float  # the ridge strength used (absolute, on the centred Gram matrix)
    r2: float  # fraction of the error's variance the fit explains on the fit tokens (NaN: no variance)


@dataclass(frozen=True)
class Noise:
    """Seeded draws for the intervened tokens, keyed by (seed, sequence, position, sample, stream)."""

    seed: int
    sequence: Int[Tensor, " n"]
    position: Int[Tensor, " n"]

    def keys(self, sample: int, stream: str) -> Int[Tensor, " n"]:
        return rng.token_keys(self.seed, self.sequence, self.position, sample, rng.stream_id(stream))

    def gaussian(self, sample: int, stream: str, dim: int) -> Float[Tensor, "n d"]:
        return rng.gaussian(self.keys(sample, stream), dim)

    def index(self, sample: int, stream: str, size: int) -> Int[Tensor, " n"]:
        """A uniform integer in [0, size) per token."""
        return (rng.uniform(self.keys(sample, stream)) * size).long().clamp_(max=size - 1)


@dataclass(frozen=True)
class Splice:
    """What every intervention sees: the N intervened activations at one hook."""

    x: Float[Tensor, "n d"]
    x_hat: Float[Tensor, "n d"]  # SAE(x), in x's units (the SAE's own normalisation undone)
    stats: ActivationStats
    noise: Noise

    @cached_property
    def norm(self) -> Float[Tensor, "n 1"]:
        return self.x.norm(dim=-1, keepdim=True)

    @cached_property
    def sae_norm(self) -> Float[Tensor, "n 1"]:
        return self.x_hat.norm(dim=-1, keepdim=True)

    @cached_property
    def eps(self) -> Float[Tensor, "n 1"]:
        return (self.x_hat - self.x).norm(dim=-1, keepdim=True)

    @cached_property
    def linear_error(self) -> Float[Tensor, "n d"]:
        """W x + b: the part of SAE(x) - x the run's ridge fit predicts from x."""
        fit = self.stats.error_map
        if fit is None:
            raise ValueError("the error-part interventions need the run's error fit (ActivationStats.error_map)")
        return (self.x @ fit.weight.to(self.x).T + fit.bias.to(self.x)).to(self.x.dtype)

    @cached_property
    def nonlinear_error(self) -> Float[Tensor, "n d"]:
        """e - (W x + b): the part of the error the linear fit leaves."""
        return (self.x_hat - self.x) - self.linear_error

    @cached_property
    def cos(self) -> Float[Tensor, "n 1"]:
        return torch.nn.functional.cosine_similarity(self.x, self.x_hat, dim=-1).unsqueeze(-1)


def _unit(v: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def _rescale(v: Float[Tensor, "n d"], new_norm: Float[Tensor, "n 1"]) -> Float[Tensor, "n d"]:
    return _unit(v) * new_norm


def _at_cosine(s: Splice, sample: int, stream: str) -> Float[Tensor, "n d"]:
    """A unit vector at cosine cos(x, SAE(x)) to x: c * x_unit + sqrt(1 - c^2) * u_perp."""
    x_unit = _unit(s.x)
    g = s.noise.gaussian(sample, stream, s.x.shape[-1]).to(s.x)
    u_perp = _unit(g - (g * x_unit).sum(-1, keepdim=True) * x_unit)  # Gram-Schmidt against x
    c = s.cos.clamp(-1.0, 1.0)
    return c * x_unit + torch.sqrt(1.0 - c**2) * u_perp


def sae(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- SAE(x)."""
    return s.x_hat


def sae_norm_corrected(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- SAE(x) * ||x|| / ||SAE(x)||  (the reconstruction without its shrinkage)."""
    return _rescale(s.x_hat, s.norm)


def norm_only(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x * ||SAE(x)|| / ||x||  (only the SAE's change of norm)."""
    return _rescale(s.x, s.sae_norm)


def eps_random(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x + eps * u,  eps = ||SAE(x) - x||,  u uniform on the unit sphere."""
    g = s.noise.gaussian(sample, "eps_random", s.x.shape[-1]).to(s.x)
    return s.x + s.eps * _unit(g)


def cos_random_sae_norm(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- ||SAE(x)|| * v,  v a random unit vector with cos(v, x) = cos(x, SAE(x))."""
    return _at_cosine(s, sample, "cos_random_sae_norm") * s.sae_norm


def cos_random_true_norm(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- ||x|| * v,  v a random unit vector with cos(v, x) = cos(x, SAE(x))."""
    return _at_cosine(s, sample, "cos_random_true_norm") * s.norm


def zero_ablation(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- 0."""
    return torch.zeros_like(s.x)


def mean_ablation(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- E[x], the mean activation at this hook (JobSpec.mean_ablation_mean: fit tokens or batch with BOS)."""
    return s.stats.mean.to(s.x).expand_as(s.x)


def eps_cov_random(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x + eps * unit(z1 - z2),  z1, z2 ~ N(mean, cov) fitted to the activations.

    z1 - z2 = L (g1 - g2) with L L^T = cov: the mean cancels (anisotropic baseline).
    """
    g1 = s.noise.gaussian(sample, "eps_cov_random/1", s.x.shape[-1])
    g2 = s.noise.gaussian(sample, "eps_cov_random/2", s.x.shape[-1])
    direction = (g1 - g2).to(s.x) @ s.stats.cov_factor.to(s.x).T  # (N, D)
    return s.x + s.eps * _unit(direction)


def eps_real_diff(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x + eps * unit(a_i - a_j),  a_i, a_j two distinct real activations at this hook."""
    n_pool = s.stats.pool.shape[0]
    i = s.noise.index(sample, "eps_real_diff/i", n_pool)
    j = (i + 1 + s.noise.index(sample, "eps_real_diff/j", n_pool - 1)) % n_pool  # j != i
    pool = s.stats.pool.to(s.x)
    return s.x + s.eps * _unit(pool[i] - pool[j])


def sae_error_linear(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x + (W x + b),  W, b the ridge fit of e = SAE(x) - x on x over the fit tokens (Engels et al. 2024)."""
    return s.x + s.linear_error


def sae_error_nonlinear(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x + (e - W x - b),  the part of the SAE's error the linear fit does not predict."""
    return s.x + s.nonlinear_error


def eps_random_linear(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x + ||W x + b|| * u,  u uniform on the unit sphere (its own stream)."""
    g = s.noise.gaussian(sample, "eps_random_linear", s.x.shape[-1]).to(s.x)
    return s.x + s.linear_error.norm(dim=-1, keepdim=True) * _unit(g)


def eps_random_nonlinear(s: Splice, sample: int) -> Float[Tensor, "n d"]:
    """x <- x + ||e - W x - b|| * u,  u uniform on the unit sphere (its own stream)."""
    g = s.noise.gaussian(sample, "eps_random_nonlinear", s.x.shape[-1]).to(s.x)
    return s.x + s.nonlinear_error.norm(dim=-1, keepdim=True) * _unit(g)


Formula = Callable[[Splice, int], Float[Tensor, "n d"]]


@dataclass(frozen=True)
class Intervention:
    formula: Formula
    stochastic: bool  # drawn `samples` times per token; deterministic ones once (sample 0)


INTERVENTIONS: dict[InterventionName, Intervention] = {
    "sae": Intervention(sae, stochastic=False),
    "sae_norm_corrected": Intervention(sae_norm_corrected, stochastic=False),
    "norm_only": Intervention(norm_only, stochastic=False),
    "eps_random": Intervention(eps_random, stochastic=True),
    "cos_random_sae_norm": Intervention(cos_random_sae_norm, stochastic=True),
    "cos_random_true_norm": Intervention(cos_random_true_norm, stochastic=True),
    "zero_ablation": Intervention(zero_ablation, stochastic=False),
    "mean_ablation": Intervention(mean_ablation, stochastic=False),
    "eps_cov_random": Intervention(eps_cov_random, stochastic=True),
    "eps_real_diff": Intervention(eps_real_diff, stochastic=True),
    "sae_error_linear": Intervention(sae_error_linear, stochastic=False),
    "sae_error_nonlinear": Intervention(sae_error_nonlinear, stochastic=False),
    "eps_random_linear": Intervention(eps_random_linear, stochastic=True),
    "eps_random_nonlinear": Intervention(eps_random_nonlinear, stochastic=True),
}
assert tuple(INTERVENTIONS) == INTERVENTION_NAMES, "registry and schema.spec.InterventionName disagree"


def fit_activation_stats(acts: Float[Tensor, "n d"], pool_size: int = 4096) -> ActivationStats:
    """Mean, covariance factor and a pool of real activations, from `acts` (fit tokens only).

    The covariance is computed in float64 and jittered until its Cholesky succeeds
    (activations are often rank-deficient, e.g. a layer-0 residual of a small vocabulary).
    """
    acts64 = acts.to(torch.float64)
    mean = acts64.mean(0)
    centred = acts64 - mean
    cov = centred.T @ centred / max(acts.shape[0] - 1, 1)  # (D, D)
    return ActivationStats(mean=mean.to(acts.dtype), cov_factor=_cholesky(cov).to(acts.dtype), pool=acts[:pool_size])


def _cholesky(cov: Float[Tensor, "d d"]) -> Float[Tensor, "d d"]:
    jitter = 1e-6 * cov.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    for _ in range(8):
        factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return factor
        jitter *= 10
    raise ValueError("activation covariance is not positive definite even with jitter")
