"""Null-text inversion (Mokady, Hertz, Aberman, Pritch, Cohen-Or, "Null-text Inversion for Editing
Real Images using Guided Diffusion Models", CVPR 2023).

1. Pivot: DDIM inversion with guidance w = 1 and the source prompt embedding C gives
   z*_T, ..., z*_0 (z*_0 the image latent).
2. Walking down from z_T = z*_T, for t = T, ..., 1, optimise the null-text embedding
   (initialised with the previous step's result, at first with the embedding of "")

       min_{∅_t}  || z*_{t-1} - z_{t-1}(z_t, ∅_t, C) ||^2,
       eps_guided = w * eps(z_t, t, C) + (1 - w) * eps(z_t, t, ∅_t),
       z_{t-1}(z_t, ∅_t, C) = the DDIM sampling step from z_t with eps_guided,

   by N inner Adam steps (paper: N = 10, learning rate 1e-2 * (1 - j / 100) at outer step j of
   50, early stop when the loss is below 1e-5 + j * 2e-5); then take the real guided step
   z_{t-1} = z_{t-1}(z_t, ∅_t, C) and keep ∅_t.
3. Replay / editing: guided DDIM sampling from z*_T with ∅_t as the unconditional
   conditioning of step t.

Symbols -> names: z*_t -> ``pivot[i]`` (grid position i, noise first), z_t -> ``z``, C ->
``denoiser.cond``, ∅_t -> the per-step ``null`` tensors (``extras["null.<key>"][i]``), w ->
``denoiser.guidance``, N -> ``config.inner_steps``, outer step j -> grid step ``i``.

Scaling to an N-step grid (N_grid). The paper's constants belong to a 50-step grid; we keep
their values at 50 steps and stretch them over ours: learning rate
``lr * (1 - lr_decay * i / N_grid)`` (lr_decay = 0.5 gives the paper's 1e-2 -> 0.5e-2), early-stop
threshold ``early_stop_epsilon + early_stop_slope * i / N_grid`` (slope 1e-3 = 50 * 2e-5).
The loss is the mean squared error over all latent elements, as in the authors' code.

Differences from the authors' code, on purpose: (a) the early-stop test comes *before* the
Adam update, so the embedding that passed the test is the one kept (the authors update once
more after the test); (b) the real step that defines the next z is taken through the same
batched guided Denoiser call that replay uses, so replay reproduces z bit for bit (the inner
loop's separate uncond / cond calls can differ from the batched call by float rounding);
(c) every floating tensor of the conditioning is optimised, in float32 at least.

Cost: the pivot takes N_grid calls; each step then takes 1 conditional call, k_i <= N inner
unconditional calls (each with a backward pass through the network, not counted in the NFE)
and 1 guided call (2 NFE). ``stats["inner_steps"]`` lists the k_i.

Without guidance (w = 1) the null embedding has no effect: the result is the DDIM pivot and
the optimisation is skipped (``stats["optimised"] = False``). Replaying such an inversion
with guidance uses the denoiser's own unconditional conditioning (the negative prompt).
The embeddings are fitted for the inversion's guidance scale; replay with another scale uses them
anyway (they then no longer put the path on the pivot), replay without guidance is plain DDIM.
Replay from ``start_step`` > 0 starts at the pivot latent of that grid position (the state
the optimisation aimed at), not at the optimised path's own state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from unsample.core.denoiser import Denoiser, broadcast_conditioning
from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError
from unsample.methods import ddim
from unsample.methods.base import Method, MethodConfig, MethodOutput, StateHook, StepCallback, bounded, with_state_hook

NULL_PREFIX = "null."


@dataclass(frozen=True)
class NullTextConfig(MethodConfig):
    """Knobs of null-text inversion; defaults are the paper's (for a 50-step grid, see module doc)."""

    inner_steps: int = bounded(10, low=0, note="0 skips the optimisation")
    """Cap on the Adam steps per grid step (the paper's N)."""
    lr: float = bounded(1e-2, low=0, low_open=True)
    """Adam learning rate at the first (noisiest) step."""
    lr_decay: float = bounded(0.5, low=0, high=1, high_open=True, note="the learning rate must stay positive")
    """The learning rate falls linearly to ``lr * (1 - lr_decay)`` at the last step."""
    early_stop_epsilon: float = bounded(1e-5, low=0, note="0 never stops early")
    """Stop a step's inner loop once the loss is below this plus ``early_stop_slope * i / N``."""
    early_stop_slope: float = bounded(1e-3, low=0)


def _guided_sample_step(
    denoiser: Denoiser, grid: TimestepGrid, i: int, x: torch.Tensor, null: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Sampling step i with ``null`` as the unconditional conditioning, in one batched guided call.

    Inversion's real step and replay both go through here, so they compute the same numbers.
    """
    uncond = broadcast_conditioning(type(denoiser.cond).from_tensors(null), denoiser.cond)
    guided = denoiser.with_conditioning(denoiser.cond, uncond=uncond)
    u = guided.output(x, grid.timesteps[i])
    return ddim.sample_step(x, u, denoiser.prediction_type, grid, i)


def _trainable(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Fresh leaf copies of a conditioning's tensors; the floating ones (float32 at least) require grad."""
    out: dict[str, torch.Tensor] = {}
    params: list[torch.Tensor] = []
    for key, value in tensors.items():
        value = value.detach()
        if value.is_floating_point():
            dtype = value.dtype if value.dtype == torch.float64 else torch.float32
            leaf = value.to(dtype).clone().requires_grad_(True)
            params.append(leaf)
            out[key] = leaf
        else:
            out[key] = value.clone()
    return out, params


def _invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    config: NullTextConfig,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> MethodOutput:
    n = len(grid)
    unguided = denoiser.with_conditioning(denoiser.cond, guidance=1.0)
    if not denoiser.guided:
        # (1) only: without guidance the null embedding never enters the update.
        pivot = ddim.invert(unguided, grid, latent, callback=callback)
        return MethodOutput(
            trajectory=pivot,
            stats={"optimised": False, "note": "guidance is 1: the null embedding has no effect; this is the DDIM pivot"},
        )

    # (1) the pivot: DDIM inversion without guidance, source prompt
    pivot = ddim.invert(unguided, grid, latent)
    if denoiser.uncond is None:
        raise InputError("null-text inversion with guidance needs an unconditional conditioning on the denoiser")
    null, params = _trainable(denoiser.uncond.tensors())
    cond_type = type(denoiser.uncond)
    g = denoiser.guidance

    kept: list[dict[str, torch.Tensor]] = []
    inner_counts: list[int] = []
    last_losses: list[float | None] = []
    step_errors: list[float] = []
    # (2) walk down from the pivot's noise, fitting the null embedding of each step
    z = pivot[0].clone()
    for i in range(n):
        target = pivot[i + 1]
        t = grid.timesteps[i]
        threshold = config.early_stop_epsilon + config.early_stop_slope * i / n
        lr = config.lr * (1 - config.lr_decay * i / n)
        evaluations = 0
        loss_value: float | None = None
        if config.inner_steps > 0 and params:
            # u(z_t, C) is fixed during the inner loop: one call without grad
            u_c = unguided.output(z, t).detach()
            optimiser = torch.optim.Adam(params, lr=lr)
            with torch.enable_grad():
                for _ in range(config.inner_steps):
                    u_u = denoiser.with_conditioning(cond_type.from_tensors(null), guidance=1.0).output(z, t)
                    u = u_u + g * (u_c - u_u)
                    loss = torch.nn.functional.mse_loss(ddim.sample_step(z, u, denoiser.prediction_type, grid, i), target)
                    evaluations += 1
                    loss_value = float(loss.item())
                    if loss_value < threshold:
                        break
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
        step_null = {k: v.detach().clone() for k, v in null.items()}
        # the real guided step, through the batched call replay uses
        z = _guided_sample_step(denoiser, grid, i, z, step_null)
        kept.append(step_null)
        inner_counts.append(evaluations)
        last_losses.append(loss_value)
        step_errors.append(float(torch.nn.functional.mse_loss(z, target).item()))
        if callback is not None:
            callback(i, z)

    extras = {f"{NULL_PREFIX}{k}": torch.stack([step[k] for step in kept]) for k in kept[0]}
    stats: dict[str, Any] = {
        "optimised": config.inner_steps > 0,
        "inner_steps": inner_counts,
        "mean_inner_steps": sum(inner_counts) / n,
        "last_inner_loss": last_losses,
        "step_error": step_errors,
        "reconstruction_mse": step_errors[-1],
    }
    return MethodOutput(trajectory=pivot, extras=extras, stats=stats)


def _null_steps(extras: dict[str, torch.Tensor], steps: int) -> dict[str, torch.Tensor] | None:
    found = {k.removeprefix(NULL_PREFIX): v for k, v in extras.items() if k.startswith(NULL_PREFIX)}
    if not found:
        return None
    for key, value in found.items():
        if value.shape[0] != steps:
            raise InputError(
                f"the inversion holds null embeddings '{key}' for {value.shape[0]} steps but the grid has {steps}; "
                "replay it with the steps it was inverted with"
            )
    return found


def _sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    inverted: MethodOutput,
    start_step: int,
    config: NullTextConfig,
    callback: StepCallback | None = None,
    on_state: StateHook | None = None,
) -> torch.Tensor:
    grid.check_start(start_step)
    callback = with_state_hook(callback, on_state)
    nulls = _null_steps(inverted.extras, len(grid))
    if nulls is None or not denoiser.guided:
        # no null embeddings (inverted without guidance) or no guidance now: plain DDIM
        return ddim.sample(denoiser, grid, inverted.trajectory[start_step], start_step=start_step, callback=callback)
    # (3) guided sampling with each step's own null embedding
    x = inverted.trajectory[start_step].to(denoiser.dtype)
    for i in range(start_step, len(grid)):
        x = _guided_sample_step(denoiser, grid, i, x, {k: v[i] for k, v in nulls.items()})
        if callback is not None:
            callback(i, x)
    return x


METHOD = Method(
    name="null-text",
    summary="Null-text inversion: DDIM pivot without CFG, then per-step optimised null embeddings so CFG follows it",
    config=NullTextConfig,
    invert=_invert,
    sample=_sample,
    calls_per_step="1 + optimisation",
    trajectory_is_sampler_path=True,
    differentiates=True,
)
