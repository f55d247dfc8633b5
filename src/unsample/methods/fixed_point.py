"""Fixed-point (CFG-corrected) DDIM inversion: solve each inverse step implicitly.

Pan et al., "Effective Real Image Editing with Accelerated Iterative Diffusion Inversion"
(AIDI, ICCV 2023); Garibi et al., "ReNoise" (ECCV 2024). With the sampling step written
x_s = A x_t + B u(x_t, t) (`unsample.methods.ddim.coefficients`, any family), DDIM inversion
evaluates u at the known point x_s; the exact inverse of the sampling step needs it at the
unknown x_t:

    x_t = (x_s - B u(x_t, t)) / A        (solve for x_t)

Starting from the DDIM guess x_t^0 = ddim.invert_step(x_s, u(x_s, t)), iterate

    x_t^{k+1} = g(x_t^k),   g(x) = (x_s - B u(x, t)) / A

until the forward step from x_t^k lands back on x_s: the residual
``||A x_t^k + B u(x_t^k, t) - x_s|| / ||x_s||`` (which equals
``|A| * ||x_t^k - x_t^{k+1}|| / ||x_s||``, free to compute) falls below
``tol``, or ``max_iter`` iterations have run. At large guidance and few steps g can expand
near the image end of the grid and the iterates run away; then the step returns the iterate
with the smallest residual (at worst the DDIM guess) rather than the last one. Optional
Anderson acceleration (AIDI) mixes the last ``anderson_m`` iterates by least squares on their
residuals. ``skip_fraction`` leaves the noisiest fraction of inversion steps unrefined (plain
DDIM there; the "tless"/refine_skip knob), where eps changes least between neighbouring points.
Sampling is plain DDIM: a converged fixed point is exactly the inverse of DDIM's sampling step,
with CFG included.

Symbols -> names: x_s -> ``x_s``, x_t^k -> ``x``, g -> ``step``. Cost: 1 + k evaluations per
step (2 + 2k with CFG); ``stats["residuals"]`` and ``stats["iterations"]`` record each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import TimestepGrid
from unsample.methods import ddim
from unsample.methods.base import Method, MethodConfig, MethodOutput, StepCallback, bounded, replay_from_trajectory


@dataclass(frozen=True)
class FixedPointConfig(MethodConfig):
    """max_iter: iterations after the DDIM guess; tol: relative residual to stop at;
    anderson_m: Anderson memory (0 = plain iteration); skip_fraction: noisiest share left unrefined."""

    max_iter: int = bounded(5, low=0, note="0 keeps the DDIM guess")
    tol: float = bounded(1e-4, low=0)
    anderson_m: int = bounded(0, low=0, note="0 turns acceleration off")
    skip_fraction: float = bounded(0.0, low=0, high=1)


def _anderson(xs: list[torch.Tensor], gs: list[torch.Tensor]) -> torch.Tensor:
    """Type-II Anderson mixing of iterates xs with images gs = g(xs)."""
    f = torch.stack([(g - x).flatten() for x, g in zip(xs, gs)], dim=1)  # residual columns
    if f.shape[1] == 1:
        return gs[-1]
    df = f[:, 1:] - f[:, :-1]
    dg = torch.stack([g.flatten() for g in gs], dim=1)
    dg = dg[:, 1:] - dg[:, :-1]
    gamma = torch.linalg.lstsq(df, f[:, -1:]).solution
    return (gs[-1].flatten() - (dg @ gamma).squeeze(1)).view_as(gs[-1])


def invert_step(
    denoiser: Denoiser,
    x_s: torch.Tensor,
    grid: TimestepGrid,
    i: int,
    config: FixedPointConfig,
    refine: bool = True,
) -> tuple[torch.Tensor, float, int]:
    """Solve x_s = A x_t + B u(x_t, t_i) for x_t (position i + 1 -> i); return x_t, the last residual
    and the iterations run."""
    t, kind = grid.timesteps[i], denoiser.prediction_type
    x = ddim.invert_step(x_s, denoiser.output(x_s, t), kind, grid, i)  # the DDIM guess
    if not refine or config.max_iter == 0:
        return x, float("nan"), 0
    a_coef, b_coef = (c.to(x_s.dtype) for c in ddim.coefficients(kind, grid, i, i + 1))
    scale = float(a_coef.abs()) / float(x_s.norm().clamp_min(1e-12))
    xs: list[torch.Tensor] = []
    gs: list[torch.Tensor] = []
    best, best_residual = x, float("inf")
    k = 0
    for k in range(1, config.max_iter + 1):
        g = (x_s - b_coef * denoiser.output(x, t)) / a_coef
        residual = float((g - x).norm()) * scale
        if residual < best_residual:
            best, best_residual = x, residual
        if config.anderson_m > 0:
            xs, gs = (xs + [x])[-config.anderson_m - 1 :], (gs + [g])[-config.anderson_m - 1 :]
            x = _anderson(xs, gs)
        else:
            x = g
        if residual <= config.tol:
            break
    if residual > best_residual:  # the iteration stopped contracting: keep the iterate that fit best
        return best, best_residual, k
    return x, residual, k


def invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: FixedPointConfig,
    callback: StepCallback | None = None, generator: torch.Generator | None = None,
) -> MethodOutput:
    """Fixed-point inversion over the grid; the trajectory (noise first) and per-step residuals."""
    n = len(grid)
    refined_steps = n - int(round(config.skip_fraction * n))
    x = latent.to(denoiser.dtype)
    states = [x]
    residuals: list[float] = []
    iterations: list[int] = []
    for j, i in enumerate(reversed(range(n))):
        x, res, k = invert_step(denoiser, x, grid, i, config, refine=j < refined_steps)
        states.append(x)
        residuals.append(res)
        iterations.append(k)
        if callback is not None:
            callback(j, x)
    stats = {"residuals": residuals, "iterations": iterations, "mean_iterations": sum(iterations) / n}
    return MethodOutput(trajectory=torch.stack(states[::-1]), stats=stats)



METHOD = Method(
    name="fixed-point",
    summary="fixed-point DDIM inversion: iterate each backward step until the forward step lands back (AIDI/ReNoise)",
    config=FixedPointConfig,
    invert=invert,
    sample=replay_from_trajectory(ddim.sample),
    calls_per_step="1+k (2+2k)",
    trajectory_is_sampler_path=True,
)
