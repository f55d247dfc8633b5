"""The editing loop: resume an inversion's sampler with a target prompt, one or two branches.

One branch (a prompt swap, optionally masked): the target prompt alone, through the method's own
``sample``. Two branches (prompt-to-prompt, Direct Inversion, attention masks): the inversion's
state is duplicated along the batch axis, branch 0 replays the source prompt and branch 1 samples
with the target, both through the method's ``sample``; within each CFG half the batch is
[source, target] (the Denoiser puts the unconditional half first, ``CFG_LAYOUT``).

After each sampling step i (grid position i -> i + 1), in this order:

- Direct Inversion (Ju et al., "PnP Inversion", ICLR 2024): the source branch is set back onto
  the inverted trajectory, so the attention injected into the target comes from an exact
  reconstruction of the source, while the target runs free;
- masked blending (Blended Latent Diffusion, Avrahami et al. 2023; DiffEdit's decoding rule):
  outside the edit mask M, every state the sampler carries (EDICT's two chains, for instance)
  takes the inverted trajectory's state at position i + 1,

      z_{i+1} <- M * z_{i+1} + (1 - M) * z*_{i+1}        (z* = the inversion's state)

  from step fraction ``blend_start`` on. The last step sets the background to z*_N, the image
  latent itself, so outside the mask the edit is the autoencoder's reconstruction, for every
  method. The mask is fixed (noise / user) or read from the attention maps so far (attention),
  or both intersected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from unsample.core.denoiser import CallCounter, Denoiser
from unsample.core.rows import capped
from unsample.core.schedule import TimestepGrid
from unsample.editing.attention import PromptToPrompt
from unsample.editing.masks import dilate
from unsample.errors import InputError
from unsample.methods.base import MethodOutput, StepCallback
from unsample.methods.registry import get_method, sampler_path_methods


@dataclass(frozen=True)
class Blend:
    """Where and when the edit follows the inverted trajectory.

    ``mask`` [h, w] bool (True = may change) or None for a mask read from attention;
    ``attention``: intersect (or use alone) the attention maps' mask at each step;
    ``start``: the step fraction from which blending acts (0 = every step);
    ``dilate``: latent cells the mask grows by (after intersecting).
    """

    mask: torch.Tensor | None
    attention: bool = False
    start: float = 0.0
    dilate: int = 0

    def __post_init__(self) -> None:
        if self.mask is None and not self.attention:
            raise InputError("a blend needs a mask or attention maps to read one from")
        if not 0.0 <= self.start <= 1.0:
            raise InputError(f"blend start={self.start} must be a fraction of the steps in [0, 1]")
        if not isinstance(self.dilate, int) or self.dilate < 0:
            raise InputError(f"mask dilation {self.dilate} must be a whole number of latent cells >= 0")


@dataclass
class EditResult:
    """The edited latent (and the source branch's, when one ran), the mask used and the cost."""

    target_latent: torch.Tensor
    source_latent: torch.Tensor | None
    mask: torch.Tensor | None
    branches: int
    nfe: int
    model_calls: int
    seconds: float
    guidance: float


def _stack_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([t] * rows, dim=1)


def edit_latent(
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
    blend: Blend | None = None,
    two_branch: bool = False,
    progress: StepCallback | None = None,
    counter: CallCounter | None = None,
    classifier: Any | None = None,
    grid: TimestepGrid | None = None,
) -> EditResult:
    """Sample the edit from ``start_step``; see the module docstring for the order of things.

    ``control`` is an `AttentionControl` (prompt-to-prompt) or None; a two-branch run happens when
    ``two_branch``, ``control``, ``direct`` or an attention blend asks for the source branch.
    ``grid`` is the inversion's grid on ``model`` when the caller has built it (and so checked the
    model); without it the model is checked and the grid built here.
    """
    if grid is None:
        inversion.check_model(model)
        grid = inversion.grid(model)
    spec = get_method(inversion.method)
    config = spec.config.from_options(dict(inversion.options), inversion.method)
    grid.check_start(start_step)
    if direct and not spec.trajectory_is_sampler_path:
        raise InputError(
            f"Direct Inversion needs a method whose trajectory is its sampler's path ({', '.join(sampler_path_methods())}); "
            f"{inversion.method!r} reconstructs exactly already, edit it without --direct"
        )
    source_prompt = inversion.prompt if source_prompt is None else source_prompt
    guidance = inversion.guidance if guidance is None else guidance
    negative = inversion.negative_prompt if negative_prompt is None else negative_prompt
    attention_blend = blend is not None and blend.attention
    rows = 2 if (two_branch or control is not None or direct or attention_blend) else 1
    target_row = rows - 1

    prompts = [source_prompt, target_prompt] if rows == 2 else [target_prompt]
    cond = model.encode_prompt(prompts[0])
    for p in prompts[1:]:
        cond = cond.cat(model.encode_prompt(p))
    uncond = None
    if guidance != 1.0:
        uncond = model.encode_negative(negative)
        for _ in prompts[1:]:
            uncond = uncond.cat(model.encode_negative(negative))

    controller = None
    # prompt-to-prompt's processors need the [source, target] rows of a call together: its calls
    # (2 or 4 rows) are not split by the model's row cap
    model_fn = capped(model.model_fn, getattr(model, "max_rows", None))
    if control is not None:
        model_fn = model.model_fn
        controller = PromptToPrompt(model, source_prompt, target_prompt, control, grid.timesteps, guided=guidance != 1.0)
        model_fn = controller.wrap_model_fn(model_fn)
    elif attention_blend:
        raise InputError("an attention mask needs attention control to read the maps; pass control")
    counter = counter if counter is not None else CallCounter()
    if classifier is not None and rows != 1:
        raise InputError("classifier guidance steers one branch; it cannot run with prompt-to-prompt control, "
                         "attention masks or Direct Inversion")
    den = Denoiser(model_fn, model.schedule, cond, uncond, guidance=guidance, dtype=config.dtype, counter=counter,
                   classifier=classifier)

    traj = inversion.trajectory.to(model.device)
    # every per-position state of the inversion (the trajectory and chains such as EDICT's "y")
    chains = {"trajectory": traj} | {
        k: v.to(model.device) for k, v in inversion.extras.items() if v.shape[:2] == traj.shape[:2] and v.dim() == traj.dim()
    }
    extras = {k: (_stack_rows(v, rows) if k in chains else v.to(model.device)) for k, v in inversion.extras.items()}
    state = MethodOutput(trajectory=_stack_rows(traj, rows), extras=extras)
    latent_hw = (traj.shape[-2], traj.shape[-1])
    used_mask: dict[str, torch.Tensor] = {}

    def current_mask(i: int) -> torch.Tensor:
        assert blend is not None
        mask = blend.mask.to(model.device) if blend.mask is not None else None
        if blend.attention and controller is not None and controller.blend_maps:
            attn = controller.blend_mask(latent_hw).to(model.device)
            mask = attn if mask is None else (mask & attn)
        if mask is None:  # no attention maps recorded yet: nothing may change
            mask = torch.zeros(latent_hw, dtype=torch.bool, device=model.device)
        if blend.dilate:
            mask = dilate(mask, blend.dilate)
        used_mask["last"] = mask
        return mask

    def on_state(i: int, states: dict[str, torch.Tensor]) -> None:
        if direct:
            states["trajectory"][0].copy_(traj[i + 1, 0].to(states["trajectory"].dtype))
        if blend is not None and i / len(grid) >= blend.start:
            keep = ~current_mask(i)
            for name, x in states.items():
                ref = chains[name][i + 1, 0].to(x.dtype)
                x[target_row].copy_(torch.where(keep, ref, x[target_row]))

    begin = time.perf_counter()
    hook = on_state if (direct or blend is not None) else None
    with torch.no_grad():
        if controller is not None:
            with controller.installed():
                latent = spec.sample(den, grid, state, start_step, config, callback=progress, on_state=hook)
        else:
            latent = spec.sample(den, grid, state, start_step, config, callback=progress, on_state=hook)
    mask = None
    if blend is not None:
        mask = used_mask.get("last")
        if mask is None and blend.mask is not None:  # blending never started (start step past blend start)
            mask = dilate(blend.mask, blend.dilate)
        mask = None if mask is None else mask.cpu()
    return EditResult(
        target_latent=latent[target_row : target_row + 1],
        source_latent=latent[0:1] if rows == 2 else None,
        mask=mask,
        branches=rows,
        nfe=counter.nfe,
        model_calls=counter.calls,
        seconds=time.perf_counter() - begin,
        guidance=float(guidance),
    )
