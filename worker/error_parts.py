"""The linear and nonlinear parts of an SAE's error (docs/method.md §8; Engels et al. 2024,
arXiv 2410.14670, "Decomposing the dark matter of sparse autoencoders").

Per run, the error e = SAE(x) - x is fitted as e ~ W x + b by ridge regression on the fit
tokens (closed form, float64). The interventions sae_error_linear / sae_error_nonlinear and
their random baselines (worker/interventions.py) read the fit through ActivationStats.error_map;
its ridge strength and R² are stored on the run.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor

from worker.engine import encode_decode
from worker.hooks import HookPoint
from worker.interventions import ErrorMap

log = logging.getLogger(__name__)

# Ridge strength relative to the mean diagonal of the centred Gram matrix X_c^T X_c: enough to make
# the solve well posed on rank-deficient activations, small enough that an exactly linear error
# is recovered (R² = 1 to ~1e-9).
RIDGE_RELATIVE = 1e-6
_ENCODE_ROWS = 4096  # SAE rows encoded at once (latents of n x d_sae)


def fit_error_map(
    x: Float[Tensor, "n d"], error: Float[Tensor, "n d"], relative_ridge: float = RIDGE_RELATIVE
) -> ErrorMap:
    """Ridge fit error ~ x @ W.T + b in float64 (bias unpenalised: the fit is on centred data).

    W = (X_c^T X_c + lambda I)^-1 X_c^T E_c, b = mean(e) - W mean(x),
    R² = 1 - ||E_c - X_c W^T||² / ||E_c||² (NaN when the error does not vary).
    """
    x64, e64 = x.double(), error.double()
    x_mean, e_mean = x64.mean(0), e64.mean(0)
    xc, ec = x64 - x_mean, e64 - e_mean
    gram = xc.T @ xc
    ridge = relative_ridge * float(gram.diagonal().mean().clamp_min(1e-300))
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    weight = torch.linalg.solve(gram + ridge * eye, xc.T @ ec).T  # (d_out, d_in)
    bias = e_mean - weight @ x_mean
    total = float((ec**2).sum())
    residual = float(((ec - xc @ weight.T) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else float("nan")
    return ErrorMap(weight=weight.to(x.dtype), bias=bias.to(x.dtype), ridge=ridge, r2=r2)


def sae_error(sae: SAE[Any], x: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    """SAE(x) - x, encoded in blocks of rows."""
    blocks = x.split(_ENCODE_ROWS)
    return torch.cat([encode_decode(sae, block)[0] - block for block in blocks])


def fit_error_maps(
    saes: list[SAE[Any]], hooks: list[HookPoint], fit_acts: dict[str, Float[Tensor, "n d"]]
) -> list[ErrorMap]:
    """One ErrorMap per SAE, fitted on its hook's fit activations (worker.prepare.fit_activations)."""
    fits = []
    with torch.inference_mode():
        for sae, hook in zip(saes, hooks, strict=True):
            x = fit_acts[hook.name]
            fits.append(fit_error_map(x, sae_error(sae, x)))
            log.info("error fit at %s: R² = %.4f (ridge %.3g)", hook.name, fits[-1].r2, fits[-1].ridge)
    return fits
