"""Editing with a source and a target branch in one batch (prompt-to-prompt, Direct Inversion).

The inversion's state is duplicated along the batch axis: branch 0 replays the source prompt,
branch 1 samples with the target prompt, both through the method's own ``sample`` (so every
registered method edits through its own replay). Within each CFG half the batch is
[source, target]; the Denoiser puts the unconditional half first (``CFG_LAYOUT``).

Per step, after the method's update:
- Direct Inversion (Ju et al., "PnP Inversion", ICLR 2024): the source branch is set back onto
  the inverted trajectory, so the attention maps injected into the target come from an exact
  reconstruction of the source, while the target branch runs free;
- local blend (prompt-to-prompt): outside the mask from the blend words' cross-attention, the
  target branch takes the source branch's latent.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from unsample.core.denoiser import CallCounter, Denoiser
from unsample.methods.base import MethodOutput
from unsample.methods.registry import get_method

# Methods whose trajectory is exactly the state their sampler walks, so Direct Inversion can pull
# the source branch onto it. EDICT and BDIA are exact already; null-text's trajectory is its pivot.
DIRECT_METHODS = ("ddim", "euler", "fixed-point", "negative-prompt", "null-text")


def _two_branches(t: torch.Tensor, batch_dim: int) -> torch.Tensor:
    return torch.cat([t, t], dim=batch_dim)


def edit_two_branch(
    model: Any,
    inversion: Any,
    target_prompt: str,
    *,
    source_prompt: str | None = None,
    start_step: int = 0,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    control: Any | None = None,
    direct: bool = False,
    progress: Any | None = None,
) -> dict[str, Any]:
    """Replay source and target together; returns latents of both branches and the cost."""
    inversion.check_model(model)
    spec = get_method(inversion.method)
    config = spec.config.from_options(dict(inversion.options), inversion.method)
    grid = config.make_grid(model.schedule, inversion.steps)
    grid.check_start(start_step)
    if direct and inversion.method not in DIRECT_METHODS:
        raise ValueError(
            f"Direct Inversion needs a method whose trajectory is its sampler's path ({', '.join(DIRECT_METHODS)}); "
            f"{inversion.method!r} reconstructs exactly already, edit it without --direct"
        )
    source_prompt = inversion.prompt if source_prompt is None else source_prompt
    guidance = inversion.guidance if guidance is None else guidance
    negative = inversion.negative_prompt if negative_prompt is None else negative_prompt
    cond = model.encode_prompt(source_prompt).cat(model.encode_prompt(target_prompt))
    uncond = model.encode_prompt(negative).cat(model.encode_prompt(negative)) if guidance != 1.0 else None

    controller = None
    model_fn = model.model_fn
    if control is not None:
        from unsample.editing.attention import PromptToPrompt

        controller = PromptToPrompt(model, source_prompt, target_prompt, control, grid.timesteps,
                                    guided=guidance != 1.0)
        model_fn = controller.wrap_model_fn(model_fn)
    counter = CallCounter()
    den = Denoiser(model_fn, model.schedule, cond, uncond, guidance=guidance, dtype=config.dtype, counter=counter)

    traj = inversion.trajectory.to(model.device)
    extras = {k: (_two_branches(v, 1) if v.dim() == traj.dim() and v.shape[0] == traj.shape[0] else v)
              for k, v in inversion.extras.items()}
    state = MethodOutput(trajectory=_two_branches(traj, 1), extras={k: v.to(model.device) for k, v in extras.items()})

    def after_step(i: int, x: torch.Tensor) -> None:
        if direct:
            x[0].copy_(traj[i + 1, 0].to(x.dtype))
        if controller is not None:
            x.copy_(controller.blend(x, i))
        if progress is not None:
            progress(i, x)

    begin = time.perf_counter()
    with torch.no_grad():
        if controller is not None:
            with controller.installed():
                latent = spec.sample(den, grid, state, start_step, config, callback=after_step)
        else:
            latent = spec.sample(den, grid, state, start_step, config, callback=after_step)
    blend_mask = None
    if controller is not None and controller.control.blend_words and controller.blend_maps:
        blend_mask = controller.blend_mask((latent.shape[-2], latent.shape[-1])).cpu()
    return {
        "source_latent": latent[0:1],
        "target_latent": latent[1:2],
        "blend_mask": blend_mask,
        "branches": latent.shape[0],  # the local-blend region at the last step (latent resolution), or None
        "nfe": counter.nfe,
        "model_calls": counter.calls,
        "seconds": time.perf_counter() - begin,
        "guidance": float(guidance),
    }
