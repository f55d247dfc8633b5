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
    prepare_input,
    progress_bar,
)
from unsample.api.inverting import invert_pixels, method_config
from unsample.api.results import EditSample, decode_and_paste, encode_pil, present, to_output_size
from unsample.backends.base import Model
from unsample.core.classifier import ClassifierGuidance
from unsample.core.denoiser import CallCounter
from unsample.core.schedule import TimestepGrid
from unsample.editing.branches import EditResult, edit_latent
from unsample.editing.check import CheckResult, check_edit
from unsample.editing.ladder import LADDER, Attempt, LadderResult, Rung, rungs_for
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
    mask's evaluations included). An image is sized by ``spec.fit`` (`unsample.images`: by default
    its aspect ratio kept at about the model's native pixel count) and the edit is written back at
    the input's own size (``spec.output_size``; `EditSample.sizes` says all three). With a mask and
    ``paste_back`` (the default) the image takes the input's own pixels outside the mask over a
    feathered seam of ``paste_seam`` pixels (`unsample.editing.paste`); the latent is the model's, and `EditSample.paste` says whether it
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
    escalate = spec.escalate and spec.check and classifier_guidance is None
    rungs = rungs_for(spec.recipe, escalate, model.supports_attention_control)
    attempts: list[tuple[Rung, EditSample]] = []
    skipped: dict[str, str] = {}  # later rungs that cannot run on these prompts, and why
    unavailable = {  # rungs this model cannot run at all (said when the ladder would have reached them)
        r.name: "it hooks cross-attention, which this model (or a batch that shares its network) cannot give it"
        for r in LADDER if escalate and spec.recipe is None and r.needs_attention_control
        and not model.supports_attention_control}
    spent = 0
    for rung in rungs:
        rung_spec = spec.replace(**rung.changes)
        if attempts and spent + _predicted_cost(attempts[0][1], rung_spec) > spec.budget:
            break
        try:
            sample = _attempt(model, inversion, grid, rung_spec, source_prompt, progress, on_step, classifier_guidance,
                              begin, output != "latent" or spec.check)
        except InputError as err:
            if not attempts:
                raise  # the edit as asked: the user's own settings are wrong
            skipped[rung.name] = str(err)
            continue
        attempts.append((rung, sample))
        spent += sample.network_evaluations
        if sample.check is None or sample.check.edit_took:
            break
    last = attempts[-1][1].check
    if last is not None and not last.edit_took:
        skipped |= unavailable
    kept = _kept(attempts)
    sample = kept[1]
    sample.spec = spec.replace(**kept[0].changes)
    sample.seconds = time.perf_counter() - begin
    sample.ladder = LadderResult(
        attempts=tuple(Attempt(r.name, a.check.edit_took if a.check else None, a.check.score if a.check else None,
                               a.network_evaluations) for r, a in attempts),
        succeeded=kept[0].name if sample.check is not None and sample.check.edit_took else None, kept=kept[0].name,
        untried=tuple(r.name for r in rungs if r.name not in skipped and all(r is not a for a, _ in attempts)),
        skipped=tuple(f"{name} ({why})" for name, why in skipped.items()), budget=spec.budget, spent=spent)
    sample.earlier_evaluations = spent - sample.network_evaluations
    if spec.fidelity:
        sample.input_fidelity = _fidelity(model, pixels, inversion, sample.edit_result, source_prompt, sample.spec)
    if output != "latent":
        to_output_size(sample)
    return present(model, sample, output)


def _attempt(model: Model, inversion: Inversion, grid: TimestepGrid, spec: EditSpec, source_prompt: str,
             progress: bool, on_step: StepCallback | None, classifier_guidance: ClassifierGuidance | None,
             begin: float, decode: bool) -> EditSample:
    """One rung: the edit as ``spec`` says, decoded and pasted back when ``decode``, and judged by
    the check (on the image the user gets, encoded again) when ``spec.check``."""
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
        source_prompt=source_prompt, mask_nfe=plan.mask_nfe, inversion=inversion, spec=spec, edit_result=res,
    )
    if decode:
        decode_and_paste(model, sample)
    if spec.check:
        assert sample.image is not None
        # a mask with no cell that may change: the whole image says whether anything took
        judged_cells = res.mask if res.mask is not None and bool(res.mask.any()) else None
        sample.check = _judged(model, spec, source_prompt, encode_pil(model, sample.image), inversion, judged_cells)
    return sample


def _predicted_cost(first: EditSample, spec: EditSpec) -> int:
    """A rung's network evaluations, predicted from the first attempt's: its per-branch steps on one
    or two branches (prompt-to-prompt control and Direct Inversion run the source branch too), the
    first's mask and check."""
    branches = 2 if spec.control != "none" or spec.direct or spec.mask_source() in ("attention", "intersect") else 1
    return first.nfe * branches + first.mask_nfe + (first.check.evaluations if first.check is not None else 0)


def _kept(attempts: list[tuple[Rung, EditSample]]) -> tuple[Rung, EditSample]:
    """The attempt an edit returns: the first the check passed, else the best-scored one."""
    for rung, sample in attempts:
        if sample.check is None or sample.check.edit_took:
            return rung, sample
    # none took: first those that moved toward the target, then the best fit
    return max(attempts, key=lambda a: (a[1].check.direction > 0, a[1].check.score) if a[1].check is not None
               else (False, float("-inf")))


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
    prepared = prepare_input(model, source, spec.fit)
    pixels = prepared.pixels
    # the image is inverted without a negative prompt; the spec's applies to the edit
    inversion, grid = invert_pixels(model, prepared, spec.source_prompt, spec.method, config, steps=spec.steps,
                                    guidance=spec.inversion_guidance, negative_prompt="", seed=spec.seed,
                                    progress=progress, classifier_guidance=steer)
    return inversion, grid, pixels


def _fidelity(model: Model, pixels: torch.Tensor | None, inversion: Inversion, res: EditResult, source_prompt: str,
              spec: EditSpec) -> InputFidelity | None:
    """How well the model keeps the input (`unsample.editing.fidelity`): one decode of the inversion's
    image latent. The inversion's reconstruction is scored too when the edit made it, that is when its
    source branch replayed the inversion's own prompt, negative prompt and guidance, free of the
    trajectory (not Direct Inversion, which sets it back onto it). An inversion is scored on the input
    pixels it keeps; one saved before inversions kept them has only what it recorded when it was made
    (``stats["input_fidelity"]``, written by ``unsample invert``), or None."""
    if pixels is None and inversion.pixels is not None and inversion.pixels.shape[0] == 1:
        pixels = inversion.input_pixels(model.device)  # the input it kept, at the working size
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
