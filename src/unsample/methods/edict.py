"""EDICT: Exact Diffusion Inversion via Coupled Transformations (Wallace, Gokul, Naik, CVPR 2023).

Two chains x, y start at the image latent. With the DDIM step written x_s = A x_t + B u, u the
model output (`unsample.methods.ddim.coefficients`: for an eps model A = sqrt(a_s / a_t) and
B = sqrt(1 - a_s) - sqrt(a_s (1 - a_t) / a_t), the paper's; for a flow A = 1, B = s_s - s_t),
one sampling step t -> s is

    x' = A x + B u(y, t)                      (1)
    y' = A y + B u(x', t)                     (2)
    x_s = p x' + (1 - p) y'                   (3)  mixing
    y_s = p y' + (1 - p) x_s                  (4)  mixing

and the inversion step s -> t undoes (4), (3), (2), (1) in that order, each exactly:
``y' = (y_s - (1 - p) x_s) / p``, ``x' = (x_s - (1 - p) y') / p``, ``y = (y' - B u(x', t)) / A``,
``x = (x' - B u(y, t)) / A``.

Leapfrog: on odd grid steps the chains swap roles (y is updated first). The role is a function
of the grid index i alone, the same in inversion and sampling, so the two line up for every
step count, odd or even, and every start step. (The diffusers community pipeline alternates by
loop counter, which lines up only when inversion and sampling cover the same number of steps
from the same end.)

Symbols -> names: x, y -> ``x``, ``y``; p -> ``config.p`` (default 0.8, see `EDICTConfig`); A, B -> ``a_coef``, ``b_coef``;
grid positions t, s -> ``i``, ``i + 1``. Cost: 2 model evaluations per step
(4 with CFG, in two batched calls). The trajectory holds the x chain; ``extras["y"]`` the y chain.
The reconstruction is the x chain's final state.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser, NonFiniteError
from unsample.core.schedule import TimestepGrid
from unsample.methods import ddim
from unsample.methods.base import Method, MethodConfig, MethodOutput, Precision, StateHook, StepCallback, bounded


def _coefs(denoiser: Denoiser, grid: TimestepGrid, i: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    a_coef, b_coef = ddim.coefficients(denoiser.prediction_type, grid, i, i + 1)
    return a_coef.to(dtype), b_coef.to(dtype)


def _swapped(i: int, leapfrog: bool) -> bool:
    return leapfrog and i % 2 == 1


def sample_step(
    denoiser: Denoiser, x: torch.Tensor, y: torch.Tensor, i: int, grid: TimestepGrid, p: float, leapfrog: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """EDICT step i toward the image (grid position i -> i + 1), equations (1)-(4)."""
    if _swapped(i, leapfrog):
        y, x = sample_step(denoiser, y, x, i, grid, p, False)
        return x, y
    t = grid.timesteps[i]
    a_coef, b_coef = _coefs(denoiser, grid, i, x.dtype)
    x_inter = a_coef * x + b_coef * denoiser.output(y, t)
    y_inter = a_coef * y + b_coef * denoiser.output(x_inter, t)
    x_new = p * x_inter + (1 - p) * y_inter
    y_new = p * y_inter + (1 - p) * x_new
    return x_new, y_new


def invert_step(
    denoiser: Denoiser, x: torch.Tensor, y: torch.Tensor, i: int, grid: TimestepGrid, p: float, leapfrog: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact inverse of `sample_step` i (grid position i + 1 -> i)."""
    if _swapped(i, leapfrog):
        y, x = invert_step(denoiser, y, x, i, grid, p, False)
        return x, y
    t = grid.timesteps[i]
    a_coef, b_coef = _coefs(denoiser, grid, i, x.dtype)
    # undo the mixing layers, (4) then (3)
    y_inter = (y - (1 - p) * x) / p
    x_inter = (x - (1 - p) * y_inter) / p
    # undo the two affine coupling steps, (2) then (1)
    y_old = (y_inter - b_coef * denoiser.output(x_inter, t)) / a_coef
    x_old = (x_inter - b_coef * denoiser.output(y_old, t)) / a_coef
    return x_old, y_old


@dataclass(frozen=True)
class EDICTConfig(MethodConfig):
    """p: mixing weight in (0, 1]; leapfrog: alternate which chain goes first; state arithmetic in float64.

    The paper uses p = 0.93. Our default is 0.8: each mixing layer pulls the chains together by
    a factor p^2 per step, and under classifier-free guidance of 3 or more at 20-50 steps, 0.93
    is too weak to hold them together once the prompt differs from the inverted one (or the noise
    is fresh): the chains separate to |x - y| ~ 3 (latent std ~1) and the image dissolves
    (docs/benchmarks.md, "EDICT edits"). A smaller p makes inversion grow the states faster
    (about (1/p) per step), so the state arithmetic defaults to float64, which keeps them exact
    to ~100 steps (the UNet still runs in its own dtype).
    """

    precision: Precision = "float64"
    p: float = bounded(0.8, low=0, high=1, low_open=True, note="the mixing weight; the paper uses 0.93")
    leapfrog: bool = True


def invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: EDICTConfig,
    callback: StepCallback | None = None, generator: torch.Generator | None = None,
) -> MethodOutput:
    """EDICT inversion: both chains from the image latent to noise; x and y trajectories."""
    x = latent.to(denoiser.dtype)
    y = x.clone()
    xs, ys = [x], [y]
    for i in reversed(range(len(grid))):
        try:
            x, y = invert_step(denoiser, x, y, i, grid, config.p, config.leapfrog)
        except NonFiniteError:
            raise NonFiniteError(
                f"EDICT's inverted chains overflowed at step {len(grid) - i} of {len(grid)} "
                f"(|x| = {float(torch.maximum(x.abs().max(), y.abs().max())):.1e}); {_remedy(x.dtype, config.p)}"
            ) from None
        xs.append(x)
        ys.append(y)
        if callback is not None:
            callback(len(grid) - 1 - i, x)
    _warn_if_unresolvable(torch.maximum(x.abs().max(), y.abs().max()), x.dtype, config.p)
    return MethodOutput(trajectory=torch.stack(xs[::-1]), extras={"y": torch.stack(ys[::-1])})


STATE_RESOLUTION = 1e-3
"""Finest latent detail (latents have unit std) the inverted chains must still resolve."""


def _remedy(dtype: torch.dtype, p: float) -> str:
    if dtype != torch.float64:
        return "invert in precision='float64' (CLI: --option precision=float64), with fewer steps, or with p closer to 1"
    return (f"invert with fewer steps or with p closer to 1 than {p:g} (e.g. --option p=0.93, the paper's, "
            "which edits less reliably under guidance)")


def _warn_if_unresolvable(peak: torch.Tensor, dtype: torch.dtype, p: float) -> None:
    """Warn when the inverted chains grew so large that ``dtype`` cannot hold the image in them.

    Undoing a mixing layer divides by p, so the inverted states grow by more than 1/p per step
    (faster under guidance): with p = 0.8 in float64 they pass ~1e12 after 50-100 steps, with
    p = 0.93 in float32 after ~150, and rounding at that size erases the image.
    """
    resolution = float(peak) * torch.finfo(dtype).eps
    if not resolution <= STATE_RESOLUTION:  # NaN or inf (states overflowed) count as unresolvable
        warnings.warn(
            f"EDICT's inverted chains reached |x| = {float(peak):.1e}: {dtype} keeps only ~{resolution:.0e} of "
            f"detail there, so sampling will not return the image; {_remedy(dtype, p)}",
            RuntimeWarning,
            stacklevel=3,
        )


def sample(
    denoiser: Denoiser, grid: TimestepGrid, inverted: MethodOutput, start_step: int, config: EDICTConfig,
    callback: StepCallback | None = None,
    on_state: StateHook | None = None,
) -> torch.Tensor:
    """EDICT sampling from both chains' states at ``start_step``; returns the x chain's image latent.

    ``on_state`` sees both chains, x as "trajectory" and y as "y" (their names in the inversion)."""
    grid.check_start(start_step)
    x = inverted.trajectory[start_step].to(denoiser.dtype)
    y = inverted.extras["y"][start_step].to(denoiser.dtype)
    for i in range(start_step, len(grid)):
        x, y = sample_step(denoiser, x, y, i, grid, config.p, config.leapfrog)
        if on_state is not None:
            on_state(i, {"trajectory": x, "y": y})
        if callback is not None:
            callback(i, x)
    return x


METHOD = Method(
    name="edict",
    summary="EDICT: two coupled chains with mixing layers; each step an exact algebraic inverse",
    config=EDICTConfig,
    invert=invert,
    sample=sample,
    calls_per_step="2 (4)",
    exact=True,
)
