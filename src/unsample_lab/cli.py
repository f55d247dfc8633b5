"""The lab's commands on the ``unsample`` command line: demo, train-embedded(-pixel),
evaluate-embedded(-pixel) and the bench group.

`register` adds them to the library's app; the library finds it through the
``unsample.commands`` entry point (pyproject.toml), so `unsample` itself never imports the lab.
The lab's heavy modules (training, evaluation, benches, the shapes world) are imported inside the
commands: registering the commands must not load them, so ``unsample edit`` stays free of them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from unsample.cli.common import (
    DeviceOpt,
    DtypeOpt,
    ModelConfigOpt,
    ModelOpt,
    UserError,
    csv_values,
    friendly,
    load_model,
    quiet_libraries,
)


@friendly
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
    quiet_libraries()
    from unsample_lab.pixel_demo import is_pixel_demo_model, run_pixel_demo

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
    from unsample_lab.demo import run_demo

    res = run_demo(out, model=model, device=device, method=method, steps=steps)
    typer.echo(f"model: {res.model}")
    for name, path in res.files.items():
        typer.echo(f"{name:>15}: {path}")
    typer.echo(f"reconstruction PSNR {res.psnr_reconstruction:.2f} dB (VAE floor {res.psnr_vae_floor:.2f} dB), {res.seconds:.1f} s")


@friendly
def evaluate_embedded(
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Pipeline folder (default: the installed embedded model).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="An embedded model by name instead of --model-dir: "
                                              "embedded or embedded-flow.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the card (default: beside the weights).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small smoke run (not the card's protocol).")] = False,
) -> None:
    """Measure the embedded model (or embedded-flow) and write MODEL_CARD.md + model_card.json + samples.png."""
    quiet_libraries()
    from unsample.embedded import embedded_model_path
    from unsample_lab.embedded.evaluate import EvalConfig, evaluate

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


@friendly
def evaluate_embedded_pixel(
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Pixel model folder (default: the installed embedded-pixel).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the card (default: beside the weights).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small smoke run (not the card's protocol).")] = False,
) -> None:
    """Measure the embedded pixel model and its classifier; write MODEL_CARD.md + model_card.json + samples.png."""
    quiet_libraries()
    import json

    from unsample_lab.embedded.pixel_evaluate import PixelEvalConfig, evaluate_pixel

    card = evaluate_pixel(model_dir, out, PixelEvalConfig.quick() if quick else PixelEvalConfig())
    for key, value in card["figures"].items():
        typer.echo(f"{key:>26}: {json.dumps(value)}")


@friendly
def train_embedded_pixel_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run folder: log, checkpoints, final model/ (re-run to resume).")],
    tiny: Annotated[bool, typer.Option("--tiny", help="A few steps of a tiny configuration (a smoke test).")] = False,
    install: Annotated[bool, typer.Option("--install", help="Copy the finished model into the package.")] = False,
) -> None:
    """Train the embedded pixel model (class-conditional UNet2DModel, then its noisy shape classifier); resumes."""
    quiet_libraries()
    from unsample_lab.embedded import install_trained_model
    from unsample_lab.embedded.pixel_configs import PixelTrainConfig
    from unsample_lab.embedded.pixel_train import train_embedded_pixel

    model_dir = train_embedded_pixel(out, config=PixelTrainConfig.tiny() if tiny else None)
    typer.echo(f"model written to {model_dir}")
    if install:
        typer.echo(f"installed into {install_trained_model(out, 'embedded-pixel')}")


def _saved_flow_config(out: Path) -> Any:
    """The flow config a run folder holds (run.json), or the default one for a new folder."""
    import json

    from unsample_lab.embedded.flow_configs import FlowTrainConfig

    path = out / "run.json"
    if path.exists():
        return FlowTrainConfig.from_json(json.loads(path.read_text(encoding="utf-8"))["config"])
    return FlowTrainConfig()


@friendly
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
    quiet_libraries()
    from unsample_lab.embedded import install_trained_model

    if family == "flow":
        import dataclasses

        from unsample_lab.embedded.flow_configs import FlowTrainConfig
        from unsample_lab.embedded.flow_train import train_embedded_flow

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
    from unsample_lab.embedded.configs import TrainConfig
    from unsample_lab.embedded.train import train_embedded

    model_dir = train_embedded(out, config=TrainConfig.tiny() if tiny else None, autoencoder_from=autoencoder_from)
    typer.echo(f"model written to {model_dir}")
    if install:
        typer.echo(f"installed into {install_trained_model(out)}")


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


@friendly
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
    from unsample.methods.registry import available_methods, get_method
    from unsample_lab.bench.reconstruction import (
        ReconstructionBench,
        report_table,
        run,
        write_report,
    )

    names = csv_values(methods, str) or tuple(available_methods())
    for name in names:
        get_method(name)
    bench = ReconstructionBench(
        methods=names,
        steps=(10,) if quick else csv_values(steps, int),
        guidance=csv_values(guidance, float),
        scenes=4 if quick else scenes,
        seed=seed,
        images_dir=str(images) if images else None,
        prompts_file=str(prompts) if prompts else None,
        options=_bench_options(option, names),
    )
    _check_report_folder(out)
    m = load_model(model, device, dtype, model_config)
    if csv_values(methods, str):
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


@friendly
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
    from unsample.methods.registry import get_method
    from unsample_lab.bench.edit import (
        CONTROLS,
        FLOWEDIT,
        MASKS,
        EditBench,
        report_table,
        run,
        write_report,
    )

    names = csv_values(methods, str)
    for name in names:
        if name != FLOWEDIT:  # an editor without inversion, not a registry method
            get_method(name)
    ctrl = csv_values(controls, str)
    for c in ctrl:
        if c not in CONTROLS:
            raise UserError(f"control {c!r} is not one of {', '.join(CONTROLS)}")
    mask_names = csv_values(masks, str)
    for mk in mask_names:
        if mk not in MASKS:
            raise UserError(f"mask {mk!r} is not one of {', '.join(MASKS)}")
    from unsample_lab.shapes.robustness import ROBUSTNESS_VARIANTS

    variant_names = csv_values(variants, str)
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
        pairs=8 if quick else pairs, kinds=csv_values(kinds, str),
        steps=20 if quick else steps, inversion_guidance=inversion_guidance, edit_guidance=edit_guidance,
        start_step=start_step, seed=seed, images_dir=str(images) if images else None,
        prompts_file=str(prompts) if prompts else None, options=_bench_options(option, names),
    )
    _check_report_folder(out)
    from unsample.api import _check_guidance

    _check_guidance(edit_guidance, "--edit-guidance")
    _check_guidance(inversion_guidance, "--inversion-guidance", allow_none=True)
    m = load_model(model, device, dtype, model_config)
    result = run(m, bench)
    command = "unsample " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("unsample") else "unsample bench edit"
    write_report(result, bench, out, command, m)
    typer.echo(report_table(result["summary"]))
    typer.echo(f"report: {out / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add the lab's commands to the ``unsample`` app."""
    app.command("demo")(demo)
    app.command("evaluate-embedded")(evaluate_embedded)
    app.command("evaluate-embedded-pixel")(evaluate_embedded_pixel)
    app.command("train-embedded-pixel")(train_embedded_pixel_cmd)
    app.command("train-embedded")(train_embedded_cmd)
    bench = typer.Typer(no_args_is_help=True, help="Benchmarks that write reports (report.md, results.json, CSV, plots).")
    bench.command("reconstruction")(bench_reconstruction)
    bench.command("edit")(bench_edit)
    app.add_typer(bench, name="bench")
