"""The ``unsample`` command line: a thin layer over `unsample.api`.

Every command that writes a PNG writes a JSON sidecar next to it (same name, ``.json``) with
all parameters, the model cost (NFE, calls) and the timings. Bad input gets a one-line error
and exit code 2; outputs are written to a temp name and renamed, so nothing half-written stays.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Invert diffusion models and edit real images with text.")

ModelOpt = Annotated[str | None, typer.Option("--model", help="Hub id, local diffusers folder, single .safetensors file "
                                             "(with --model-config) or an embedded model's name: embedded (the default), "
                                             "embedded-pixel, embedded-flow.")]
ModelConfigOpt = Annotated[str | None, typer.Option("--model-config", help="For a single-file --model: a local diffusers "
                                                    "folder of the same architecture that gives its configs.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|mps")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="Model dtype: float32|float16|bfloat16|float64 (inversion math stays float32+).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
ClassifierOpt = Annotated[Path | None, typer.Option("--classifier", help="A noise-aware classifier (.safetensors) for "
                                                    "classifier guidance.")]
ClassLabelOpt = Annotated[str | None, typer.Option("--class-label", help="The class the classifier guides toward "
                                                  "(an index, or a name the classifier knows).")]
ClassifierScaleOpt = Annotated[float, typer.Option("--classifier-scale", help="Classifier guidance scale.")]


from unsample import defaults as edit_defaults
from unsample.ui import settings as ui_settings
from unsample.outputs import atomic_write as _atomic_write
from unsample.outputs import write_png, write_png_with_sidecar

# `unsample edit`'s defaults, chosen from the edit bench (docs/benchmarks.md, "Defaults").
DEFAULT_MASK = edit_defaults.EDIT_MASK
DEFAULT_INVERSION_GUIDANCE = edit_defaults.INVERSION_GUIDANCE
DEFAULT_EDIT_GUIDANCE = edit_defaults.EDIT_GUIDANCE


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


_DEBUG = {"on": False}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an input error too (for bug reports).")] = False,
) -> None:
    """Invert diffusion models and edit real images with text."""
    _DEBUG["on"] = debug


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, UserError, OSError) if _DEBUG["on"] else ():  # type: ignore[misc]
            raise
        except (ValueError, UserError, FileNotFoundError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None
        except OSError as err:  # a read-only file system, a folder without permission, a full disk
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            typer.echo(f"error: {err.strerror or err}{where}; check the path, its permissions and the free space", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _quiet_libraries() -> None:
    import logging

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("transformers", "diffusers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as dlogging

    dlogging.disable_progress_bar()
    dlogging.set_verbosity_error()
    from transformers.utils import logging as tlogging

    tlogging.disable_progress_bar()
    tlogging.set_verbosity_error()


def _load(model: str | None, device: str, dtype: str | None, config: str | None = None) -> Any:
    _quiet_libraries()
    import unsample

    if config is not None and model is None:
        raise UserError("--model-config is for a single-file --model; give the .safetensors file with --model")
    return unsample.load(model, device=device, dtype=dtype, config=config)


def _check_output(path: Path, suffix: str) -> None:
    if path.suffix.lower() != suffix:
        raise UserError(f"output {str(path)!r} must end in {suffix}")
    if path.is_dir():
        raise UserError(f"output {str(path)!r} is a folder; give a file name ending in {suffix}")
    if not path.parent.resolve().is_dir():
        raise UserError(f"output folder {str(path.parent)!r} does not exist; create it first")


def _inversion_record(inv: Any) -> dict[str, Any]:
    return {"inversion": inv.metadata()}


@app.command()
@_friendly
def invert(
    image: Annotated[Path, typer.Argument(help="The image to invert (PNG/JPEG).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the inversion (.safetensors).")],
    prompt: Annotated[str, typer.Option("--prompt", help="A prompt that describes the image.")] = "",
    negative_prompt: Annotated[str, typer.Option("--negative-prompt")] = "",
    method: Annotated[str, typer.Option("--method", help="Inversion method; see 'unsample methods'.")] = "ddim",
    steps: Annotated[int, typer.Option("--steps", min=1)] = 50,
    guidance: Annotated[float, typer.Option("--guidance", help="CFG scale; 1 = no guidance.")] = 1.0,
    option: Annotated[list[str] | None, typer.Option("--option", help="Method option KEY=VALUE (repeatable).")] = None,
    fit: Annotated[str, typer.Option("--fit", help="model (resize+centre-crop) | multiple (keep aspect).")] = "model",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    allow_unknown_words: Annotated[bool, typer.Option(
        "--allow-unknown-words", help="Invert even if the prompt has words the model's tokenizer does not know.")] = False,
    classifier: ClassifierOpt = None,
    class_label: ClassLabelOpt = None,
    classifier_scale: ClassifierScaleOpt = 1.0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Invert IMAGE into the noise the sampler turns back into it."""
    from unsample.methods.options import parse_options
    from unsample.methods.registry import get_method

    _check_output(output, ".safetensors")
    options = parse_options(get_method(method).config, option or [], method)
    if fit not in ("model", "multiple"):
        raise UserError(f"--fit {fit!r} is not model or multiple")
    from unsample.images import load_image

    picture = load_image(image)  # a missing or unreadable image fails before the model loads
    steer = _classifier_guidance(classifier, class_label, classifier_scale)
    m = _load(model, device, dtype, model_config)
    _check_words(m, [prompt], allow_unknown_words)
    import warnings

    import unsample
    from unsample.backends.vocabulary import UnknownWordsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordsWarning)  # said once above, or refused
        inv = unsample.invert(
            m, picture, prompt, method=method, steps=steps, guidance=guidance, negative_prompt=negative_prompt,
            seed=seed, fit=fit, progress=not quiet, classifier_guidance=steer, **options,  # type: ignore[arg-type]
        )
    inv.save(output)
    typer.echo(f"wrote {output} ({inv.method}, {inv.steps} steps, NFE {inv.nfe}, {inv.seconds:.2f} s)")


def _classifier_guidance(path: Path | None, label: str | None, scale: float, flag: str = "--class-label") -> Any:
    """Classifier guidance from the CLI's flags (None without --classifier); checked before the model loads."""
    if path is None:
        if label is not None:
            raise UserError(f"{flag} needs --classifier (the noise-aware classifier to guide with)")
        return None
    if label is None:
        raise UserError(f"--classifier needs {flag} (the class to guide toward)")
    from unsample.backends.noisy_classifier import NoisyClassifier

    return NoisyClassifier.load(path).guidance(label, scale)


def _sample_record(sample: Any, m: Any, start: float, kind: str, source: str) -> dict[str, Any]:
    return {
        "command": kind,
        "input": source,
        "model": m.name,
        "prompt": sample.prompt,
        "guidance": sample.guidance,
        "start_step": sample.start_step,
        "nfe": sample.nfe,
        "branches": sample.branches,
        "network_evaluations": sample.network_evaluations,
        "model_calls": sample.model_calls,
        "sampling_seconds": round(sample.seconds, 4),
        "total_seconds": round(time.perf_counter() - start, 4),
    }


@app.command()
@_friendly
def reconstruct(
    inversion: Annotated[Path, typer.Argument(help="An inversion file from 'unsample invert'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG.")],
    classifier: ClassifierOpt = None,
    class_label: ClassLabelOpt = None,
    classifier_scale: ClassifierScaleOpt = 1.0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Replay the sampler from the inverted noise with the inversion's own prompt and guidance."""
    import unsample
    from unsample.images import tensor_to_pil

    _check_output(output, ".png")
    inv = unsample.Inversion.load(inversion)
    steer = _classifier_guidance(classifier, class_label, classifier_scale)
    m = _load(model, device, dtype, model_config)
    start = time.perf_counter()
    sample = unsample.replay(m, inv, progress=not quiet, classifier_guidance=steer)
    image = tensor_to_pil(m.decode_latent(sample.latent.float()))
    record = {**_sample_record(sample, m, start, "reconstruct", str(inversion)), **_inversion_record(inv)}
    sidecar = write_png_with_sidecar(image, output, record)
    typer.echo(f"wrote {output} and {sidecar.name} (NFE {sample.nfe}, {sample.seconds:.2f} s)")


def _parse_reweight(pairs: list[str]) -> dict[str, float]:
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


@app.command()
@_friendly
def edit(
    source: Annotated[Path, typer.Argument(help="An inversion file (.safetensors) or an image (inverted first).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG.")],
    prompt: Annotated[str | None, typer.Option("--prompt", help="The prompt of the edited image (same as --target-prompt).")] = None,
    target_prompt: Annotated[str | None, typer.Option("--target-prompt")] = None,
    source_prompt: Annotated[str | None, typer.Option("--source-prompt", help="Describes the source (default: the inversion's prompt).")] = None,
    method: Annotated[str, typer.Option("--method", help="Inversion method when SOURCE is an image.")] = edit_defaults.EDIT_METHOD,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps when SOURCE is an image.")] = edit_defaults.EDIT_STEPS,
    inversion_guidance: Annotated[float | None, typer.Option(
        "--inversion-guidance", help=f"CFG of the inversion when SOURCE is an image (default {DEFAULT_INVERSION_GUIDANCE:g}).")] = None,
    start_step: Annotated[int, typer.Option("--start-step", min=0, help="Resume sampling at this step (0 = from the noise).")] = 0,
    guidance: Annotated[float, typer.Option("--guidance", help="CFG of the edit.")] = DEFAULT_EDIT_GUIDANCE,
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt")] = None,
    control: Annotated[str, typer.Option("--control", help="none|replace|refine|reweight (prompt-to-prompt).")] = "none",
    blend_words: Annotated[str, typer.Option("--blend-words", help="Comma-separated words for local blend.")] = "",
    reweight: Annotated[list[str] | None, typer.Option("--reweight", help="WORD=SCALE (repeatable).")] = None,
    cross_steps: Annotated[float, typer.Option("--cross-steps", help="Fraction of steps with cross-attention injection.")] = 0.8,
    self_steps: Annotated[float, typer.Option("--self-steps", help="Fraction of steps with self-attention injection.")] = 0.4,
    direct: Annotated[bool, typer.Option("--direct", help="Direct Inversion: keep the source branch on the inverted path.")] = False,
    mask: Annotated[str | None, typer.Option("--mask", help=f"noise|attention|intersect|none|FILE.png (white = may change); "
                                      f"outside it the edit keeps the inverted trajectory (default: attention with "
                                      f"--blend-words, else {DEFAULT_MASK}).")] = None,
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
    import unsample
    from unsample.images import load_image, tensor_to_pil

    _check_output(output, ".png")
    if prompt and target_prompt and prompt != target_prompt:
        raise UserError("--prompt and --target-prompt disagree; give one of them")
    target = target_prompt or prompt
    steer = _classifier_guidance(classifier, class_label, classifier_scale)
    source_steer = _classifier_guidance(classifier if source_class_label is not None else None, source_class_label,
                                        classifier_scale, "--source-class-label")
    if not target and steer is None:
        raise UserError("give the edit's prompt with --prompt or --target-prompt")
    target = target or ""
    weights = _parse_reweight(reweight or [])
    words = tuple(w.strip() for w in blend_words.split(",") if w.strip())
    if source.suffix != ".safetensors" and start_step > steps:
        raise UserError(f"--start-step {start_step} is beyond the {steps} steps; give 0..{steps}")
    from unsample.editing.masks import MASK_SOURCES

    if mask is None:
        mask = "attention" if words else "none" if steer is not None else DEFAULT_MASK
    from unsample.editing.masks import NoiseMaskConfig

    noise_settings = NoiseMaskConfig(rule=mask_rule, smooth=mask_smooth, seed=seed)
    if mask not in MASK_SOURCES:
        if not Path(mask).is_file():
            raise UserError(f"--mask {mask!r} is not one of {', '.join(MASK_SOURCES)} nor an existing image file")
        load_image(Path(mask))  # an unreadable mask fails before the model loads
    if source.suffix == ".safetensors":
        inv = unsample.Inversion.load(source)
        m = _load(model, device, dtype, model_config)
        _check_words(m, [target] + ([source_prompt] if source_prompt else []), allow_unknown_words)
    else:
        from unsample.methods.options import parse_options
        from unsample.methods.registry import get_method

        options = parse_options(get_method(method).config, option or [], method)
        picture = load_image(source)
        if source_prompt is None:
            raise UserError("editing an image needs --source-prompt (a prompt that describes it) to invert with")
        m = _load(model, device, dtype, model_config)
        _check_words(m, [source_prompt, target], allow_unknown_words)
        inv_guidance = inversion_guidance if inversion_guidance is not None else DEFAULT_INVERSION_GUIDANCE
        inv = unsample.invert(m, picture, source_prompt, method=method, steps=steps, guidance=inv_guidance,
                              seed=seed, progress=not quiet, classifier_guidance=source_steer, **options)
    start = time.perf_counter()
    import warnings

    from unsample.backends.vocabulary import UnknownWordsWarning

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
        **_sample_record(sample, m, start, "edit", str(source)),
        "source_prompt": sample.source_prompt,
        "control": control, "blend_words": list(words), "reweight": weights, "cross_steps": cross_steps,
        "self_steps": self_steps, "direct": direct, "mask": sample.mask_source if sample.mask_source != "user" else mask,
        "mask_dilate": mask_dilate, "blend_start": blend_start, "mask_nfe": sample.mask_nfe,
        "mask_rule": mask_rule, "mask_smooth": mask_smooth,
        "mask_area": None if sample.mask is None else round(float(sample.mask.float().mean()), 4),
        **_inversion_record(inv),
    }
    written = [output.name]
    if sample.mask is not None:
        from unsample.editing.masks import overlay

        mask_path = output.with_name(output.stem + ".mask.png")
        record["mask_file"] = mask_path.name
        _atomic_write(mask_path, lambda tmp: overlay(tensor_to_pil(m.decode_latent(inv.image_latent.float())),
                                                     sample.mask).save(tmp, format="PNG"))
        written.append(mask_path.name)
    sidecar = write_png_with_sidecar(image, output, record)
    typer.echo(f"wrote {', '.join(written)} and {sidecar.name} (NFE {sample.network_evaluations} with the mask and "
               f"every branch, {sample.seconds:.2f} s)")


@app.command()
@_friendly
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
    import unsample
    from unsample.images import load_image, tensor_to_pil

    _check_output(output, ".png")
    if start_step >= steps:
        raise UserError(f"--start-step {start_step} leaves no step of the {steps}; give 0..{steps - 1}")
    picture = load_image(image)
    m = _load(model, device, dtype, model_config)
    _check_words(m, [source_prompt, target_prompt], allow_unknown_words)
    start = time.perf_counter()
    import warnings

    from unsample.backends.vocabulary import UnknownWordsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordsWarning)  # said once above, or refused
        sample = unsample.flowedit(m, picture, source_prompt, target_prompt, steps=steps, start_step=start_step,
                                   source_guidance=source_guidance, target_guidance=target_guidance, draws=draws,
                                   negative_prompt=negative_prompt, seed=seed, output="result", progress=not quiet)
    record = {
        **_sample_record(sample, m, start, "flowedit", str(image)),
        "source_prompt": source_prompt, "source_guidance": source_guidance, "steps": steps, "draws": draws,
        "seed": seed,
    }
    sidecar = write_png_with_sidecar(tensor_to_pil(m.decode_latent(sample.latent.float())), output, record)
    typer.echo(f"wrote {output.name} and {sidecar.name} (NFE {sample.network_evaluations}, {sample.seconds:.2f} s)")


def _check_words(m: Any, prompts: list[str], allow: bool) -> None:
    """Refuse prompts with words the model does not know, unless allowed (then say so in one line)."""
    from unsample.backends.vocabulary import prompt_problems

    for prompt in prompts:
        overflow, _, unknown = prompt_problems(m, prompt)
        if overflow is not None:
            raise UserError(overflow)
        if unknown is None:
            continue
        if not allow:
            raise UserError(f"{unknown}; rephrase, or pass --allow-unknown-words to go on without them")
        typer.echo(f"warning: {unknown}", err=True)


@app.command()
@_friendly
def methods(
    model: Annotated[str | None, typer.Option("--model", help="Also say which methods run on this model "
                                              "(hub id, folder or an embedded model's name).")] = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """List the inversion methods, their options and model calls per step."""
    from unsample.methods.options import describe_options
    from unsample.methods.registry import available_methods, get_method

    schedule = None
    if model is not None:
        schedule = _load(model, device, None, model_config).schedule
    for name in available_methods():
        spec = get_method(name)
        typer.echo(f"{name:<16} calls/step {spec.calls_per_step:<8} {'exact' if spec.exact else ''}")
        typer.echo(f"  {spec.summary}")
        if schedule is not None:
            reason = spec.refuses(schedule) if spec.refuses is not None else None
            typer.echo(f"  on this model: {'refused: ' + reason if reason else 'runs'}")
        for opt, kind, default in describe_options(spec.config):
            typer.echo(f"  --option {opt}=<{kind}>  (default {default})")


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's images.")] = Path("out/demo"),
    model: Annotated[str | None, typer.Option("--model", help="embedded (the default), embedded-pixel (the "
                                              "classifier-guidance demo), embedded-flow, or a hub id / folder.")] = None,
    device: DeviceOpt = "auto",
    method: Annotated[str | None, typer.Option("--method", help="Inversion method (default: the edit default).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Steps (default: the edit default).")] = None,
) -> None:
    """Invert, reconstruct and edit a built-in scene on an embedded model; write PNGs into --out.

    With --model embedded-pixel (or a pixel-space folder that holds classifier.safetensors): invert
    a circle, turn it into a star by classifier guidance, and write the jumping-prediction grids."""
    _quiet_libraries()
    from unsample.pixel_demo import is_pixel_demo_model, run_pixel_demo

    if model is not None and is_pixel_demo_model(model):
        if method not in (None, "ddim"):
            raise UserError(f"the pixel demo inverts with ddim (the classic guided-diffusion demo), not {method!r}")
        pix = run_pixel_demo(out, model=model, device=device, steps=steps or 50)
        typer.echo(f"model: {pix.model}")
        for name, path in pix.files.items():
            typer.echo(f"{name:>20}: {path}")
        verdict = "a star, colour and background kept" if pix.edit_correct else f"detector reads {pix.edit_shapes}"
        typer.echo(f"round trip PSNR {pix.psnr_reconstruction:.2f} dB; edit: {verdict}; {pix.seconds:.1f} s")
        return
    from unsample.demo import run_demo

    res = run_demo(out, model=model, device=device, method=method, steps=steps)
    typer.echo(f"model: {res.model}")
    for name, path in res.files.items():
        typer.echo(f"{name:>15}: {path}")
    typer.echo(f"reconstruction PSNR {res.psnr_reconstruction:.2f} dB (VAE floor {res.psnr_vae_floor:.2f} dB), {res.seconds:.1f} s")


@app.command("evaluate-embedded")
@_friendly
def evaluate_embedded(
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Pipeline folder (default: the installed embedded model).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="An embedded model by name instead of --model-dir: "
                                              "embedded or embedded-flow.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the card (default: beside the weights).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small smoke run (not the card's protocol).")] = False,
) -> None:
    """Measure the embedded model (or embedded-flow) and write MODEL_CARD.md + model_card.json + samples.png."""
    _quiet_libraries()
    from unsample.embedded import embedded_model_path
    from unsample.embedded.evaluate import EvalConfig, evaluate

    if model is not None:
        if model_dir is not None:
            raise UserError("give --model or --model-dir, not both")
        if model not in ("embedded", "embedded-flow"):
            raise UserError(f"--model {model!r}: evaluate-embedded measures embedded or embedded-flow "
                            "(embedded-pixel has evaluate-embedded-pixel)")
        model_dir = embedded_model_path(model)

    card = evaluate(model_dir, out, EvalConfig.quick() if quick else EvalConfig())
    for key, value in card["figures"].items():
        text = ", ".join(f"{k} {v:.3g}" for k, v in value.items()) if isinstance(value, dict) else f"{value:.4g}"
        typer.echo(f"{key:>36}: {text}")
    typer.echo(f"targets met: {card['targets_met']}")


@app.command("evaluate-embedded-pixel")
@_friendly
def evaluate_embedded_pixel(
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Pixel model folder (default: the installed embedded-pixel).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the card (default: beside the weights).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small smoke run (not the card's protocol).")] = False,
) -> None:
    """Measure the embedded pixel model and its classifier; write MODEL_CARD.md + model_card.json + samples.png."""
    _quiet_libraries()
    import json

    from unsample.embedded.pixel_evaluate import PixelEvalConfig, evaluate_pixel

    card = evaluate_pixel(model_dir, out, PixelEvalConfig.quick() if quick else PixelEvalConfig())
    for key, value in card["figures"].items():
        typer.echo(f"{key:>26}: {json.dumps(value)}")


@app.command("train-embedded-pixel")
@_friendly
def train_embedded_pixel_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run folder: log, checkpoints, final model/ (re-run to resume).")],
    tiny: Annotated[bool, typer.Option("--tiny", help="A few steps of a tiny configuration (a smoke test).")] = False,
    install: Annotated[bool, typer.Option("--install", help="Copy the finished model into the package.")] = False,
) -> None:
    """Train the embedded pixel model (class-conditional UNet2DModel, then its noisy shape classifier); resumes."""
    _quiet_libraries()
    from unsample.embedded import install_trained_model
    from unsample.embedded.pixel_configs import PixelTrainConfig
    from unsample.embedded.pixel_train import train_embedded_pixel

    model_dir = train_embedded_pixel(out, config=PixelTrainConfig.tiny() if tiny else None)
    typer.echo(f"model written to {model_dir}")
    if install:
        typer.echo(f"installed into {install_trained_model(out, 'embedded-pixel')}")


def _saved_flow_config(out: Path) -> Any:
    """The flow config a run folder holds (run.json), or the default one for a new folder."""
    import json

    from unsample.embedded.flow_configs import FlowTrainConfig

    path = out / "run.json"
    if path.exists():
        return FlowTrainConfig.from_json(json.loads(path.read_text(encoding="utf-8"))["config"])
    return FlowTrainConfig()


@app.command("train-embedded")
@_friendly
def train_embedded_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run folder: log, checkpoints, final model/ (re-run to resume).")],
    family: Annotated[str, typer.Option("--family", help="sd: the Stable-Diffusion-layout UNet model (embedded); "
                                        "flow: the SD3-architecture rectified-flow model (embedded-flow), on the "
                                        "embedded model's autoencoder.")] = "sd",
    tiny: Annotated[bool, typer.Option("--tiny", help="A few steps of a tiny configuration (a smoke test).")] = False,
    install: Annotated[bool, typer.Option("--install", help="Copy the finished model into the package.")] = False,
    autoencoder_from: Annotated[Path | None, typer.Option(
        "--autoencoder-from", help="sd: start a new run at the UNet stage with this finished model folder's autoencoder "
        "(its training.json must match the run's autoencoder settings); flow: the model whose autoencoder and "
        "tokenizer to use (default: the installed embedded model).")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        "--max-minutes", help="flow: the run's wall-clock cap in minutes (default 180), kept in its run.json; "
        "the learning rate decays by it. May change on resume.")] = None,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="flow: start a new run from this finished flow model folder's weights (a warm restart: "
        "new optimiser and learning-rate schedule; training.json adds up both runs).")] = None,
    lr: Annotated[float | None, typer.Option(
        "--lr", help="flow: the new run's peak learning rate (default 3e-4); fixed for the run once started.")] = None,
) -> None:
    """Train an embedded model from scratch; resumes from checkpoints.

    sd: VAE, decoder fine-tune, then text encoder + UNet. flow: text encoders + SD3 transformer."""
    _quiet_libraries()
    from unsample.embedded import install_trained_model

    if family == "flow":
        import dataclasses

        from unsample.embedded.flow_configs import FlowTrainConfig
        from unsample.embedded.flow_train import train_embedded_flow

        if lr is not None and not lr > 0:
            raise UserError(f"--lr {lr} must be positive")
        config = FlowTrainConfig.tiny() if tiny else None
        if lr is not None:
            config = dataclasses.replace(config or _saved_flow_config(out), lr=lr)
        model_dir = train_embedded_flow(out, config=config, autoencoder_from=autoencoder_from,
                                        max_minutes=max_minutes, init_from=init_from)
        typer.echo(f"model written to {model_dir}")
        if install:
            typer.echo(f"installed into {install_trained_model(out, 'embedded-flow')}")
        return
    if family != "sd":
        raise UserError(f"--family {family!r} is not sd or flow")
    if max_minutes is not None or init_from is not None or lr is not None:
        raise UserError("--max-minutes, --init-from and --lr apply to --family flow; the sd run's settings are in run.json")
    from unsample.embedded.configs import TrainConfig
    from unsample.embedded.train import train_embedded

    model_dir = train_embedded(out, config=TrainConfig.tiny() if tiny else None, autoencoder_from=autoencoder_from)
    typer.echo(f"model written to {model_dir}")
    if install:
        typer.echo(f"installed into {install_trained_model(out)}")


@app.command()
@_friendly
def ui(
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on: 127.0.0.1 is this machine only, "
                                      "0.0.0.0 every interface.")] = ui_settings.DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = ui_settings.DEFAULT_PORT,
    device: DeviceOpt = "auto",
) -> None:
    """Start the web UI: upload or pick an image, invert it once, edit it many times, download the results."""
    _quiet_libraries()
    from unsample.ui.app import serve

    serve(model, host, port, model_config=model_config, device=device)


@app.command()
@_friendly
def trajectory(
    inversion: Annotated[Path, typer.Argument(help="An inversion file from 'unsample invert'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG grid.")],
    steps: Annotated[str, typer.Option("--steps", help="Comma-separated grid positions (default: 6 spread out).")] = "",
    replay: Annotated[bool, typer.Option("--replay", help="Show the replayed sampling run instead of the stored inversion.")] = False,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    classifier: ClassifierOpt = None,
    class_label: Annotated[str | None, typer.Option("--class-label", help="With --classifier: the class (default: the "
                                                    "one the inversion recorded).")] = None,
    classifier_scale: Annotated[float | None, typer.Option("--classifier-scale", help="With --classifier: the scale "
                                                           "(default: the inversion's).")] = None,
) -> None:
    """Grid of x_t, the predicted x0 and their difference along a trajectory.

    An inversion made with classifier guidance shows its guided x0 predictions (and replays)
    given the same --classifier again; its class and scale default to the recorded ones."""
    import unsample
    from unsample import trajectory as tv
    from unsample.methods.registry import get_method

    _check_output(output, ".png")
    inv = unsample.Inversion.load(inversion)
    m = _load(model, device, dtype, model_config)
    inv.check_model(m)
    config = get_method(inv.method).config.from_options(dict(inv.options), inv.method)
    grid = config.make_grid(m.schedule_for(tuple(inv.trajectory.shape[-2:])), inv.steps)
    made = inv.stats.get("classifier_guidance")
    if classifier is None and (class_label is not None or classifier_scale is not None):
        raise UserError("--class-label and --classifier-scale need --classifier (the noise-aware classifier to guide with)")
    if classifier is None and made and replay:
        raise UserError(f"this inversion was made with classifier guidance (scale {made['scale']:g}, labels "
                        f"{made['labels']}); pass --classifier to replay it")
    steer = None
    if classifier is not None:
        label = class_label if class_label is not None else (str(made["labels"][0]) if made else None)
        scale = classifier_scale if classifier_scale is not None else (float(made["scale"]) if made else 1.0)
        steer = _classifier_guidance(classifier, label, scale)
    den = m.denoiser(inv.prompt, guidance=inv.guidance, negative_prompt=inv.negative_prompt, dtype=config.dtype,
                     classifier=steer)
    states = inv.trajectory
    if replay:
        import torch

        from unsample.methods.base import MethodOutput

        collected = [inv.trajectory[0].to(config.dtype)]
        with torch.no_grad():
            get_method(inv.method).sample(den, grid, MethodOutput(inv.trajectory, inv.extras), 0, config,
                                          callback=lambda i, x: collected.append(x.clone()))
        states = torch.stack(collected)
    xt = tv.to_xt(states, grid, inv.stats.get("space") == "sigma")
    chosen = list(_csv(steps, int)) if steps else tv.default_steps(inv.steps)
    items = tv.panels(den, grid, xt, chosen)
    title = f"{inv.method} {'replay' if replay else 'inversion'}, {inv.steps} steps, guidance {inv.guidance:g}: {inv.prompt}"
    if steer is not None:
        title += f", classifier {steer.labels.tolist()} x{steer.scale:g}"
    image = tv.render(m, items, title)
    record = {"command": "trajectory", "inversion_file": str(inversion), "steps_shown": chosen, "replay": replay,
              **_inversion_record(inv)}
    write_png_with_sidecar(image, output, record)
    typer.echo(f"wrote {output}")


@app.command()
@_friendly
def vocabulary(model: ModelOpt = None, model_config: ModelConfigOpt = None, device: DeviceOpt = "auto") -> None:
    """List the words the model's tokenizer knows (others in a prompt would be dropped)."""
    import textwrap

    m = _load(model, device, None, model_config)
    words = m.vocabulary()
    if words is None:
        typer.echo(f"{m.name}: the tokenizer has an open vocabulary (subword pieces); any word can be spelled")
        return
    typer.echo(f"{m.name}: {len(words)} known words")
    typer.echo(textwrap.fill(" ".join(words), width=100, break_long_words=False, break_on_hyphens=False))


@app.command()
@_friendly
def batch(
    manifest: Annotated[Path, typer.Argument(help="JSONL: one job per line (see 'unsample.batch').")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the outputs and manifest.done.jsonl (re-run to resume).")],
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed job.")] = False,
    processes: Annotated[int, typer.Option("--processes", min=1, help="Split the jobs over this many processes.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Run up to this many compatible jobs through "
                                            "the network together.")] = edit_defaults.BATCH_SIZE,
    shard: Annotated[str | None, typer.Option("--shard", help="K/N: run shard K of N (default: RANK/WORLD_SIZE "
                                              "from torchrun or accelerate, else 0/1).")] = None,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run invert / reconstruct / edit jobs from a manifest; a killed batch resumes where it stopped."""
    from unsample.batch import done_file, read_manifest, recorded, run_batch, shard_from_env

    jobs = read_manifest(manifest)  # a bad manifest fails before the model loads
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder for the batch's outputs")
    if processes > 1:
        if shard is not None:
            raise UserError("--processes starts its own shards; give --processes or --shard, not both")
        import subprocess

        out.mkdir(parents=True, exist_ok=True)
        begin = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))}
        common = [str(manifest), "--out", str(out), "--device", device, "--quiet", "--batch-size", str(batch_size)] + (["--model", model] if model else []) \
            + (["--model-config", model_config] if model_config else []) + (["--dtype", dtype] if dtype else []) + (["--fail-fast"] if fail_fast else [])
        procs = [subprocess.Popen([sys.executable, "-m", "unsample.cli", "batch", *common, "--shard", f"{k}/{processes}"], env=env)
                 for k in range(processes)]
        codes = [p.wait() for p in procs]
        records = recorded(out)
        ok = sum(r.get("status") == "ok" for r in records.values())
        failed = sum(r.get("status") == "failed" for r in records.values())
        typer.echo(f"{processes} processes: {ok} of {len(jobs)} jobs done, {failed} failed ({time.perf_counter() - begin:.1f} s)")
        if any(codes):
            raise UserError(f"a batch process ended with exit code {max(codes)}; re-run the same command to resume")
        return
    launched = None
    if shard is None:
        part = shard_from_env()
        if part[1] > 1:  # started by accelerate launch (or torchrun): accelerate places this process
            from unsample.batch import launched_process

            launched = launched_process(device)
            part, device = launched.shard, launched.device
    else:
        try:
            k_text, n_text = shard.split("/")
            part = (int(k_text), int(n_text))
            if part[1] < 1 or not 0 <= part[0] < part[1]:
                raise ValueError
        except ValueError:
            raise UserError(f"--shard {shard!r} is not K/N with 0 <= K < N (e.g. 0/2)") from None
    m = _load(model, device, dtype, model_config)

    res = run_batch(m, manifest, out, fail_fast=fail_fast, progress=not quiet, write_png=write_png, shard=part,
                    batch_size=batch_size)
    typer.echo(f"{res.done} done, {res.skipped} already done, {res.failed} failed ({res.seconds:.1f} s); "
               f"records in {out / done_file(part)}")
    for job_id, message in res.errors.items():
        typer.echo(f"  {job_id}: {message}", err=True)
    if launched is not None:
        launched.wait_for_everyone()
        if part[0] == 0:
            records = recorded(out)
            ok = sum(r.get("status") == "ok" for r in records.values())
            typer.echo(f"{part[1]} processes: {ok} of {len(jobs)} jobs done, {len(records) - ok} failed")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that write reports (report.md, results.json, CSV, plots).")
app.add_typer(bench_app, name="bench")


def _csv(text: str, kind: type) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{text!r} is not a comma-separated list of {kind.__name__} values") from None


BenchOptionOpt = Annotated[list[str] | None, typer.Option(
    "--option", help="METHOD:KEY=VALUE for one method, repeatable (e.g. edict:precision=float64).")]


def _check_report_folder(out: Path) -> None:
    """A bench's report folder must be a folder (or not exist yet) and writable, checked before the run."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder for the report")
    parent = out if out.exists() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {str(out)!r} cannot be written ({str(parent)!r} is not writable)")


def _bench_options(pairs: list[str] | None, methods: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["edict:precision=float64"]`` -> ``{"edict": {"precision": "float64"}}``, checked per method."""
    from unsample.methods.options import parse_options
    from unsample.methods.registry import get_method

    raw: dict[str, list[str]] = {}
    for pair in pairs or []:
        method, sep, option = pair.partition(":")
        if not sep or method not in methods:
            raise UserError(f"--option {pair!r} must be METHOD:KEY=VALUE with METHOD one of {', '.join(methods)}")
        raw.setdefault(method, []).append(option)
    return {m: parse_options(get_method(m).config, opts, m) for m, opts in raw.items()}


@bench_app.command("reconstruction")
@_friendly
def bench_reconstruction(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("out/bench-reconstruction"),
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated, default all registered.")] = "",
    steps: Annotated[str, typer.Option("--steps", help="Comma-separated step counts.")] = "50",
    guidance: Annotated[str, typer.Option("--guidance", help="Comma-separated CFG scales.")] = "1,7",
    scenes: Annotated[int, typer.Option("--scenes", min=1, help="Held-out shapes scenes.")] = 20,
    images: Annotated[Path | None, typer.Option("--images", help="Folder of real images (with --prompts).")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="JSONL: {\"image\": name, \"prompt\": text} per line.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="4 scenes, 10 steps: a few minutes.")] = False,
    option: BenchOptionOpt = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
) -> None:
    """Reconstruction error of every method against the autoencoder floor."""
    from unsample.bench.reconstruction import ReconstructionBench, report_table, run, write_report
    from unsample.methods.registry import available_methods, get_method

    names = _csv(methods, str) or tuple(available_methods())
    for name in names:
        get_method(name)
    bench = ReconstructionBench(
        methods=names,
        steps=(10,) if quick else _csv(steps, int),
        guidance=_csv(guidance, float),
        scenes=4 if quick else scenes,
        seed=seed,
        images_dir=str(images) if images else None,
        prompts_file=str(prompts) if prompts else None,
        options=_bench_options(option, names),
    )
    _check_report_folder(out)
    m = _load(model, device, dtype, model_config)
    if _csv(methods, str):
        for name in names:
            get_method(name).check_applies(m.schedule)
    else:  # every method that runs on this model's family
        import dataclasses

        names = tuple(n for n in names if get_method(n).refuses is None or not get_method(n).refuses(m.schedule))
        bench = dataclasses.replace(bench, methods=names, options=_bench_options(option, names))
    result = run(m, bench)
    command = "unsample " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("unsample") else "unsample bench reconstruction"
    write_report(result, bench, out, command, m)
    typer.echo(report_table(result["rows"]))
    typer.echo(f"report: {out / 'report.md'}")


@bench_app.command("edit")
@_friendly
def bench_edit(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("out/bench-edit"),
    methods: Annotated[str, typer.Option("--methods", help="Inversion methods, and flowedit (FlowEdit: no inversion; "
                                          "swap, no mask).")] = "ddim,null-text,edict",
    controls: Annotated[str, typer.Option("--controls", help="swap,p2p,direct+p2p")] = "swap,p2p,direct+p2p",
    masks: Annotated[str, typer.Option("--masks", help="none,noise,attention,intersect,exact (exact: the pair's own mask)")] = "none,noise",
    mask_dilate: Annotated[int, typer.Option("--mask-dilate", min=0, help="Grow every mask by this many latent cells.")] = 0,
    blend_start: Annotated[float, typer.Option("--blend-start", min=0.0, max=1.0, help="Step fraction from which masked blending acts.")] = 0.0,
    mask_rule: Annotated[str, typer.Option("--mask-rule", help="Noise mask threshold: diffedit|otsu.")] = "diffedit",
    mask_smooth: Annotated[int, typer.Option("--mask-smooth", min=0, help="Noise mask smoothing radius (latent cells).")] = 0,
    robustness: Annotated[bool, typer.Option("--robustness", help="Run the pairs under every robustness variant (off-distribution images).")] = False,
    variants: Annotated[str, typer.Option("--variants", help="Robustness variants (default all): stripe-angle,stripe-width,off-palette,noise,blur,jpeg")] = "",
    pairs: Annotated[int, typer.Option("--pairs", min=1)] = 50,
    kinds: Annotated[str, typer.Option("--kinds")] = "color,shape,size,background",
    steps: Annotated[int, typer.Option("--steps", min=1)] = 50,
    inversion_guidance: Annotated[float | None, typer.Option(
        "--inversion-guidance", help="CFG of the inversion (default: the edit's, so exact methods replay exactly).")] = None,
    edit_guidance: Annotated[float, typer.Option("--edit-guidance")] = 5.0,
    start_step: Annotated[int, typer.Option("--start-step", min=0)] = 0,
    images: Annotated[Path | None, typer.Option("--images", help="Folder of real images (with --prompts).")] = None,
    prompts: Annotated[Path | None, typer.Option(
        "--prompts", help="JSONL: {\"image\", \"source_prompt\", \"target_prompt\", optional \"mask\", \"kind\"} per line.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="8 pairs, 20 steps, ddim only.")] = False,
    option: BenchOptionOpt = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
) -> None:
    """Edit success and background preservation on edit pairs with exact targets."""
    from unsample.bench.edit import CONTROLS, FLOWEDIT, MASKS, EditBench, report_table, run, write_report
    from unsample.methods.registry import get_method

    names = _csv(methods, str)
    for name in names:
        if name != FLOWEDIT:  # an editor without inversion, not a registry method
            get_method(name)
    ctrl = _csv(controls, str)
    for c in ctrl:
        if c not in CONTROLS:
            raise UserError(f"control {c!r} is not one of {', '.join(CONTROLS)}")
    mask_names = _csv(masks, str)
    for mk in mask_names:
        if mk not in MASKS:
            raise UserError(f"mask {mk!r} is not one of {', '.join(MASKS)}")
    from unsample.shapes.robustness import ROBUSTNESS_VARIANTS

    variant_names = _csv(variants, str)
    for v in variant_names:
        if v not in ROBUSTNESS_VARIANTS:
            raise UserError(f"variant {v!r} is not one of {', '.join(ROBUSTNESS_VARIANTS)}")
    if variant_names and not robustness:
        raise UserError("--variants chooses robustness variants; add --robustness")
    if (images or prompts) and robustness:
        raise UserError("--robustness perturbs the shapes pairs; it does not apply to --images/--prompts")
    bench = EditBench(
        methods=("ddim",) if quick else names, controls=ctrl, masks=mask_names, mask_dilate=mask_dilate, mask_rule=mask_rule,
        mask_smooth=mask_smooth,
        blend_start=blend_start, robustness=robustness, variants=variant_names,
        pairs=8 if quick else pairs, kinds=_csv(kinds, str),
        steps=20 if quick else steps, inversion_guidance=inversion_guidance, edit_guidance=edit_guidance,
        start_step=start_step, seed=seed, images_dir=str(images) if images else None,
        prompts_file=str(prompts) if prompts else None, options=_bench_options(option, names),
    )
    _check_report_folder(out)
    from unsample.api import _check_guidance

    _check_guidance(edit_guidance, "--edit-guidance")
    _check_guidance(inversion_guidance, "--inversion-guidance", allow_none=True)
    m = _load(model, device, dtype, model_config)
    result = run(m, bench)
    command = "unsample " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("unsample") else "unsample bench edit"
    write_report(result, bench, out, command, m)
    typer.echo(report_table(result["summary"]))
    typer.echo(f"report: {out / 'report.md'}")


def install_signal_cleanup() -> None:
    """SIGTERM exits like Ctrl-C does (through the stack), so temp files and folders are removed by the
    ``finally`` blocks that made them instead of being left half-written."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _usage_error(err: Exception) -> str | None:
    """One line for a bad flag or value (typer's click errors); None for anything else."""
    format_message = getattr(err, "format_message", None)
    if format_message is None or not isinstance(getattr(err, "exit_code", None), int):
        return None
    ctx = getattr(err, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return "error: " + " ".join(str(format_message()).split()) + where


def main() -> None:
    """Console-script entry point. Bad flags and values are one line on stderr, exit 2 (typer
    would draw them in a box under the usage text); bare commands still print their help."""
    install_signal_cleanup()
    try:
        code = app(prog_name="unsample", standalone_mode=False)
    except Exception as err:
        line = _usage_error(err)
        if line is None:
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as typer prints it
            err.show()  # type: ignore[attr-defined]
        else:
            typer.echo(line, err=True)
        sys.exit(err.exit_code)  # type: ignore[attr-defined]
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
