"""``unsample edit`` and ``flowedit``: edit an image or an inversion with a new prompt."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Annotated

import typer

import unsample
from unsample import defaults as edit_defaults
from unsample.backends.vocabulary import UnknownWordsWarning
from unsample.cli.common import (
    ClassifierOpt,
    ClassifierScaleOpt,
    ClassLabelOpt,
    DeviceOpt,
    DtypeOpt,
    ModelConfigOpt,
    ModelOpt,
    QuietOpt,
    UserError,
    check_output,
    check_words,
    classifier_guidance_from,
    friendly,
    inversion_record,
    load_model,
    sample_record,
)
from unsample.editing.masks import MASK_SOURCES, NoiseMaskConfig, overlay
from unsample.images import load_image, tensor_to_pil
from unsample.methods.options import parse_options
from unsample.methods.registry import get_method
from unsample.outputs import atomic_write, write_png_with_sidecar


def parse_reweight(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        word, sep, raw = pair.partition("=")
        try:
            if not sep or not word.strip():
                raise ValueError
            out[word.strip()] = float(raw)
        except ValueError:
            raise UserError(f"--reweight {pair!r} is not WORD=SCALE (e.g. red=2)") from None
    return out


@friendly
def edit(
    source: Annotated[Path, typer.Argument(help="An inversion file (.safetensors) or an image (inverted first).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG.")],
    prompt: Annotated[str | None, typer.Option("--prompt", help="The prompt of the edited image (same as --target-prompt).")] = None,
    target_prompt: Annotated[str | None, typer.Option("--target-prompt")] = None,
    source_prompt: Annotated[str | None, typer.Option("--source-prompt", help="Describes the source (default: the inversion's prompt).")] = None,
    method: Annotated[str, typer.Option("--method", help="Inversion method when SOURCE is an image.")] = edit_defaults.EDIT_METHOD,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps when SOURCE is an image.")] = edit_defaults.EDIT_STEPS,
    inversion_guidance: Annotated[float | None, typer.Option(
        "--inversion-guidance", help=f"CFG of the inversion when SOURCE is an image (default {edit_defaults.INVERSION_GUIDANCE:g}).")] = None,
    start_step: Annotated[int, typer.Option("--start-step", min=0, help="Resume sampling at this step (0 = from the noise).")] = 0,
    guidance: Annotated[float, typer.Option("--guidance", help="CFG of the edit.")] = edit_defaults.EDIT_GUIDANCE,
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt")] = None,
    control: Annotated[str, typer.Option("--control", help="none|replace|refine|reweight (prompt-to-prompt).")] = "none",
    blend_words: Annotated[str, typer.Option("--blend-words", help="Comma-separated words for local blend.")] = "",
    reweight: Annotated[list[str] | None, typer.Option("--reweight", help="WORD=SCALE (repeatable).")] = None,
    cross_steps: Annotated[float, typer.Option("--cross-steps", help="Fraction of steps with cross-attention injection.")] = 0.8,
    self_steps: Annotated[float, typer.Option("--self-steps", help="Fraction of steps with self-attention injection.")] = 0.4,
    direct: Annotated[bool, typer.Option("--direct", help="Direct Inversion: keep the source branch on the inverted path.")] = False,
    mask: Annotated[str | None, typer.Option("--mask", help=f"noise|attention|intersect|none|FILE.png (white = may change); "
                                      f"outside it the edit keeps the inverted trajectory (default: attention with "
                                      f"--blend-words, else {edit_defaults.EDIT_MASK}).")] = None,
    mask_dilate: Annotated[int, typer.Option("--mask-dilate", min=0, help="Grow the mask by this many latent cells.")] = 0,
    blend_start: Annotated[float, typer.Option("--blend-start", min=0.0, max=1.0,
                                               help="Step fraction from which the mask acts (0 = every step).")] = 0.0,
    mask_rule: Annotated[str, typer.Option("--mask-rule", help="Noise mask threshold: otsu|diffedit (DiffEdit's 1.5 x mean).")] = edit_defaults.EDIT_MASK_RULE,
    mask_smooth: Annotated[int, typer.Option("--mask-smooth", min=0, help="Noise mask smoothing radius, latent cells.")] = edit_defaults.EDIT_MASK_SMOOTH,
    allow_unknown_words: Annotated[bool, typer.Option(
        "--allow-unknown-words", help="Edit even if a prompt has words the model's tokenizer does not know.")] = False,
    option: Annotated[list[str] | None, typer.Option("--option", help="Method option KEY=VALUE when SOURCE is an image.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    classifier: ClassifierOpt = None,
    class_label: ClassLabelOpt = None,
    source_class_label: Annotated[str | None, typer.Option(
        "--source-class-label", help="With --classifier: the class that guides the inversion when SOURCE is an image.")] = None,
    classifier_scale: ClassifierScaleOpt = 1.0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Edit an image or a saved inversion with a new prompt: masked blending with the inversion,
    prompt swap, prompt-to-prompt, Direct Inversion. The mask is saved beside the PNG
    (NAME.mask.png, an overlay of what was allowed to change)."""
    check_output(output, ".png")
    if prompt and target_prompt and prompt != target_prompt:
        raise UserError("--prompt and --target-prompt disagree; give one of them")
    target = target_prompt or prompt
    steer = classifier_guidance_from(classifier, class_label, classifier_scale)
    source_steer = classifier_guidance_from(classifier if source_class_label is not None else None, source_class_label,
                                        classifier_scale, "--source-class-label")
    if not target and steer is None:
        raise UserError("give the edit's prompt with --prompt or --target-prompt")
    target = target or ""
    weights = parse_reweight(reweight or [])
    words = tuple(w.strip() for w in blend_words.split(",") if w.strip())
    if source.suffix != ".safetensors" and start_step > steps:
        raise UserError(f"--start-step {start_step} is beyond the {steps} steps; give 0..{steps}")

    if mask is None:
        mask = "attention" if words else "none" if steer is not None else edit_defaults.EDIT_MASK

    noise_settings = NoiseMaskConfig(rule=mask_rule, smooth=mask_smooth, seed=seed)
    if mask not in MASK_SOURCES:
        if not Path(mask).is_file():
            raise UserError(f"--mask {mask!r} is not one of {', '.join(MASK_SOURCES)} nor an existing image file")
        load_image(Path(mask))  # an unreadable mask fails before the model loads
    if source.suffix == ".safetensors":
        inv = unsample.Inversion.load(source)
        m = load_model(model, device, dtype, model_config)
        check_words(m, [target] + ([source_prompt] if source_prompt else []), allow_unknown_words)
    else:
        options = parse_options(get_method(method).config, option or [], method)
        picture = load_image(source)
        if source_prompt is None:
            raise UserError("editing an image needs --source-prompt (a prompt that describes it) to invert with")
        m = load_model(model, device, dtype, model_config)
        check_words(m, [source_prompt, target], allow_unknown_words)
        inv_guidance = inversion_guidance if inversion_guidance is not None else edit_defaults.INVERSION_GUIDANCE
        inv = unsample.invert(m, picture, source_prompt, method=method, steps=steps, guidance=inv_guidance,
                              seed=seed, progress=not quiet, classifier_guidance=source_steer, **options)
    start = time.perf_counter()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordsWarning)  # said once above, or refused
        sample = unsample.edit(
            m, inv, target, start_step=start_step, guidance=guidance, negative_prompt=negative_prompt,
            source_prompt=source_prompt, control=control, blend_words=words, reweight=weights or None,
            cross_steps=cross_steps, self_steps=self_steps, direct=direct, mask=mask, mask_dilate=mask_dilate,
            blend_start=blend_start, noise_mask=noise_settings, output="result", progress=not quiet,
            classifier_guidance=steer,
        )
    image = tensor_to_pil(m.decode_latent(sample.latent.float()))
    record = {
        **sample_record(sample, m, start, "edit", str(source)),
        "source_prompt": sample.source_prompt,
        "control": control, "blend_words": list(words), "reweight": weights, "cross_steps": cross_steps,
        "self_steps": self_steps, "direct": direct, "mask": sample.mask_source if sample.mask_source != "user" else mask,
        "mask_dilate": mask_dilate, "blend_start": blend_start, "mask_nfe": sample.mask_nfe,
        "mask_rule": mask_rule, "mask_smooth": mask_smooth,
        "mask_area": None if sample.mask is None else round(float(sample.mask.float().mean()), 4),
        **inversion_record(inv),
    }
    written = [output.name]
    if sample.mask is not None:
        mask_path = output.with_name(output.stem + ".mask.png")
        record["mask_file"] = mask_path.name
        atomic_write(mask_path, lambda tmp: overlay(tensor_to_pil(m.decode_latent(inv.image_latent.float())),
                                                     sample.mask).save(tmp, format="PNG"))
        written.append(mask_path.name)
    sidecar = write_png_with_sidecar(image, output, record)
    typer.echo(f"wrote {', '.join(written)} and {sidecar.name} (NFE {sample.network_evaluations} with the mask and "
               f"every branch, {sample.seconds:.2f} s)")


@friendly
def flowedit(
    image: Annotated[Path, typer.Argument(help="The image to edit (PNG/JPEG/TIFF).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG.")],
    source_prompt: Annotated[str, typer.Option("--source-prompt", help="Describes the image.")],
    target_prompt: Annotated[str, typer.Option("--target-prompt", help="Describes the edit.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps of the grid.")] = edit_defaults.FLOWEDIT_STEPS,
    start_step: Annotated[int, typer.Option("--start-step", min=0, help="Steps skipped first (n_max = steps - this).")]
    = edit_defaults.FLOWEDIT_START_STEP,
    source_guidance: Annotated[float, typer.Option("--source-guidance", help="CFG of the source prompt's branch.")]
    = edit_defaults.FLOWEDIT_SOURCE_GUIDANCE,
    target_guidance: Annotated[float, typer.Option("--target-guidance", help="CFG of the target prompt's branch.")]
    = edit_defaults.FLOWEDIT_TARGET_GUIDANCE,
    draws: Annotated[int, typer.Option("--draws", min=1, help="Noise draws averaged per step (n_avg).")] = 1,
    negative_prompt: Annotated[str, typer.Option("--negative-prompt")] = "",
    allow_unknown_words: Annotated[bool, typer.Option(
        "--allow-unknown-words", help="Edit even if a prompt has words the model's tokenizer does not know.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Edit an image by FlowEdit: no inversion; the image moves along the difference of the two
    prompts' predictions (Kulikov et al. 2024; defaults: the paper's for SD3). Every family."""
    check_output(output, ".png")
    if start_step >= steps:
        raise UserError(f"--start-step {start_step} leaves no step of the {steps}; give 0..{steps - 1}")
    picture = load_image(image)
    m = load_model(model, device, dtype, model_config)
    check_words(m, [source_prompt, target_prompt], allow_unknown_words)
    start = time.perf_counter()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordsWarning)  # said once above, or refused
        sample = unsample.flowedit(m, picture, source_prompt, target_prompt, steps=steps, start_step=start_step,
                                   source_guidance=source_guidance, target_guidance=target_guidance, draws=draws,
                                   negative_prompt=negative_prompt, seed=seed, output="result", progress=not quiet)
    record = {
        **sample_record(sample, m, start, "flowedit", str(image)),
        "source_prompt": source_prompt, "source_guidance": source_guidance, "steps": steps, "draws": draws,
        "seed": seed,
    }
    sidecar = write_png_with_sidecar(tensor_to_pil(m.decode_latent(sample.latent.float())), output, record)
    typer.echo(f"wrote {output.name} and {sidecar.name} (NFE {sample.network_evaluations}, {sample.seconds:.2f} s)")
