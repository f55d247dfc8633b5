"""Conversions between the things a diffusion model may predict.

Every family writes its noisy state as ``x = alpha x0 + sigma eps`` (DPM-Solver's notation):
alpha = sqrt(a), sigma = sqrt(1 - a) for the DDPM family (a = alphas_cumprod), alpha = 1 - s,
sigma = s for a flow. A model predicts one of

    epsilon        u = eps
    sample         u = x0
    v_prediction   u = alpha eps - sigma x0        (Salimans & Ho, 2022; alpha^2 + sigma^2 = 1)
    flow           u = eps - x0                     (the rectified-flow velocity; alpha + sigma = 1)

and with ``x`` it determines both x0 and eps, linearly: x0 = p x + q u, eps = r x + w u
(`linear_maps`). The methods work with u and these maps, so no prediction is ever turned into
another by dividing by a coefficient that can be 0 (alpha at a flow's pure-noise end, sigma at
the image). The DDIM map between two grid positions, x' = alpha' x0 + sigma' eps, is then
affine in (x, u) as well (`ddim_coefficients`); for a flow it is x' = x + (s' - s) u, the Euler
step of the flow ODE.
"""

from __future__ import annotations

import torch

from unsample.errors import InputError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")

Coefficient = torch.Tensor | float


def linear_maps(prediction_type: str, alpha: Coefficient, sigma: Coefficient) -> tuple[Coefficient, ...]:
    """(p, q, r, w) with x0 = p x + q u and eps = r x + w u for a model output u at (alpha, sigma)."""
    if prediction_type == "epsilon":
        return 1 / alpha, -sigma / alpha, 0.0, 1.0
    if prediction_type == "sample":
        return 0.0, 1.0, 1 / sigma, -alpha / sigma
    if prediction_type == "v_prediction":
        return alpha, -sigma, sigma, alpha
    if prediction_type == "flow":
        return 1.0, -sigma, 1.0, alpha
    raise InputError(f"prediction_type {prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")


def ddim_coefficients(
    prediction_type: str, alpha: Coefficient, sigma: Coefficient, alpha_to: Coefficient, sigma_to: Coefficient
) -> tuple[Coefficient, Coefficient]:
    """(c_x, c_u) of the DDIM map x' = alpha_to x0 + sigma_to eps = c_x x + c_u u from (alpha, sigma)."""
    p, q, r, w = linear_maps(prediction_type, alpha, sigma)
    return alpha_to * p + sigma_to * r, alpha_to * q + sigma_to * w


def _broadcast(c: Coefficient, like: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(c, dtype=like.dtype, device=like.device)
    while c.dim() < like.dim():
        c = c.unsqueeze(-1)
    return c


def to_x0(prediction_type: str, x: torch.Tensor, u: torch.Tensor, alpha: Coefficient, sigma: Coefficient) -> torch.Tensor:
    """x0 = p x + q u."""
    p, q, _, _ = linear_maps(prediction_type, alpha, sigma)
    return _broadcast(p, x) * x + _broadcast(q, x) * u


def to_eps_from(prediction_type: str, x: torch.Tensor, u: torch.Tensor, alpha: Coefficient, sigma: Coefficient) -> torch.Tensor:
    """eps = r x + w u."""
    _, _, r, w = linear_maps(prediction_type, alpha, sigma)
    return _broadcast(r, x) * x + _broadcast(w, x) * u
