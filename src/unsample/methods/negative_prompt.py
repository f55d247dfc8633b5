"""Negative-prompt inversion (Miyake, Iohara, Saito, Tanaka, "Negative-prompt Inversion: Fast
Image Inversion for Editing with Text-guided Diffusion Models", 2023, arXiv:2305.16807).

Inversion is DDIM inversion without guidance, conditioned on the source prompt C:

    z*_{t} = DDIM invert_step(z*_{t-1}, eps(z*_{t-1}, t, C))          (w = 1)

Sampling replaces null-text inversion's optimised null embedding ∅_t by C itself:

    eps_guided = eps(z_t, t, ∅) + w * (eps(z_t, t, C') - eps(z_t, t, ∅)),   ∅ := C,

so with the source prompt (C' = C) the guided update equals the unguided one for every w and
replay retraces the guidance-1 DDIM inversion; with an edit prompt C' the source prompt acts
as the negative prompt.

Symbols -> names: C -> the inversion denoiser's ``cond``, stored as ``extras["source.<key>"]``;
C' -> the replay denoiser's ``cond``; ∅ -> the replay's ``uncond``; w -> ``guidance``.

The replay ignores the replay denoiser's own unconditional conditioning (the negative prompt
a user passes at edit time): the source prompt takes its place, which is the method. A guided
replay still costs 2 NFE per step (one batched call), even for the source prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser, broadcast_conditioning
from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError
from unsample.methods import ddim
from unsample.methods.base import Method, MethodConfig, MethodOutput, StateHook, StepCallback, with_state_hook

SOURCE_PREFIX = "source."


@dataclass(frozen=True)
class NegativePromptConfig(MethodConfig):
    """Negative-prompt inversion has no knobs beyond the working precision."""


def _invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    config: NegativePromptConfig,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> MethodOutput:
    # DDIM inversion without guidance, source prompt; keep C for the replay's unconditional branch
    unguided = denoiser.with_conditioning(denoiser.cond, guidance=1.0)
    trajectory = ddim.invert(unguided, grid, latent, callback=callback)
    source = {f"{SOURCE_PREFIX}{k}": v.detach().clone() for k, v in denoiser.cond.tensors().items()}
    return MethodOutput(trajectory=trajectory, extras=source)


def _sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    inverted: MethodOutput,
    start_step: int,
    config: NegativePromptConfig,
    callback: StepCallback | None = None,
    on_state: StateHook | None = None,
) -> torch.Tensor:
    grid.check_start(start_step)
    source = {k.removeprefix(SOURCE_PREFIX): v for k, v in inverted.extras.items() if k.startswith(SOURCE_PREFIX)}
    if not source:
        raise InputError(
            "this negative-prompt inversion holds no source conditioning (extras 'source.*'); "
            "the file is not from this method or is damaged; invert the image again"
        )
    # the source prompt's conditioning replaces the unconditional one
    uncond = broadcast_conditioning(type(denoiser.cond).from_tensors(source), denoiser.cond)
    guided = denoiser.with_conditioning(denoiser.cond, uncond=uncond)
    return ddim.sample(guided, grid, inverted.trajectory[start_step], start_step=start_step,
                       callback=with_state_hook(callback, on_state))


METHOD = Method(
    name="negative-prompt",
    summary="Negative-prompt inversion: DDIM inversion without CFG; the source prompt replaces the null prompt when sampling",
    config=NegativePromptConfig,
    invert=_invert,
    sample=_sample,
    calls_per_step="1 (2)",
    trajectory_is_sampler_path=True,
)
