"""Editing: resume an inversion's sampler with a target prompt, as one `EditSpec` says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from unsample.api.common import (
    ImageSource,
    Output,
    UnknownWords,
    check_prompts,
    naming_the_step,
    prepare_image,
    progress_bar,
)
from unsample.api.inverting import invert_pixels, method_config
from unsample.api.results import EditSample, present
from unsample.backends.base import Model
from unsample.core.classifier import ClassifierGuidance
from unsample.core.denoiser import CallCounter
from unsample.core.schedule import TimestepGrid
from unsample.editing.branches import EditResult, edit_latent
from unsample.editing.check import CheckResult, check_edit
from unsample.editing.fidelity import FIDELITY_KEY, InputFidelity, input_fidelity
from unsample.editing.masks import NoiseMaskConfig
from unsample.editing.plan import plan_edit
from unsample.editing.spec import EditSpec
from unsample.errors import InputError
from unsample.inversion import Inversion
from unsample.methods.base import StepCallback

MaskSpec = Any
"""An edit mask: "none", "noise", "attention", "intersect", a PNG path, a PIL image, or a bool
array / tensor of the image's or the latent's size (True / white = may change)."""


def edit(
    model: Model,
    source: Inversion | ImageSource,
    spec: EditSpec | str | None = None,
    *,
    output: Output = "pil",
    progress: bool = False,
    classifier_guidance: ClassifierGuidance | None = None,
    source_classifier_guidance: ClassifierGuidance | None = None,
    on_step: StepCallback | None = None,
    unknown_words: UnknownWords = "warn",
    **settings: Any,
) -> Any:
    """Edit ``source`` (an `Inversion`, an inversion file, or an image, inverted first) as ``spec`` says.

    ``spec`` is an `EditSpec`, or the target prompt; keyword ``settings`` are its fields (they
    build a spec, or change the one given), so ``edit(model, inv, "a dog", start_step=10)`` works.
    Every setting, its default and its range is documented on `EditSpec`. An image is inverted
    with the spec's ``method``, ``steps``, ``inversion_guidance``, ``options`` and ``seed`` from
    its ``source_prompt`` (guided by ``source_classifier_guidance`` when given).

    ``output="pil"`` gives the edited image, ``"latent"`` the edited latent, ``"result"`` an
    `EditSample` with both, the mask and its overlay, the inversion and the whole cost (the noise
    mask's evaluations included). With a mask and ``paste_back`` (the default) the image takes the
    input's own pixels outside the mask over a feathered seam of ``paste_seam`` pixels
    (`unsample.editing.paste`); the latent is the model's, and `EditSample.paste` says whether it
    was applied and why not (no mask, or an inversion file that holds no pixels). ``classifier_guidance`` steers the edit toward its class (one
    branch; the mask defaults to "none"). ``on_step(i, latent)`` is called after each sampling step
    with the target branch's state ([1, C, h, w], the model's latent space).
    """
    spec = edit_spec(spec, settings)
    if output not in ("pil", "latent", "result"):
        raise InputError(f"output={output!r} is not supported; use pil, latent or result")
    if not spec.target_prompt.strip() and classifier_guidance is None:
        raise InputError("edit needs the target prompt (a non-empty string); to replay the source use reconstruct()")
    if isinstance(source, (str, Path)) and Path(source).suffix == ".safetensors":
        source = Inversion.load(source)
    begin = time.perf_counter()
    inversion, grid, pixels = _inversion_of(model, source, spec, progress, unknown_words, source_classifier_guidance)
    source_prompt = inversion.prompt if spec.source_prompt is None else spec.source_prompt
    plan = plan_edit(model, inversion, spec, source_prompt, classifier_guidance is not None)
    counter = CallCounter()
    with progress_bar(progress, inversion.steps - spec.start_step, f"edit ({inversion.method})") as bar, \
            naming_the_step(grid, "editing", inversion.method):
        res = edit_latent(
            model, inversion, spec.target_prompt, source_prompt=source_prompt, start_step=spec.start_step,
            guidance=spec.guidance, negative_prompt=spec.negative_prompt, control=plan.attention, direct=spec.direct,
            blend=plan.blend, progress=_target_row_callback(bar, on_step), counter=counter,
            classifier=classifier_guidance, grid=grid,
        )
    sample = EditSample(
        latent=res.target_latent, nfe=counter.nfe, model_calls=counter.calls + plan.mask_calls,
        seconds=time.perf_counter() - begin, start_step=spec.start_step, prompt=spec.target_prompt,
        guidance=res.guidance, branches=res.branches, mask=res.mask, mask_source=plan.mask_source,
        source_prompt=source_prompt, mask_nfe=plan.mask_nfe, inversion=inversion, spec=spec,
        check=_judged(model, spec, source_prompt, res.target_latent, inversion, res.mask) if spec.check else None,
        input_fidelity=_fidelity(model, pixels, inversion, res, source_prompt, spec) if spec.fidelity else None,
    )
    return present(model, sample, output)


def edit_spec(spec: EditSpec | str | None, settings: dict[str, Any]) -> EditSpec:
    """The `EditSpec` of `edit`'s arguments: a spec, a target prompt or nothing, changed by keyword
    settings. The keywords of earlier versions still work: ``prompt`` (the target prompt),
    ``reweight=None`` and ``noise_mask=NoiseMaskConfig(...)`` (DiffEdit's knobs)."""
    settings = dict(settings)
    if "prompt" in settings:
        settings["target_prompt"] = settings.pop("prompt")
    if "reweight" in settings and settings["reweight"] is None:
        settings["reweight"] = {}
    if "blend_words" in settings and isinstance(settings["blend_words"], list):
        settings["blend_words"] = tuple(settings["blend_words"])
    knobs = settings.pop("noise_mask", None)
    if knobs is not None:
        if not isinstance(knobs, NoiseMaskConfig):
            raise InputError(f"noise_mask must be a NoiseMaskConfig, got {type(knobs).__name__}")
        settings |= {"mask_rule": knobs.rule, "mask_smooth": knobs.smooth, "mask_strength": knobs.strength,
                     "mask_draws": knobs.draws, "mask_ratio": knobs.ratio, "mask_threshold": knobs.threshold,
                     "seed": knobs.seed}
    if isinstance(spec, str):
        settings.setdefault("target_prompt", spec)
        spec = None
    if spec is not None and not isinstance(spec, EditSpec):
        raise InputError(f"edit's third argument is an EditSpec or the target prompt, got {type(spec).__name__}")
    if spec is not None and not settings:
        return spec
    return (spec or EditSpec()).replace(**settings)


def _inversion_of(model: Model, source: Inversion | ImageSource, spec: EditSpec, progress: bool,
                  unknown_words: UnknownWords, steer: ClassifierGuidance | None,
                  ) -> tuple[Inversion, TimestepGrid, torch.Tensor | None]:
    """The inversion the edit resumes, its grid and the input's pixels (None for an inversion: it
    holds no pixels): ``source`` checked against the model, or the image inverted as the spec says.
    The prompts are checked once, here."""
    if isinstance(source, Inversion):
        check_prompts(model, [spec.target_prompt, spec.source_prompt, spec.negative_prompt], unknown_words)
        source.check_model(model)
        if not 0 <= spec.start_step <= source.steps:
            raise InputError(f"start_step={spec.start_step} is outside 0..{source.steps} for this "
                             f"{source.steps}-step inversion")
        return source, source.grid(model), None
    if spec.source_prompt is None:
        raise InputError("editing an image needs source_prompt (a prompt that describes it) to invert with")
    if spec.start_step > spec.steps:
        raise InputError(f"start_step={spec.start_step} is outside 0..{spec.steps} for {spec.steps} steps")
    config = method_config(model, spec.method, spec.options, spec.steps, spec.inversion_guidance)
    check_prompts(model, [spec.target_prompt, spec.source_prompt, spec.negative_prompt], unknown_words)
    pixels = prepare_image(model, source)
    # the image is inverted without a negative prompt; the spec's applies to the edit
    inversion, grid = invert_pixels(model, pixels, spec.source_prompt, spec.method, config, steps=spec.steps,
                                    guidance=spec.inversion_guidance, negative_prompt="", seed=spec.seed,
                                    progress=progress, classifier_guidance=steer)
    return inversion, grid, pixels


def _fidelity(model: Model, pixels: torch.Tensor | None, inversion: Inversion, res: EditResult, source_prompt: str,
              spec: EditSpec) -> InputFidelity | None:
    """How well the model keeps the input (`unsample.editing.fidelity`): one decode of the inversion's
    image latent. The inversion's reconstruction is scored too when the edit made it, that is when its
    source branch replayed the inversion's own prompt, negative prompt and guidance, free of the
    trajectory (not Direct Inversion, which sets it back onto it). An inversion given without its
    pixels has only what it recorded when it was made (``stats["input_fidelity"]``, written by
    ``unsample invert``), or None."""
    if pixels is None:
        recorded = inversion.stats.get(FIDELITY_KEY)
        return None if recorded is None else InputFidelity.from_json(recorded)
    negative = inversion.negative_prompt if spec.negative_prompt is None else spec.negative_prompt
    replayed = (res.source_latent is not None and not spec.direct and source_prompt == inversion.prompt
                and res.guidance == inversion.guidance and negative == inversion.negative_prompt)
    return input_fidelity(model, pixels, latent=inversion.image_latent,
                          reconstruction=res.source_latent if replayed else None, method=inversion.method)


def _judged(model: Model, spec: EditSpec, source_prompt: str, edited: torch.Tensor, inversion: Inversion,
            mask: torch.Tensor | None) -> CheckResult:
    """The model's judgement of the edit (`unsample.editing.check`): its unguided predictions under
    the source and the target prompt on noisy copies of the edited and the source latent."""
    den = model.denoiser(source_prompt, guidance=1.0, dtype=torch.float32)
    den = den.with_conditioning(den.cond.cat(model.encode_prompt(spec.target_prompt)))
    with torch.no_grad():
        return check_edit(den, edited.float().to(model.device), inversion.image_latent.float().to(model.device), mask)


def _target_row_callback(bar: StepCallback | None, on_step: StepCallback | None) -> StepCallback | None:
    """One step callback for the progress bar and the user's ``on_step``; the user's sees the last
    row of the state (the target branch: a two-branch edit stacks source, target)."""
    if on_step is None:
        return bar

    def step(i: int, x: torch.Tensor) -> None:
        if bar is not None:
            bar(i, x)
        on_step(i, x[-1:])

    return step
