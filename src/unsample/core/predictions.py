"""Conversions between the three things a diffusion model may predict.

With ``x_t = sqrt(a) * x0 + sqrt(1 - a) * eps`` and ``v = sqrt(a) * eps - sqrt(1 - a) * x0``
(Salimans & Ho, 2022), any one prediction and ``x_t`` determine the other two.
"""

from __future__ import annotations

import torch


def _coeffs(alpha: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    while a.dim() < like.dim():
        a = a.unsqueeze(-1)
    return a.sqrt(), (1 - a).sqrt()


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
