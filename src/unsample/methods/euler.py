"""Euler inversion in sigma space (Karras et al., "Elucidating the Design Space of
Diffusion-Based Generative Models", NeurIPS 2022; k-diffusion's ``sample_euler``).

The probability-flow ODE in the variance-exploding parametrisation, with

    sigma = sqrt((1 - a) / a),   x_sigma = x_t / sqrt(a) = x_t * sqrt(1 + sigma^2),
    D(x_sigma) = x_sigma - sigma * eps,   dx/dsigma = (x_sigma - D) / sigma = eps,

is integrated with explicit Euler steps:

    sample_step: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * eps(x_i, sigma_i)     (sigma down)
    invert_step: x_i     = x_{i+1} + (sigma_i - sigma_{i+1}) * eps(x_{i+1}, sigma_{i+1})  (sigma up)

Symbols -> names: sigma_i -> ``grid.sigmas[i]``, x_sigma -> ``x`` (the state), eps -> ``eps``.
States live in sigma space, so the inverted noise has std about sqrt(1 + sigma_max^2),
i.e. about sigma_max (14.6 for SD), not 1. The model is called on x_sigma / sqrt(1 + sigma^2).
Inversion evaluates the derivative at the point it has (explicit Euler backwards in time);
at the image latent, whose sigma (from final_alpha_cumprod) has no time label of its own, the
lowest time label of the grid stands in. Sampling with this step is DDIM written in sigma
space; the two methods differ in where inversion evaluates eps.

The default grid is Karras' (rho = 7) between the schedule's sigma_min and sigma_max.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import Schedule, TimestepGrid
from unsample.errors import InputError
from unsample.methods.base import Method, MethodConfig, MethodOutput, StepCallback, bounded, replay_from_trajectory


def _model_eps(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    scale = (1 + sigma**2).sqrt().to(x.dtype)
    return denoiser(x / scale, t)


def sample_step(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler step toward the image: sigma -> sigma_next < sigma."""
    return x + (sigma_next - sigma).to(x.dtype) * eps.to(x.dtype)


def invert_step(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler step toward noise: sigma -> sigma_next > sigma."""
    return x + (sigma_next - sigma).to(x.dtype) * eps.to(x.dtype)


def to_sigma_space(latent: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma = x_t * sqrt(1 + sigma^2)."""
    return latent * (1 + sigma**2).sqrt().to(latent.dtype)


def from_sigma_space(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = x_sigma / sqrt(1 + sigma^2)."""
    return x / (1 + sigma**2).sqrt().to(x.dtype)


def sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    x: torch.Tensor,
    *,
    start_step: int = 0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler sampling from sigma-space state ``x`` at ``start_step``; returns the image latent (x_t space)."""
    grid.check_start(start_step)
    sigmas = grid.sigmas
    x = x.to(denoiser.dtype)
    for i in range(start_step, len(grid)):
        eps = _model_eps(denoiser, x, sigmas[i], grid.timesteps[i])
        x = sample_step(x, eps, sigmas[i], sigmas[i + 1])
        if callback is not None:
            callback(i, x)
    return from_sigma_space(x, sigmas[-1])


def invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler inversion of an image latent; the sigma-space trajectory [N + 1, ...], noise first."""
    sigmas = grid.sigmas
    n = len(grid)
    x = to_sigma_space(latent.to(denoiser.dtype), sigmas[n])
    states = [x]
    for i in reversed(range(n)):
        label = grid.timesteps[min(i + 1, n - 1)]
        eps = _model_eps(denoiser, x, sigmas[i + 1], label)
        x = invert_step(x, eps, sigmas[i + 1], sigmas[i])
        states.append(x)
        if callback is not None:
            callback(n - 1 - i, x)
    return torch.stack(states[::-1])


@dataclass(frozen=True)
class EulerConfig(MethodConfig):
    """sigmas: "karras" (rho-spaced between sigma_min and sigma_max) or "timesteps" (the DDIM grid)."""

    sigmas: Literal["karras", "timesteps"] = "karras"
    rho: float = bounded(7.0, low=0, low_open=True, note="the Karras grid's spacing exponent")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sigmas not in ("karras", "timesteps"):
            raise InputError(f"sigmas={self.sigmas!r} is not supported; use karras or timesteps")

    def make_grid(self, schedule: Schedule, steps: int) -> TimestepGrid:
        if self.sigmas == "karras":
            return schedule.karras_grid(steps, rho=self.rho)
        return schedule.grid(steps)


def _invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: EulerConfig,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> MethodOutput:
    return MethodOutput(trajectory=invert(denoiser, grid, latent, callback=callback), stats={"space": "sigma"})



def _refuses(schedule: Schedule) -> str | None:
    if schedule.has_karras_grid:
        return None
    return ("it steps in k-diffusion's sigma = sigma / alpha, which is infinite at a flow's pure-noise end "
            "(alpha = 0); on a flow model use ddim, whose step is the Euler step of the flow ODE")


METHOD = Method(
    name="euler",
    summary="Euler inversion in sigma space (k-diffusion), walked from sigma_min up to sigma_max",
    config=EulerConfig,
    invert=_invert,
    sample=replay_from_trajectory(sample),
    calls_per_step="1 (2)",
    trajectory_is_sampler_path=True,
    refuses=_refuses,
)
