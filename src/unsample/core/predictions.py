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

The functions below the maps are the DDPM family's conversions in terms of a = alphas_cumprod.
"""

from __future__ import annotations

import torch


def _coeffs(alpha: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    while a.dim() < like.dim():
        a = a.unsqueeze(-1)
    return a.sqrt(), (1 - a).sqrt()


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
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")


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


def eps_to_x0(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    sa, s1a = _coeffs(alpha, x)
    return (x - s1a * eps) / sa


def x0_to_eps(x: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(a) x0) / sqrt(1 - a)."""
    sa, s1a = _coeffs(alpha, x)
    return (x - sa * x0) / s1a


def v_to_eps(x: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(a) v + sqrt(1 - a) x_t."""
    sa, s1a = _coeffs(alpha, x)
    return sa * v + s1a * x


def v_to_x0(x: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x0 = sqrt(a) x_t - sqrt(1 - a) v."""
    sa, s1a = _coeffs(alpha, x)
    return sa * x - s1a * v


def eps_to_v(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """v = sqrt(a) eps - sqrt(1 - a) x0, with x0 from eps."""
    sa, s1a = _coeffs(alpha, x)
    return sa * eps - s1a * eps_to_x0(x, eps, alpha)


def to_eps(prediction_type: str, x: torch.Tensor, output: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The eps implied by a model output of the given diffusers ``prediction_type``."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return v_to_eps(x, output, alpha)
    if prediction_type == "sample":
        return x0_to_eps(x, output, alpha)
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use epsilon, v_prediction or sample")
