"""``unsample invert``, ``reconstruct`` and ``trajectory``: make an inversion, replay it, look along it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer

import unsample
from unsample import trajectory as tv
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
    csv_values,
    friendly,
    inversion_record,
    load_model,
    sample_record,
)
from unsample.editing.fidelity import FIDELITY_KEY, input_fidelity
from unsample.images import FIT_ALIASES, FITS, load_image
from unsample.methods.base import MethodOutput
from unsample.methods.options import parse_options
from unsample.methods.registry import get_method
from unsample.outputs import write_png_with_sidecar


@friendly
def invert(
    image: Annotated[Path, typer.Argument(help="The image to invert (PNG/JPEG).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the inversion (.safetensors).")],
    prompt: Annotated[str, typer.Option("--prompt", help="A prompt that describes the image.")] = "",
    negative_prompt: Annotated[str, typer.Option("--negative-prompt")] = "",
    method: Annotated[str, typer.Option("--method", help="Inversion method; see 'unsample methods'.")] = "ddim",
    steps: Annotated[int, typer.Option("--steps", min=1)] = 50,
    guidance: Annotated[float, typer.Option("--guidance", help="CFG scale; 1 = no guidance.")] = 1.0,
    option: Annotated[list[str] | None, typer.Option("--option", help="Method option KEY=VALUE (repeatable).")] = None,
    fit: Annotated[str, typer.Option("--fit", help="area (keep the aspect ratio at about the model's pixel count) | "
                                     "crop (centre square; alias model) | native (own size; alias multiple).")] = "area",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    allow_unknown_words: Annotated[bool, typer.Option(
        "--allow-unknown-words", help="Invert even if the prompt has words the model's tokenizer does not know.")] = False,
    classifier: ClassifierOpt = None,
    class_label: ClassLabelOpt = None,
    classifier_scale: ClassifierScaleOpt = 1.0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Invert IMAGE into the noise the sampler turns back into it."""
    check_output(output, ".safetensors")
    options = parse_options(get_method(method).config, option or [], method)
    if fit not in (*FITS, *FIT_ALIASES):
        raise UserError(f"--fit {fit!r} is not one of {', '.join(FITS)} (or the old names {', '.join(FIT_ALIASES)})")

    picture = load_image(image)  # a missing or unreadable image fails before the model loads
    steer = classifier_guidance_from(classifier, class_label, classifier_scale)
    m = load_model(model, device, dtype, model_config, offload)
    check_words(m, [prompt, negative_prompt], allow_unknown_words)
    inv = unsample.invert(
        m, picture, prompt, method=method, steps=steps, guidance=guidance, negative_prompt=negative_prompt,
        seed=seed, fit=fit, progress=not quiet, classifier_guidance=steer, unknown_words="checked",
        **options,  # type: ignore[arg-type]
    )
    fidelity = input_fidelity(m, inv.input_pixels(m.device), latent=inv.image_latent)  # one decode
    inv.stats[FIDELITY_KEY] = fidelity.to_json()  # a later edit of the file says it again
    inv.save(output)
    for line in fidelity.warnings():
        typer.echo(line, err=True)
    typer.echo(f"wrote {output} ({inv.method}, {inv.steps} steps, NFE {inv.nfe}, {inv.seconds:.2f} s)")


@friendly
def reconstruct(
    inversion: Annotated[Path, typer.Argument(help="An inversion file from 'unsample invert'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG.")],
    classifier: ClassifierOpt = None,
    class_label: ClassLabelOpt = None,
    classifier_scale: ClassifierScaleOpt = 1.0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Replay the sampler from the inverted noise with the inversion's own prompt and guidance."""
    check_output(output, ".png")
    inv = unsample.Inversion.load(inversion)
    steer = classifier_guidance_from(classifier, class_label, classifier_scale)
    m = load_model(model, device, dtype, model_config, offload)
    start = time.perf_counter()
    sample = unsample.reconstruct(m, inv, output="result", progress=not quiet, classifier_guidance=steer)
    record = {**sample_record(sample, m, start, "reconstruct", str(inversion)), **inversion_record(inv)}
    sidecar = write_png_with_sidecar(sample.image, output, record)
    typer.echo(f"wrote {output} and {sidecar.name} (NFE {sample.nfe}, {sample.seconds:.2f} s)")


@friendly
def trajectory(
    inversion: Annotated[Path, typer.Argument(help="An inversion file from 'unsample invert'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG grid.")],
    steps: Annotated[str, typer.Option("--steps", help="Comma-separated grid positions (default: 6 spread out).")] = "",
    replay: Annotated[bool, typer.Option("--replay", help="Show the replayed sampling run instead of the stored inversion.")] = False,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
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
    check_output(output, ".png")
    inv = unsample.Inversion.load(inversion)
    m = load_model(model, device, dtype, model_config, offload)
    inv.check_model(m)
    config = get_method(inv.method).config.from_options(dict(inv.options), inv.method)
    grid = inv.grid(m)
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
        steer = classifier_guidance_from(classifier, label, scale)
    den = m.denoiser(inv.prompt, guidance=inv.guidance, negative_prompt=inv.negative_prompt, dtype=config.dtype,
                     classifier=steer)
    states = inv.trajectory
    if replay:
        collected = [inv.trajectory[0].to(config.dtype)]
        with torch.no_grad():
            get_method(inv.method).sample(den, grid, MethodOutput(inv.trajectory, inv.extras), 0, config,
                                          callback=lambda i, x: collected.append(x.clone()))
        states = torch.stack(collected)
    xt = tv.to_xt(states, grid, inv.stats.get("space") == "sigma")
    chosen = list(csv_values(steps, int)) if steps else tv.default_steps(inv.steps)
    items = tv.panels(den, grid, xt, chosen)
    title = f"{inv.method} {'replay' if replay else 'inversion'}, {inv.steps} steps, guidance {inv.guidance:g}: {inv.prompt}"
    if steer is not None:
        title += f", classifier {steer.labels.tolist()} x{steer.scale:g}"
    image = tv.render(m, items, title)
    record = {"command": "trajectory", "inversion_file": str(inversion), "steps_shown": chosen, "replay": replay,
              **inversion_record(inv)}
    write_png_with_sidecar(image, output, record)
    typer.echo(f"wrote {output}")
