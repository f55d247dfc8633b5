"""Inverting an image, and replaying an inversion's own sampler (reconstruction)."""

from __future__ import annotations

import time
from typing import Any

import torch

from unsample.api.common import (
    ImageSource,
    Output,
    UnknownWords,
    check_classifier,
    check_guidance,
    check_prompts,
    classifier_record,
    latent_size,
    PreparedInput,
    naming_the_step,
    prepare_input,
    progress_bar,
)
from unsample.api.results import Sample, present
from unsample.backends.base import Model
from unsample.core.classifier import ClassifierGuidance
from unsample.core.denoiser import CallCounter
from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError
from unsample.images import Fit
from unsample.inversion import Inversion
from unsample.methods.base import MethodConfig, MethodOutput
from unsample.methods.registry import get_method


def invert(
    model: Model,
    image: ImageSource,
    prompt: str = "",
    *,
    method: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    negative_prompt: str = "",
    seed: int = 0,
    fit: Fit = "area",
    progress: bool = False,
    classifier_guidance: ClassifierGuidance | None = None,
    unknown_words: UnknownWords = "warn",
    **method_options: Any,
) -> Inversion:
    """Find the noise that ``method``'s sampler turns back into ``image``.

    ``fit`` sizes the image (`unsample.images`: "area" keeps the aspect ratio at about the model's
    native pixel count); the inversion keeps the input at its own size when that differs, so its
    edits are written back at that size. ``classifier_guidance`` guides the inversion's sampler with a noise-aware classifier toward a
    class (`unsample.core.classifier`); the inversion records its scale and labels, and its
    replay and edits need a classifier passed again (the file holds no code). ``unknown_words``
    says what to do with words the model does not know (warn, refuse, or "checked" by the caller).
    """
    config = method_config(model, method, method_options, steps, guidance)
    check_prompts(model, [prompt, negative_prompt], unknown_words)
    prepared = prepare_input(model, image, fit)
    return invert_pixels(model, prepared, prompt, method, config, steps=steps, guidance=guidance,
                         negative_prompt=negative_prompt, seed=seed, progress=progress,
                         classifier_guidance=classifier_guidance)[0]


def method_config(model: Model, method: str, options: dict[str, Any], steps: Any, guidance: Any) -> MethodConfig:
    """The method's config from ``options``, after the checks every inversion makes (before any model work)."""
    spec = get_method(method)
    config = spec.config.from_options(dict(options), method)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps={steps!r} must be a whole number >= 1")
    check_guidance(guidance, "guidance")
    spec.check_applies(model.schedule)
    return config


def invert_pixels(
    model: Model, prepared: PreparedInput, prompt: str, method: str, config: MethodConfig, *, steps: int,
    guidance: float, negative_prompt: str, seed: int, progress: bool, classifier_guidance: ClassifierGuidance | None,
) -> tuple[Inversion, TimestepGrid]:
    """The inversion of a prepared image, and the grid it walked (an edit goes on with the same grid)."""
    pixels = prepared.pixels
    counter = CallCounter()
    denoiser = model.denoiser(prompt, guidance=guidance, negative_prompt=negative_prompt, dtype=config.dtype,
                              counter=counter, classifier=classifier_guidance)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    latent = model.encode_image(pixels)
    grid = Inversion.grid_for(model, method, config.to_dict(), steps, latent_size(latent))
    with progress_bar(progress, steps, f"invert ({method})") as callback, torch.no_grad(), \
            naming_the_step(grid, "inverting", method):
        out = get_method(method).invert(denoiser, grid, latent.to(config.dtype), config, callback=callback,
                                        generator=generator)
    inversion = Inversion(
        method=method, trajectory=out.trajectory, image_latent=latent, prompt=prompt, negative_prompt=negative_prompt,
        guidance=float(guidance), steps=steps, seed=seed, options=config.to_dict(), model_name=model.name,
        model_fingerprint=model.fingerprint, image_size=(int(pixels.shape[-2]), int(pixels.shape[-1])),
        nfe=counter.nfe, model_calls=counter.calls, seconds=time.perf_counter() - start, extras=out.extras,
        stats=out.stats | classifier_record(classifier_guidance) | {"sizing": prepared.sizing},
        pixels=pixels_uint8(pixels), original=prepared.original,
    )
    return inversion, grid


def pixels_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Checked pixels ([B, 3, H, W] in [0, 1], made from 8-bit images) as the uint8 tensor an
    inversion keeps (exact: each value is k / 255)."""
    return (pixels.detach().float().cpu() * 255).round().clamp(0, 255).to(torch.uint8)


def replay(
    model: Model,
    inversion: Inversion,
    prompt: str | None = None,
    *,
    start_step: int = 0,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    progress: bool = False,
    classifier_guidance: ClassifierGuidance | None = None,
) -> Sample:
    """Run the inversion's own sampler from ``start_step`` (prompt and guidance default to the inversion's)."""
    if not isinstance(inversion, Inversion):
        raise InputError(f"replay needs an Inversion (Inversion.load(path) reads a file), got {type(inversion).__name__}")
    inversion.check_model(model)
    check_classifier(inversion, classifier_guidance, "replay")
    check_guidance(guidance, "guidance", allow_none=True)
    spec = get_method(inversion.method)
    config = spec.config.from_options(dict(inversion.options), inversion.method)
    grid = inversion.grid(model)
    grid.check_start(start_step)
    prompt = inversion.prompt if prompt is None else prompt
    guidance = inversion.guidance if guidance is None else guidance
    negative = inversion.negative_prompt if negative_prompt is None else negative_prompt
    counter = CallCounter()
    denoiser = model.denoiser(prompt, guidance=guidance, negative_prompt=negative, dtype=config.dtype, counter=counter,
                              classifier=classifier_guidance)
    inverted = MethodOutput(trajectory=inversion.trajectory.to(model.device),
                            extras={k: v.to(model.device) for k, v in inversion.extras.items()})
    start = time.perf_counter()
    with progress_bar(progress, inversion.steps - start_step, f"sample ({inversion.method})") as callback, \
            torch.no_grad(), naming_the_step(grid, "sampling", inversion.method):
        latent = spec.sample(denoiser, grid, inverted, start_step, config, callback=callback)
    return Sample(latent=latent, nfe=counter.nfe, model_calls=counter.calls, seconds=time.perf_counter() - start,
                  start_step=start_step, prompt=prompt, guidance=float(guidance))


def reconstruct(model: Model, inversion: Inversion, *, output: Output = "pil", progress: bool = False,
                classifier_guidance: ClassifierGuidance | None = None) -> Any:
    """Replay the sampler from the inverted noise with the inversion's own prompt and guidance.

    ``output="pil"`` decodes to an image, ``"latent"`` returns the replayed image latent (to
    check exactness without 8-bit rounding), ``"result"`` the `Sample` with its cost and image.
    """
    return present(model, replay(model, inversion, progress=progress, classifier_guidance=classifier_guidance), output)
