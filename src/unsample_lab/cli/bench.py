"""``unsample bench reconstruction`` and ``unsample bench edit``: the benches that write reports
(report.md, results.json, CSV, plots). The benches, the shapes world and the library's model code are
imported inside the commands, so registering them stays cheap (`unsample_lab.cli`)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from unsample import defaults as edit_defaults
from unsample.cli.common import (
    DeviceOpt,
    DtypeOpt,
    ModelConfigOpt,
    ModelOpt,
    UserError,
    csv_values,
    friendly,
    load_model,
)
from unsample.images import canonical_fit

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
    from unsample.methods.options import parse_options  # the methods load torch: registration stays cheap
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
    from unsample.methods.registry import available_methods, get_method  # registration stays cheap
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
    backgrounds: Annotated[bool, typer.Option("--backgrounds", help="Run the object-edit pairs over new backgrounds "
                                              "(patterns, checkers, gradients off the palette; photo crops).")] = False,
    variants: Annotated[str, typer.Option("--variants", help="Variants to run (default: all of each family asked for): "
                                          "stripe-angle,stripe-width,off-palette,noise,blur,jpeg (--robustness); "
                                          "new-pattern,new-checker,new-gradient,photo (--backgrounds)")] = "",
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
    check: Annotated[bool, typer.Option("--check", help="Run the edit check on every edit and report how well it "
                                        "agrees with the detector (ROC AUC, silent failures, false alarms).")] = False,
    ladder: Annotated[bool, typer.Option("--ladder", help="Escalate through the recipe ladder when the check says an "
                                         "edit did not take (the check runs too).")] = False,
    paste_seam: Annotated[int, typer.Option("--paste-seam", min=0, help="Paste-back's seam width in pixels (every "
                                             "masked edit is scored with paste-back and without).")]
    = edit_defaults.PASTE_SEAM,
    fit: Annotated[str, typer.Option("--fit", help="How --images are sized: area (keep the aspect ratio at about the "
                                     "model's pixel count) | crop | native (unsample.images).")] = "area",
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
) -> None:
    """Edit success and background preservation on edit pairs with exact targets."""
    from unsample.methods.registry import get_method  # registration stays cheap
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
    from unsample_lab.shapes.backgrounds import NEW_BACKGROUNDS  # registration stays cheap
    from unsample_lab.shapes.robustness import ROBUSTNESS_VARIANTS

    variant_names = csv_values(variants, str)
    for v in variant_names:
        if v in ROBUSTNESS_VARIANTS and not robustness:
            raise UserError(f"variant {v!r} is a robustness variant; add --robustness")
        if v in NEW_BACKGROUNDS and not backgrounds:
            raise UserError(f"variant {v!r} is a new background; add --backgrounds")
        if v not in ROBUSTNESS_VARIANTS + NEW_BACKGROUNDS:
            raise UserError(f"variant {v!r} is not one of {', '.join(ROBUSTNESS_VARIANTS + NEW_BACKGROUNDS)}")
    if (images or prompts) and (robustness or backgrounds):
        raise UserError("--robustness and --backgrounds change the shapes pairs; they do not apply to --images/--prompts")
    bench = EditBench(
        methods=("ddim",) if quick else names, controls=ctrl, masks=mask_names, mask_dilate=mask_dilate, mask_rule=mask_rule,
        mask_smooth=mask_smooth,
        blend_start=blend_start, robustness=robustness, backgrounds=backgrounds, variants=variant_names,
        pairs=8 if quick else pairs, kinds=csv_values(kinds, str),
        steps=20 if quick else steps, inversion_guidance=inversion_guidance, edit_guidance=edit_guidance,
        start_step=start_step, seed=seed, images_dir=str(images) if images else None,
        prompts_file=str(prompts) if prompts else None, options=_bench_options(option, names), check=check, ladder=ladder,
        paste_seam=paste_seam, fit=canonical_fit(fit),
    )
    _check_report_folder(out)
    from unsample.api import _check_guidance  # the api loads torch: registration stays cheap

    _check_guidance(edit_guidance, "--edit-guidance")
    _check_guidance(inversion_guidance, "--inversion-guidance", allow_none=True)
    m = load_model(model, device, dtype, model_config)
    result = run(m, bench)
    command = "unsample " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("unsample") else "unsample bench edit"
    write_report(result, bench, out, command, m)
    typer.echo(report_table(result["summary"]))
    typer.echo(f"report: {out / 'report.md'}")


@friendly
def bench_edit_path(
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps of the traced edit.")] = 4,
) -> None:
    """Trace one default ``unsample edit`` of an image: the library modules and calls it runs, and how
    often it checks the prompts, builds the grid and checks the model."""
    from unsample_lab.bench.edit_path import trace_edit  # a lab bench: loaded by its command only

    for line in trace_edit(steps).lines():
        typer.echo(line)


@friendly
def bench_fidelity(
    scenes: Annotated[int, typer.Option("--scenes", min=1, help="In-distribution shapes scenes (and as many per "
                                        "robustness variant).")] = 20,
    reconstruction: Annotated[int, typer.Option("--reconstruction", min=0, help="Scenes and photographs each "
                                                "inverted and replayed to measure the gap below the floor.")] = 0,
    methods: Annotated[str, typer.Option("--methods", help="Methods of the reconstruction rows.")] = "ddim,edict",
    guidance: Annotated[str, typer.Option("--guidance", help="CFG scales of the reconstruction rows.")] = "1,5",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
) -> None:
    """The autoencoder's round-trip PSNR of shapes scenes, their robustness variants and scikit-image's
    photographs: the figures behind the representability threshold (docs/edit_check.md)."""
    from unsample_lab.bench.fidelity import FidelityBench, gap_table, reconstruction_gaps, run, table

    bench = FidelityBench(scenes=scenes, seed=seed, reconstruction=reconstruction, methods=csv_values(methods, str),
                          guidance=csv_values(guidance, float))
    m = load_model(model, device, dtype, model_config)
    rows = run(m, bench)
    typer.echo(f"{m.name} ({m.fingerprint}), {m.resolution} px:")
    typer.echo(table(rows))
    if reconstruction:
        typer.echo(gap_table(reconstruction_gaps(m, bench, rows)))


@friendly
def bench_scale(
    families: Annotated[str, typer.Option("--families", help="Comma-separated: sd15,sdxl,sd3,flux.")] = "sd15,sdxl,sd3,flux",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated, default every registered method "
                                         "(each family runs those its schedule takes).")] = "",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps of each edit.")] = 4,
    resolution: Annotated[int | None, typer.Option("--resolution", min=64, help="Image side in pixels (default: "
                                                   "256 on CPU; 512 for SD 1.5 and 1024 for the others on CUDA).")] = None,
    blocks: Annotated[int | None, typer.Option("--blocks", min=1, help="Transformer blocks of each kind built for "
                                               "SD3 and Flux; the time is extrapolated per block (default: 1 on CPU, "
                                               "all on CUDA). The UNets are always whole.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu|cuda")] = "cpu",
    dtype: Annotated[str, typer.Option("--dtype", help="float32|float16|bfloat16")] = "float32",
    out: Annotated[Path, typer.Option("--out", help="Results folder (rows.jsonl: a rerun skips the rows done).")]
    = Path("out/bench-scale"),
    recipes: Annotated[str, typer.Option("--recipes", help="Ladder rungs measured (the first is the default edit).")] = "as-asked,no-mask,p2p",
    inline: Annotated[bool, typer.Option("--inline", help="Run the rows in this process (tests; peak memory then "
                                         "includes earlier rows').")] = False,
    tiny: Annotated[bool, typer.Option("--tiny", hidden=True, help="Toy widths, same block structure (tests).")] = False,
) -> None:
    """Peak memory, seconds per network evaluation and the ratio to a bare forward pass, per method
    (invert + reconstruct) and edit recipe (the whole edit), on the real SD 1.5, SDXL, SD3-medium and
    Flux.1-dev architectures with random weights (docs/scale.md)."""
    from unsample.methods.registry import available_methods, get_method  # registration stays cheap
    from unsample_lab.bench.scale_models import FAMILIES
    from unsample_lab.bench.scale_report import plan, run, tables

    fams = csv_values(families, str)
    for fam in fams:
        if fam not in FAMILIES:
            raise UserError(f"family {fam!r} is not one of {', '.join(FAMILIES)}")
    names = csv_values(methods, str) or tuple(available_methods())
    for name in names:
        get_method(name)
    if dtype not in ("float32", "float16", "bfloat16"):
        raise UserError(f"--dtype {dtype!r} is not one of float32, float16, bfloat16")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r} is not cpu or cuda")
    _check_report_folder(out)
    rows = plan(fams, names, steps=steps, resolution=resolution, blocks=blocks, device=device, dtype=dtype,
                recipes=csv_values(recipes, str), tiny=tiny)
    results = run(rows, out, isolate=not inline, echo=typer.echo)
    typer.echo(tables(results))
    typer.echo(f"rows: {out / 'rows.jsonl'}; table: {out / 'table.md'}")
