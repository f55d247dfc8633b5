"""From an `EditSpec` to what the editing loop needs: the fixed mask (DiffEdit's from the noise
predictions of the two prompts, or the user's), the attention control (prompt-to-prompt, local
blend) and the blend with the inversion. The rule that picks the default mask is
`EditSpec.mask_source`; everything here follows from the spec and the model's capabilities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from unsample.backends.base import Model
from unsample.core.denoiser import CallCounter
from unsample.editing.attention import AttentionControl
from unsample.editing.branches import Blend
from unsample.editing.masks import MASK_SOURCES, noise_mask, user_mask
from unsample.editing.spec import EditSpec
from unsample.editing.tokens import changed_words
from unsample.errors import InputError
from unsample.images import fit_image
from unsample.inversion import Inversion


@dataclass
class EditPlan:
    """What the editing loop runs with, and what the mask cost to find."""

    mask_source: str
    """"none", "noise", "attention", "intersect" or "user"."""
    blend: Blend | None
    attention: AttentionControl | None
    mask_nfe: int = 0
    mask_calls: int = 0


def plan_edit(model: Model, inversion: Inversion, spec: EditSpec, source_prompt: str, classifier: bool) -> EditPlan:
    """The mask, the attention control and the blend of ``spec`` on ``inversion``.

    ``source_prompt`` is the edit's (the spec's, else the inversion's); ``classifier`` says the
    edit is steered by classifier guidance (its default mask is "none")."""
    mask = spec.mask_source(classifier)
    kind = mask if isinstance(mask, str) and mask in MASK_SOURCES else "user"
    words = spec.blend_words or tuple(dict.fromkeys(sum(changed_words(source_prompt, spec.target_prompt), [])))
    attends = kind in ("attention", "intersect")
    if attends and not words:
        raise InputError("an attention mask needs words that differ between the prompts, or blend_words")
    if (spec.control != "none" or attends or spec.reweight) and not model.supports_attention_control:
        raise InputError(
            f"prompt-to-prompt control and attention masks need a UNet's cross-attention; {type(model).__name__} "
            "has none the editor can hook yet: use mask='noise' (the default) or a mask image, and control='none'"
        )
    plan = EditPlan(mask_source=kind, blend=None, attention=None)
    fixed = None
    if kind in ("noise", "intersect"):
        fixed, plan.mask_nfe, plan.mask_calls = _noise_mask(model, inversion, spec, source_prompt)
    elif kind == "user":
        latent_hw = (int(inversion.trajectory.shape[-2]), int(inversion.trajectory.shape[-1]))
        fixed = user_mask(mask, tuple(inversion.image_size), latent_hw, fit=_fitted_like(model, inversion))
    if spec.control != "none" or attends or spec.reweight:
        plan.attention = AttentionControl(
            mode="refine" if spec.control == "none" else spec.control,
            cross_steps=spec.cross_steps if spec.control != "none" else 0.0,
            self_steps=spec.self_steps if spec.control != "none" else 0.0,
            reweight=dict(spec.reweight),
            blend_words=words if attends else (),
        )
    if kind != "none":
        plan.blend = Blend(mask=fixed, attention=attends, start=spec.blend_start, dilate=spec.mask_dilate)
    return plan


def _noise_mask(model: Model, inversion: Inversion, spec: EditSpec, source_prompt: str) -> tuple[torch.Tensor, int, int]:
    """DiffEdit's mask of the two prompts, its network evaluations and its batched calls."""
    counter = CallCounter()
    guidance = inversion.guidance if spec.guidance is None else spec.guidance
    negative = inversion.negative_prompt if spec.negative_prompt is None else spec.negative_prompt
    den = model.denoiser(source_prompt, guidance=guidance, negative_prompt=negative, counter=counter)
    den = den.with_conditioning(
        den.cond.cat(model.encode_prompt(spec.target_prompt)),
        uncond=den.uncond.cat(den.uncond) if den.uncond is not None else None,
    )
    settings = spec.noise_mask()
    with torch.no_grad():
        fixed = noise_mask(den, inversion.image_latent.to(model.device), settings)
    # the counter counts a batched call as one evaluation per CFG half; the mask's batch is 2K
    nfe = 2 * settings.draws * (2 if den.guided else 1)
    return fixed, nfe, counter.calls


def _fitted_like(model: Model, inversion: Inversion) -> Callable[[Image.Image], Image.Image]:
    """A user's mask image sized like the inversion's input: kept when at the working size, else
    fitted by the inversion's sizing rule (files made before it was recorded were centre-cropped)."""
    working = (int(inversion.image_size[1]), int(inversion.image_size[0]))
    rule = inversion.stats.get("sizing", {}).get("fit", "crop")

    def fit(pil: Image.Image) -> Image.Image:
        return pil if pil.size == working else fit_image(pil, model.resolution, model.size_multiple, rule)

    return fit
