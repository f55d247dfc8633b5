"""``unsample edit`` and ``flowedit``: edit an image or an inversion with a new prompt."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

import unsample
from unsample import defaults as edit_defaults
from unsample.cli.common import (
    ClassifierOpt,
    ClassifierScaleOpt,
    ClassLabelOpt,
    DeviceOpt,
    DtypeOpt,
    ModelConfigOpt,
    ModelOpt,
    OffloadOpt,
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
from unsample.editing.ladder import verdict_line
from unsample.editing.masks import MASK_SOURCES
from unsample.editing.spec import SettingInfo, settings, spec_from_text
from unsample.images import canonical_fit, load_image
from unsample.outputs import atomic_write, write_png_with_sidecar

EDIT_HELP = """Edit an image or a saved inversion with a new prompt: masked blending with the inversion,
prompt swap, prompt-to-prompt, Direct Inversion. The mask is saved beside the PNG
(NAME.mask.png, an overlay of what was allowed to change). Every option after --allow-unknown-words
is a setting of `unsample.EditSpec`, made from its fields."""


def _cli_type(info: SettingInfo) -> tuple[Any, Any]:
    """The typer type and default of one edit setting's option."""
    text, default = info.setting.text, info.default
    if text in ("pairs", "repeat"):
        return list[str] | None, None
    if text == "csv":
        return str, ",".join(default)
    base = next((a for a in get_args(info.hint) if a is not type(None)), info.hint)
    if base in (str, int, float, bool):
        return (base | None if default is None else base), default
    return str | None, default if isinstance(default, str) else None  # choices (Literal) and the mask


def _spec_options() -> list[inspect.Parameter]:
    """One typer option per `EditSpec` field, with the spec's default and help line (a yes/no
    setting is a pair of flags, ``--paste-back/--no-paste-back``)."""
    params = []
    for info in settings():
        kind, default = _cli_type(info)
        choices = f" ({'|'.join(map(str, info.choices))})" if info.choices and "|" not in info.setting.help else ""
        flag = info.flag + (f"/--no-{info.flag.removeprefix('--')}" if isinstance(info.default, bool) else "")
        option = typer.Option(flag, help=info.setting.help + choices)
        params.append(inspect.Parameter(info.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, option]))
    return params


def edit(
    source: Annotated[Path, typer.Argument(help="An inversion file (.safetensors) or an image (inverted first).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG.")],
    prompt: Annotated[str | None, typer.Option("--prompt", help="The prompt of the edited image (same as --target-prompt).")] = None,
    allow_unknown_words: Annotated[bool, typer.Option(
        "--allow-unknown-words", help="Edit even if a prompt has words the model's tokenizer does not know.")] = False,
    classifier: ClassifierOpt = None,
    class_label: ClassLabelOpt = None,
    source_class_label: Annotated[str | None, typer.Option(
        "--source-class-label", help="With --classifier: the class that guides the inversion when SOURCE is an image.")] = None,
    classifier_scale: ClassifierScaleOpt = 1.0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
    **settings_text: Any,
) -> None:
    check_output(output, ".png")
    mask = settings_text.get("mask")
    if mask is not None and mask not in MASK_SOURCES:
        if not Path(mask).is_file():
            raise UserError(f"--mask {mask!r} is not one of {', '.join(MASK_SOURCES)} nor an existing image file")
        load_image(Path(mask))  # an unreadable mask fails before the model loads
    target = settings_text.get("target_prompt") or ""
    if prompt and target and prompt != target:
        raise UserError("--prompt and --target-prompt disagree; give one of them")
    spec = spec_from_text(settings_text | {"target_prompt": target or prompt or ""})
    steer = classifier_guidance_from(classifier, class_label, classifier_scale)
    source_steer = classifier_guidance_from(classifier if source_class_label is not None else None, source_class_label,
                                            classifier_scale, "--source-class-label")
    if not spec.target_prompt and steer is None:
        raise UserError("give the edit's prompt with --prompt or --target-prompt")
    if source.suffix == ".safetensors":
        start_from: Any = unsample.Inversion.load(source)
    else:
        if spec.source_prompt is None:
            raise UserError("editing an image needs --source-prompt (a prompt that describes it) to invert with")
        if spec.start_step > spec.steps:
            raise UserError(f"--start-step {spec.start_step} is beyond the {spec.steps} steps; give 0..{spec.steps}")
        start_from = load_image(source)  # a missing or unreadable image fails before the model loads
    m = load_model(model, device, dtype, model_config, offload)
    check_words(m, [spec.target_prompt, spec.source_prompt or "", spec.negative_prompt or ""], allow_unknown_words)
    start = time.perf_counter()
    res = unsample.edit(m, start_from, spec, output="result", progress=not quiet, classifier_guidance=steer,
                        source_classifier_guidance=source_steer, unknown_words="checked")
    record = {
        **spec.to_json(),
        **sample_record(res, m, start, "edit", str(source)),
        "source_prompt": res.source_prompt, "mask": res.mask_source if res.mask_source != "user" else spec.mask,
        "mask_nfe": res.mask_nfe, "mask_area": res.mask_area, "edit": spec.to_json(), **inversion_record(res.inversion),
        "check": res.check.to_json() if res.check is not None else None,
        "input_fidelity": res.input_fidelity.to_json() if res.input_fidelity is not None else None,
        "paste": res.paste.to_json() if res.paste is not None else None,
        "ladder": res.ladder.to_json() if res.ladder is not None else None,
        "sizes": res.sizes,
    }
    written = [output.name]
    if res.mask_overlay is not None:
        mask_path = output.with_name(output.stem + ".mask.png")
        record["mask_file"] = mask_path.name
        atomic_write(mask_path, lambda tmp: res.mask_overlay.save(tmp, format="PNG"))
        written.append(mask_path.name)
    sidecar = write_png_with_sidecar(res.image, output, record)
    for line in res.input_fidelity.warnings() if res.input_fidelity is not None else []:
        typer.echo(line, err=True)
    typer.echo(f"wrote {', '.join(written)} and {sidecar.name} (NFE {res.network_evaluations} with the mask, the check and "
               f"every branch and recipe tried, {res.seconds:.2f} s)")
    if res.paste is not None and not res.paste.applied and spec.paste_back and res.mask is not None:
        typer.echo(f"note: no paste-back: {res.paste.reason}", err=True)
    if res.check is not None:
        c = res.check
        typer.echo(verdict_line(c.edit_took, c.score, c.stderr, c.threshold, res.ladder), err=not c.edit_took)


edit.__doc__ = EDIT_HELP
edit.__signature__ = inspect.signature(edit, eval_str=True).replace(  # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(edit, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    + _spec_options())
edit = friendly(edit)


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
    fit: Annotated[str, typer.Option("--fit", help="area (keep the aspect ratio at about the model's pixel count) | "
                                     "crop (centre square) | native (own size).")] = "area",
    output_size: Annotated[str, typer.Option("--output-size", help="input (the image's own size) | working.")]
    = "input",
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Edit an image by FlowEdit: no inversion; the image moves along the difference of the two
    prompts' predictions (Kulikov et al. 2024; defaults: the paper's for SD3). Every family."""
    check_output(output, ".png")
    canonical_fit(fit)  # a bad --fit fails before the model loads
    if output_size not in ("input", "working"):
        raise UserError(f"--output-size {output_size!r} is not input or working")
    if start_step >= steps:
        raise UserError(f"--start-step {start_step} leaves no step of the {steps}; give 0..{steps - 1}")
    picture = load_image(image)
    m = load_model(model, device, dtype, model_config, offload)
    check_words(m, [source_prompt, target_prompt, negative_prompt], allow_unknown_words)
    start = time.perf_counter()
    sample = unsample.flowedit(m, picture, source_prompt, target_prompt, steps=steps, start_step=start_step,
                               source_guidance=source_guidance, target_guidance=target_guidance, draws=draws,
                               negative_prompt=negative_prompt, seed=seed, fit=fit,  # type: ignore[arg-type]
                               output_size=output_size, output="result",  # type: ignore[arg-type]
                               progress=not quiet, unknown_words="checked")
    record = {
        **sample_record(sample, m, start, "flowedit", str(image)),
        "source_prompt": source_prompt, "source_guidance": source_guidance, "steps": steps, "draws": draws,
        "seed": seed, "sizes": sample.sizes,
    }
    sidecar = write_png_with_sidecar(sample.image, output, record)
    typer.echo(f"wrote {output.name} and {sidecar.name} (NFE {sample.network_evaluations}, {sample.seconds:.2f} s)")
