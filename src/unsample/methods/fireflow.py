"""FireFlow (Deng, He, Mei, Wang, Tang, "FireFlow: Fast Inversion of Rectified Flow for Image
Semantic Editing", arXiv:2412.07517, 2024): a midpoint solver of the rectified-flow ODE that reuses
the previous step's midpoint velocity in place of a fresh evaluation at the step's start.

For a step from t_i to t_{i+1} with h = t_{i+1} - t_i (``denoise_fireflow`` in the official code's
``src/flux/sampling.py``):

    v_hat_i     = v_theta(Z_{t_0}, t_0)             on the first step only
                = v_mid_{i-1}                        afterwards (the previous step's midpoint velocity)
    Z_mid       = Z_{t_i} + (h / 2) v_hat_i
    v_mid_i     = v_theta(Z_mid, t_i + h / 2)
    Z_{t_{i+1}} = Z_{t_i} + h v_mid_i

The reused velocity is O(h) away from v(Z_{t_i}, t_i), so Z_mid is off by O(h^2) and the step
keeps the midpoint rule's local error O(h^3): second order at one model evaluation per step after
the first (which needs two). Sampling walks the noise level down (h < 0), inversion up (h > 0),
the same update; the official code inverts that way (``timesteps[::-1]``).

Our notation: the flow is x_s = (1 - s) x0 + s eps, the model output u is the velocity
v = eps - x0 = dx/ds (`unsample.core.flow_schedule`), so the paper's t is our noise level s.
Symbols -> names: Z_t -> ``x``; t_i, t_{i+1} -> ``grid.sigma[frm]``, ``grid.sigma[to]``; h -> ``h``;
v_hat_i -> ``v_hat``; Z_mid -> ``x_mid``; v_mid_i -> ``v_mid``. Time labels: the grid's at grid
positions, s_mid * num_train_timesteps at midpoints (`unsample.methods._flow`).

Pairing and replay. Sampling step i goes from position i to i + 1, inversion step i from
position i + 1 to i, starting at the image (position N, s = 0). Each run, inversion or sampling,
starts its chain of reused velocities afresh: sampling from start step k evaluates v at
(x_k, t_k) first, exactly what the official sampler does at its first step, so replaying needs
only the stored trajectory [N + 1, ...] (noise first) and reproduces the method's own sampler.
Cost: 1 model evaluation per step (2 with CFG) plus one (two) on a run's first step:
N + 1 (2N + 2) for an N-step run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import TimestepGrid
from unsample.methods._flow import check_velocity, label_at, position_label, refuses_unless_velocity
from unsample.methods.base import (
    Method,
    MethodConfig,
    MethodOutput,
    StepCallback,
    replay_from_trajectory,
    walk_to_image,
    walk_to_noise,
)


def _step(
    denoiser: Denoiser, x: torch.Tensor, v_hat: torch.Tensor | None, grid: TimestepGrid, frm: int, to: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The FireFlow update from position ``frm`` to ``to``; returns the new state and the velocity
    the next step reuses. ``v_hat`` None (a run's first step) evaluates v at the start point."""
    s = grid.sigma[frm]
    h64 = grid.sigma[to] - s
    if h64 == 0:  # a zero-length step moves nothing and hands the velocity on
        return x, v_hat
    h = h64.to(x.dtype)
    # the start velocity: a fresh evaluation on the first step, the last midpoint velocity after
    if v_hat is None:
        v_hat = denoiser.output(x, position_label(denoiser, grid, frm))
    # half a step with it, the midpoint velocity there, and the full step with that
    x_mid = x + (h / 2) * v_hat
    v_mid = denoiser.output(x_mid, label_at(denoiser, s + h64 / 2))
    return x + h * v_mid, v_mid


def sample_step(
    denoiser: Denoiser, x: torch.Tensor, v_hat: torch.Tensor | None, grid: TimestepGrid, i: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One FireFlow step toward the image: position i -> i + 1."""
    return _step(denoiser, x, v_hat, grid, i, i + 1)


def invert_step(
    denoiser: Denoiser, x: torch.Tensor, v_hat: torch.Tensor | None, grid: TimestepGrid, i: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One FireFlow step toward noise: position i + 1 -> i."""
    return _step(denoiser, x, v_hat, grid, i + 1, i)


def sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    x: torch.Tensor,
    *,
    start_step: int = 0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """FireFlow sampling from grid position ``start_step`` to the end; returns the image latent."""
    check_velocity(denoiser, "fireflow")
    reused: list[torch.Tensor | None] = [None]  # the last midpoint velocity, carried from step to step

    def step(x: torch.Tensor, i: int) -> torch.Tensor:
        x, reused[0] = sample_step(denoiser, x, reused[0], grid, i)
        return x

    return walk_to_image(step, grid, x.to(denoiser.dtype), start_step, callback)


def invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """FireFlow inversion of an image latent; returns the trajectory [N + 1, ...], noise first."""
    check_velocity(denoiser, "fireflow")
    reused: list[torch.Tensor | None] = [None]

    def step(x: torch.Tensor, i: int) -> torch.Tensor:
        x, reused[0] = invert_step(denoiser, x, reused[0], grid, i)
        return x

    return walk_to_noise(step, grid, latent.to(denoiser.dtype), callback)


@dataclass(frozen=True)
class FireFlowConfig(MethodConfig):
    """FireFlow has no knobs beyond the working precision."""


def _invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: FireFlowConfig,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> MethodOutput:
    return MethodOutput(trajectory=invert(denoiser, grid, latent, callback=callback))


METHOD = Method(
    name="fireflow",
    summary="FireFlow: midpoint steps of the rectified-flow ODE reusing the last midpoint velocity, "
    "second order at 1 call per step + 1 on the first (flow models)",
    config=FireFlowConfig,
    invert=_invert,
    sample=replay_from_trajectory(sample),
    calls_per_step="1 (2)",
    refuses=refuses_unless_velocity,
)
