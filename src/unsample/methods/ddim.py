"""DDIM inversion (Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021, eta = 0).

Every family writes its state as x = alpha x0 + sigma eps (`unsample.core.predictions`). For grid
positions s (less noisy) and t (noisier), with the model output u = u(x, tau) and the x0 and eps
it implies at the position the state is at,

    x_s = alpha_s x0_hat(x_t, u) + sigma_s eps_hat(x_t, u)                   sample_step: t -> s
    x_t = alpha_t x0_hat(x_s, u) + sigma_t eps_hat(x_s, u)                   invert_step: s -> t

Both are affine in (x, u): x' = c_x x + c_u u (`unsample.core.predictions.ddim_coefficients`).
For an eps model (DDPM family) c_x = alpha_s / alpha_t, c_u = sigma_s - alpha_s sigma_t / alpha_t,
the DDIM paper's step; for a flow (alpha = 1 - sigma, u the velocity) c_x = 1 and
c_u = sigma_s - sigma_t: the DDIM map between two points of a flow's curve is exactly the Euler
step of the flow ODE dx/dsigma = v, the sampler of diffusers' FlowMatchEulerDiscreteScheduler.

Symbols -> names: alpha, sigma -> ``grid.alpha``, ``grid.sigma``; u -> ``u``; x_t -> ``x``.

Pairing. On a `TimestepGrid` of N steps, sampling step i maps position i to position i + 1 with
u(x_i, timesteps[i]). Inversion step i maps position i + 1 back to i and uses
u(x_{i+1}, timesteps[i]): the model is evaluated at the point we have, with the time label of the
step being undone. That substitution of x_{i+1} for the unknown x_i is the whole approximation
of DDIM inversion. The first inversion step starts from the image latent at position N (the
DDPM family's final_alpha_cumprod, a flow's sigma 0) and goes to the lowest time label. This is
the pairing of diffusers' DDIMInverseScheduler for "leading" and "trailing" spacing (tests
check equality), and it also holds for "linspace", which that scheduler refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.predictions import ddim_coefficients
from unsample.core.schedule import TimestepGrid
from unsample.methods.base import (
    Method,
    MethodConfig,
    MethodOutput,
    StepCallback,
    replay_from_trajectory,
    walk_to_image,
    walk_to_noise,
)


def coefficients(prediction_type: str, grid: TimestepGrid, frm: int, to: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_x, c_u) of the DDIM map from grid position ``frm`` to ``to`` (float64)."""
    c_x, c_u = ddim_coefficients(prediction_type, grid.alpha[frm], grid.sigma[frm], grid.alpha[to], grid.sigma[to])
    return torch.as_tensor(c_x, dtype=torch.float64), torch.as_tensor(c_u, dtype=torch.float64)


def ddim_map(x: torch.Tensor, u: torch.Tensor, prediction_type: str, grid: TimestepGrid, frm: int, to: int) -> torch.Tensor:
    """The DDIM map x' = c_x x + c_u u from grid position ``frm`` to ``to``."""
    c_x, c_u = coefficients(prediction_type, grid, frm, to)
    return c_x.to(x.dtype) * x + c_u.to(x.dtype) * u.to(x.dtype)


def sample_step(x: torch.Tensor, u: torch.Tensor, prediction_type: str, grid: TimestepGrid, i: int) -> torch.Tensor:
    """One deterministic DDIM step toward the image: position i -> i + 1."""
    return ddim_map(x, u, prediction_type, grid, i, i + 1)


def invert_step(x: torch.Tensor, u: torch.Tensor, prediction_type: str, grid: TimestepGrid, i: int) -> torch.Tensor:
    """One DDIM step toward noise: position i + 1 -> i, exact inverse of `sample_step` for the same u
    when u is an eps prediction (for other parametrisations the inverse holds for the same eps)."""
    return ddim_map(x, u, prediction_type, grid, i + 1, i)


def sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    x: torch.Tensor,
    *,
    start_step: int = 0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run DDIM sampling from grid position ``start_step`` to the end; return the image latent."""

    def step(x: torch.Tensor, i: int) -> torch.Tensor:
        return sample_step(x, denoiser.output(x, grid.timesteps[i]), denoiser.prediction_type, grid, i)

    return walk_to_image(step, grid, x.to(denoiser.dtype), start_step, callback)


def invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DDIM inversion of an image latent; returns the trajectory [N + 1, ...], noise first."""

    def step(x: torch.Tensor, i: int) -> torch.Tensor:
        return invert_step(x, denoiser.output(x, grid.timesteps[i]), denoiser.prediction_type, grid, i)

    return walk_to_noise(step, grid, latent.to(denoiser.dtype), callback)


@dataclass(frozen=True)
class DDIMConfig(MethodConfig):
    """DDIM inversion has no knobs beyond the working precision."""


def _invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: DDIMConfig,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> MethodOutput:
    return MethodOutput(trajectory=invert(denoiser, grid, latent, callback=callback))



METHOD = Method(
    name="ddim",
    summary="DDIM inversion: the deterministic DDIM step (a flow's Euler step) run backwards, the model taken at the known point",
    config=DDIMConfig,
    invert=_invert,
    sample=replay_from_trajectory(sample),
    calls_per_step="1 (2)",
    trajectory_is_sampler_path=True,
)
