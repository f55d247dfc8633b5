"""DDIM inversion (Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021, eta = 0).

For neighbouring grid positions s (less noisy) and t (noisier), with eps = eps(x, tau):

    x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    x_s    = sqrt(a_s) x0_hat + sqrt(1 - a_s) eps                       sample_step: t -> s
    x0_hat = (x_s - sqrt(1 - a_s) eps) / sqrt(a_s)
    x_t    = sqrt(a_t) x0_hat + sqrt(1 - a_t) eps                       invert_step: s -> t

Symbols -> names: a_t -> ``a_t`` (alphas_cumprod at t), eps -> ``eps``, x_t -> ``x_t``.

Pairing. On a `TimestepGrid` of N steps, sampling step i maps position i (a = alphas[i]) to
position i + 1 (a = alphas[i + 1]) with eps(x_i, timesteps[i]). Inversion step i maps
position i + 1 back to i and uses eps(x_{i+1}, timesteps[i]): the model is evaluated at the
point we have, with the time label of the step being undone. That substitution of x_{i+1}
for the unknown x_i is the whole approximation of DDIM inversion. The first inversion step
starts from the image latent at a = alphas[N] = final_alpha_cumprod (alphas_cumprod[0], or 1
with ``set_alpha_to_one``) and goes to the lowest time label. This is the pairing of
diffusers' DDIMInverseScheduler for "leading" and "trailing" spacing (tests check equality),
and it also holds for "linspace", which that scheduler refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import TimestepGrid
from unsample.methods.base import Method, MethodConfig, MethodOutput, StepCallback, replay_from_trajectory


def _ddim_map(x: torch.Tensor, eps: torch.Tensor, a_from: torch.Tensor, a_to: torch.Tensor) -> torch.Tensor:
    a_from = torch.as_tensor(a_from, dtype=torch.float64)
    a_to = torch.as_tensor(a_to, dtype=torch.float64)
    c_x = (a_to / a_from).sqrt().to(x.dtype)
    c_eps = ((1 - a_to).sqrt() - (a_to * (1 - a_from) / a_from).sqrt()).to(x.dtype)
    return c_x * x + c_eps * eps.to(x.dtype)


def sample_step(x_t: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step toward the image: x_t -> x_s."""
    return _ddim_map(x_t, eps, a_t, a_s)


def invert_step(x_s: torch.Tensor, eps: torch.Tensor, a_s: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """One DDIM step toward noise: x_s -> x_t, exact inverse of `sample_step` for the same eps."""
    return _ddim_map(x_s, eps, a_s, a_t)


def sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    x: torch.Tensor,
    *,
    start_step: int = 0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run DDIM sampling from grid position ``start_step`` to the end; return the image latent."""
    grid.check_start(start_step)
    x = x.to(denoiser.dtype)
    for i in range(start_step, len(grid)):
        eps = denoiser(x, grid.timesteps[i])
        x = sample_step(x, eps, grid.alphas[i], grid.alphas[i + 1])
        if callback is not None:
            callback(i, x)
    return x


def invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DDIM inversion of an image latent; returns the trajectory [N + 1, ...], noise first."""
    x = latent.to(denoiser.dtype)
    states = [x]
    for i in reversed(range(len(grid))):
        eps = denoiser(x, grid.timesteps[i])
        x = invert_step(x, eps, grid.alphas[i + 1], grid.alphas[i])
        states.append(x)
        if callback is not None:
            callback(len(grid) - 1 - i, x)
    return torch.stack(states[::-1])


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
    summary="DDIM inversion: the deterministic DDIM step run backwards, eps taken at the known point",
    config=DDIMConfig,
    invert=_invert,
    sample=replay_from_trajectory(sample),
    calls_per_step="1 (2)",
)
