"""RF-Solver (Wang, Pu, Qi, Guo, Ma, Huang, Chen, Li, Shan, "Taming Rectified Flow for Inversion
and Editing", arXiv:2411.04746, 2024; ICML 2025): a second-order solver of the rectified-flow ODE.

The paper writes the exact solution of the flow ODE over one step and expands the velocity to
first order in a Taylor series around the step's start, estimating the derivative by a finite
difference over half a step. In the official code (``denoise`` in ``src/flux/sampling.py``), for a
step from t_i to t_{i+1} with h = t_{i+1} - t_i:

    v1      = v_theta(Z_{t_i}, t_i)
    Z_mid   = Z_{t_i} + (h / 2) v1
    v2      = v_theta(Z_mid, t_i + h / 2)
    dv      = (v2 - v1) / (h / 2)                                  first-order derivative estimate
    Z_{t_{i+1}} = Z_{t_i} + h v1 + (1/2) h^2 dv

which is, in exact arithmetic, the explicit midpoint rule Z + h v2 (second order: local error
O(h^3), global O(h^2); third order on the closed-form Gaussian flow, where the h^3 term vanishes,
see `unsample_lab.bench.flow_orders`); we keep the paper's form. Sampling walks the noise level down (h < 0),
inversion walks it up (h > 0) with the same update; that is how the official code inverts
(``timesteps[::-1]``).

Our notation: the flow is x_s = (1 - s) x0 + s eps, the model output u is the velocity
v = eps - x0 = dx/ds (`unsample.core.flow_schedule`), so the paper's t is our noise level s.
Symbols -> names: Z_t -> ``x``; t_i, t_{i+1} -> ``grid.sigma[frm]``, ``grid.sigma[to]``; h -> ``h``;
v1, v2 -> ``v1``, ``v2``; Z_mid -> ``x_mid``; dv -> ``dv``. The model is called with the grid's time
label at grid positions and with s_mid * num_train_timesteps at the midpoint (`unsample.methods._flow`).

Pairing. On a `TimestepGrid` of N steps, sampling step i goes from position i to i + 1; inversion
step i from position i + 1 to i, starting at the image (position N, s = 0, time label 0). Both
evaluate the model at the point they have, at its own noise level (there is no DDIM-style
borrowing of the other end's label). Cost: 2 model evaluations per step (4 with CFG, in two
batched calls). The trajectory [N + 1, ...] is stored noise first, like DDIM's; sampling needs only
the state at the start step.
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


def _step(denoiser: Denoiser, x: torch.Tensor, grid: TimestepGrid, frm: int, to: int) -> torch.Tensor:
    """The RF-Solver update from grid position ``frm`` to ``to`` (either direction)."""
    s = grid.sigma[frm]
    h64 = grid.sigma[to] - s
    if h64 == 0:  # a zero-length step moves nothing
        return x
    h = h64.to(x.dtype)
    # first evaluation, at the point we have
    v1 = denoiser.output(x, position_label(denoiser, grid, frm))
    # half an Euler step, and the second evaluation there
    x_mid = x + (h / 2) * v1
    v2 = denoiser.output(x_mid, label_at(denoiser, s + h64 / 2))
    # the derivative of v along the path, by finite difference, and the second-order Taylor step
    dv = (v2 - v1) / (h / 2)
    return x + h * v1 + (h**2 / 2) * dv


def sample_step(denoiser: Denoiser, x: torch.Tensor, grid: TimestepGrid, i: int) -> torch.Tensor:
    """One RF-Solver step toward the image: position i -> i + 1."""
    return _step(denoiser, x, grid, i, i + 1)


def invert_step(denoiser: Denoiser, x: torch.Tensor, grid: TimestepGrid, i: int) -> torch.Tensor:
    """One RF-Solver step toward noise: position i + 1 -> i."""
    return _step(denoiser, x, grid, i + 1, i)


def sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    x: torch.Tensor,
    *,
    start_step: int = 0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """RF-Solver sampling from grid position ``start_step`` to the end; returns the image latent."""
    check_velocity(denoiser, "rf-solver")
    return walk_to_image(lambda x, i: sample_step(denoiser, x, grid, i), grid, x.to(denoiser.dtype), start_step, callback)


def invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """RF-Solver inversion of an image latent; returns the trajectory [N + 1, ...], noise first."""
    check_velocity(denoiser, "rf-solver")
    return walk_to_noise(lambda x, i: invert_step(denoiser, x, grid, i), grid, latent.to(denoiser.dtype), callback)


@dataclass(frozen=True)
class RFSolverConfig(MethodConfig):
    """RF-Solver has no knobs beyond the working precision (the paper's solver is fixed at second order)."""


def _invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: RFSolverConfig,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> MethodOutput:
    return MethodOutput(trajectory=invert(denoiser, grid, latent, callback=callback))


METHOD = Method(
    name="rf-solver",
    summary="RF-Solver: second-order Taylor (midpoint) steps of the rectified-flow ODE, both ways (flow models)",
    config=RFSolverConfig,
    invert=_invert,
    sample=replay_from_trajectory(sample),
    calls_per_step="2 (4)",
    refuses=refuses_unless_velocity,
)
