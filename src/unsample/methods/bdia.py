"""BDIA: exact inversion by bidirectional integration approximation (Zhang, Lewis, Kleijn,
"Exact Diffusion Inversion via Bidirectional Integration Approximation", ECCV 2024), on DDIM.

Grid positions run 0 (noise) .. N (image). With ``phi(z, u, i, j)`` the DDIM map from position i
to j (`unsample.methods.ddim.ddim_map`, any family) and ``u_i = u(z_i, t_i)`` the model output
evaluated once at the middle state, the two increments from z_i are

    forward  (toward the image): D+_i = phi(z_i, u_i, i, i + 1) - z_i
    backward (toward the noise): D-_i = phi(z_i, u_i, i, i - 1) - z_i

and one sampling step combines the state two positions back with both:

    z_{i+1} = gamma (z_{i-1} - D-_i) + (1 - gamma) z_i + D+_i                 sample_step
    z_{i-1} = (z_{i+1} - D+_i - (1 - gamma) z_i) / gamma + D-_i              invert_step

Given two consecutive states either direction is algebraically exact at one model evaluation
per step (gamma = 0 is plain DDIM, which is not invertible this way). Inversion starts with one
plain DDIM inversion step from the image z_N to z_{N-1} (no earlier state exists), then runs
`invert_step` down to z_0. Exact replay therefore starts from the stored pair (z_0, z_1), or
(z_{k-1}, z_k) for start step k, and reproduces z_N = the image latent exactly.

Symbols -> names: z_i -> ``trajectory[i]``, gamma -> ``config.gamma``, D+/D- -> ``fwd``/``bwd``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import TimestepGrid
from unsample.methods import ddim
from unsample.methods.base import Method, MethodConfig, MethodOutput, StateHook, StepCallback, bounded


def _increments(
    denoiser: Denoiser, z: torch.Tensor, i: int, grid: TimestepGrid
) -> tuple[torch.Tensor, torch.Tensor]:
    u = denoiser.output(z, grid.timesteps[i])
    fwd = ddim.ddim_map(z, u, denoiser.prediction_type, grid, i, i + 1) - z
    bwd = ddim.ddim_map(z, u, denoiser.prediction_type, grid, i, i - 1) - z
    return fwd, bwd


def sample_step(
    denoiser: Denoiser, z_prev: torch.Tensor, z: torch.Tensor, i: int, grid: TimestepGrid, gamma: float
) -> torch.Tensor:
    """z_{i+1} from (z_{i-1}, z_i), for 1 <= i < N."""
    fwd, bwd = _increments(denoiser, z, i, grid)
    return gamma * (z_prev - bwd) + (1 - gamma) * z + fwd


def invert_step(
    denoiser: Denoiser, z: torch.Tensor, z_next: torch.Tensor, i: int, grid: TimestepGrid, gamma: float
) -> torch.Tensor:
    """z_{i-1} from (z_i, z_{i+1}): the exact inverse of `sample_step`."""
    fwd, bwd = _increments(denoiser, z, i, grid)
    return (z_next - fwd - (1 - gamma) * z) / gamma + bwd


@dataclass(frozen=True)
class BDIAConfig(MethodConfig):
    """gamma in (0, 1]: weight of the bidirectional correction (0 would be plain DDIM)."""

    gamma: float = bounded(0.96, low=0, high=1, low_open=True, note="0 is plain DDIM, which is not exactly invertible")


def invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: BDIAConfig,
    callback: StepCallback | None = None, generator: torch.Generator | None = None,
) -> MethodOutput:
    """BDIA inversion: one DDIM inversion step, then exact bidirectional steps down to z_0."""
    n = len(grid)
    states: list[torch.Tensor] = [torch.empty(0)] * (n + 1)
    states[n] = latent.to(denoiser.dtype)
    u = denoiser.output(states[n], grid.timesteps[n - 1])
    states[n - 1] = ddim.invert_step(states[n], u, denoiser.prediction_type, grid, n - 1)
    if callback is not None:
        callback(0, states[n - 1])
    for i in range(n - 1, 0, -1):
        states[i - 1] = invert_step(denoiser, states[i], states[i + 1], i, grid, config.gamma)
        if callback is not None:
            callback(n - i, states[i - 1])
    return MethodOutput(trajectory=torch.stack(states))


def sample(
    denoiser: Denoiser, grid: TimestepGrid, inverted: MethodOutput, start_step: int, config: BDIAConfig,
    callback: StepCallback | None = None,
    on_state: StateHook | None = None,
) -> torch.Tensor:
    """Replay from the stored pair at ``start_step`` (step 0 starts from the pair (z_0, z_1)).

    ``on_state`` sees z_{i+1} only: the next step's z_{i-1} is this step's z_i, the state the
    hook saw (and possibly changed) one step earlier, so one chain is all there is."""
    grid.check_start(start_step)
    n = len(grid)
    if start_step == n:
        return inverted.trajectory[n].to(denoiser.dtype)
    k = max(start_step, 1)
    z_prev = inverted.trajectory[k - 1].to(denoiser.dtype)
    z = inverted.trajectory[k].to(denoiser.dtype)
    for i in range(k, n):
        z_prev, z = z, sample_step(denoiser, z_prev, z, i, grid, config.gamma)
        if on_state is not None:
            on_state(i, {"trajectory": z})
        if callback is not None:
            callback(i, z)
    return z


METHOD = Method(
    name="bdia",
    summary="BDIA: bidirectional integration on DDIM; exact at one model evaluation per step",
    config=BDIAConfig,
    invert=invert,
    sample=sample,
    calls_per_step="1 (2)",
    exact=True,
)
