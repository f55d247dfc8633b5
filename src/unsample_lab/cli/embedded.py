"""The embedded models' commands: train-embedded (sd, flow), train-embedded-pixel, install-embedded,
sample-embedded, evaluate-embedded and evaluate-embedded-pixel.

Training writes only into the run folder the user names. Installing a finished model into the
package is one explicit step: ``unsample install-embedded RUN_DIR --model NAME``, or the train
commands' ``--install`` (the same step, after the run). The lab's modules are imported inside the
commands, so registering them stays cheap (`unsample_lab.cli`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from PIL import Image

from unsample.cli.common import UserError, check_output, friendly, quiet_libraries
from unsample.embedded import EMBEDDED_MODELS, embedded_model_path, model_folder
from unsample.outputs import atomic_write

OutOpt = Annotated[Path, typer.Option("--out", help="Run folder: log, checkpoints, final model/ (re-run to resume).")]
TinyOpt = Annotated[bool, typer.Option("--tiny", help="A few steps of a tiny configuration (a smoke test).")]
InstallOpt = Annotated[bool, typer.Option("--install", help="Then install the finished model into the package "
                                          "(the same step as 'unsample install-embedded OUT').")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="FIELD=VALUE, repeatable: a setting a run may change when resumed, saved in its run.json: the budget "
    "(e.g. unet_steps=20000, unet_max_minutes=120; flow: steps) or log_every, checkpoint_minutes, threads.")]


def _install(run_dir: Path, name: str) -> Path:
    """`unsample_lab.embedded.install_trained_model`: the one way a model enters the package."""
    import unsample_lab.embedded as lab_embedded  # registration must not load the lab's embedded package

    return lab_embedded.install_trained_model(run_dir, name)


def _saved_config(out: Path, cls: Any) -> Any:
    """The config a run folder holds (its run.json), or ``cls()`` for a new folder."""
    from unsample_lab.embedded.run_folder import RUN_JSON  # registration must not load the lab's embedded package

    path = out / RUN_JSON
    if path.exists():
        return cls.from_json(json.loads(path.read_text(encoding="utf-8"))["config"])
    return cls()


def _with_settings(config: Any, out: Path, cls: Any, allowed: frozenset[str], pairs: list[str] | None) -> Any:
    """``config`` (None: the run folder's own, or the default) with every ``--set FIELD=VALUE``
    applied; ``config`` itself when there are none. Only fields a resumed run may change are settable."""
    if not pairs:
        return config
    base = config if config is not None else _saved_config(out, cls)
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in allowed:
            raise UserError(f"--set {pair!r} is not FIELD=VALUE with FIELD one of {', '.join(sorted(allowed))}")
        kind = int if kinds[name] == "int" else float
        try:
            value = kind(raw)
        except ValueError:
            raise UserError(f"--set {pair!r}: {raw!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not (value >= 0 if name.endswith("steps") else value > 0):
            raise UserError(f"--set {pair!r}: {name} must be {'0 or more' if name.endswith('steps') else 'positive'}")
        changes[name] = value
    return dataclasses.replace(base, **changes)


@friendly
def train_embedded_cmd(
    out: OutOpt,
    family: Annotated[str, typer.Option("--family", help="sd: the Stable-Diffusion-layout UNet model (embedded); "
                                        "flow: the SD3-architecture rectified-flow model (embedded-flow), on the "
                                        "embedded model's autoencoder.")] = "sd",
    tiny: TinyOpt = False,
    install: InstallOpt = False,
    settings: SetOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="sd: progress bars on stderr.")] = True,
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
    if family == "flow":
        from unsample_lab.embedded import flow_train  # registration stays cheap
        from unsample_lab.embedded.flow_configs import FlowTrainConfig

        if lr is not None and not lr > 0:
            raise UserError(f"--lr {lr} must be positive")
        config = FlowTrainConfig.tiny() if tiny else None
        config = _with_settings(config, out, FlowTrainConfig, flow_train.RESUMABLE_CHANGES, settings)
        if lr is not None:
            config = dataclasses.replace(config or _saved_config(out, FlowTrainConfig), lr=lr)
        model_dir = flow_train.train_embedded_flow(out, config=config, autoencoder_from=autoencoder_from,
                                                   max_minutes=max_minutes, init_from=init_from)
        typer.echo(f"model written to {model_dir}")
        if install:
            typer.echo(f"installed into {_install(out, 'embedded-flow')}")
        return
    if family != "sd":
        raise UserError(f"--family {family!r} is not sd or flow")
    if max_minutes is not None or init_from is not None or lr is not None:
        raise UserError("--max-minutes, --init-from and --lr apply to --family flow; give the sd run's budget with --set")
    from unsample_lab.embedded import train  # registration stays cheap
    from unsample_lab.embedded.configs import TrainConfig

    config = _with_settings(TrainConfig.tiny() if tiny else None, out, TrainConfig, train.RESUMABLE_CHANGES, settings)
    model_dir = train.train_embedded(out, config=config, progress=progress, autoencoder_from=autoencoder_from)
    typer.echo(f"model written to {model_dir}")
    if install:
        typer.echo(f"installed into {_install(out, 'embedded')}")


@friendly
def train_embedded_pixel_cmd(out: OutOpt, tiny: TinyOpt = False, install: InstallOpt = False, settings: SetOpt = None) -> None:
    """Train the embedded pixel model (class-conditional UNet2DModel, then its noisy shape classifier); resumes."""
    quiet_libraries()
    from unsample_lab.embedded import pixel_train  # registration stays cheap
    from unsample_lab.embedded.pixel_configs import PixelTrainConfig

    config = PixelTrainConfig.tiny() if tiny else None
    config = _with_settings(config, out, PixelTrainConfig, pixel_train.RESUMABLE_CHANGES, settings)
    model_dir = pixel_train.train_embedded_pixel(out, config=config)
    typer.echo(f"model written to {model_dir}")
    if install:
        typer.echo(f"installed into {_install(out, 'embedded-pixel')}")


@friendly
def install_embedded(
    run_dir: Annotated[Path, typer.Argument(help="A finished training run's folder (its model/ is installed), or that "
                                            "model/ folder itself.")],
    model: Annotated[str, typer.Option("--model", help="The embedded model it replaces: embedded (an sd run), "
                                       "embedded-pixel or embedded-flow.")] = "embedded",
) -> None:
    """Install a finished run's model into the package, replacing that embedded model (atomically)."""
    if model not in EMBEDDED_MODELS:
        raise UserError(f"--model {model!r} is not one of {', '.join(EMBEDDED_MODELS)}")
    typer.echo(f"installed {model} into {_install(run_dir, model)}")


@friendly
def sample_embedded(
    model: Annotated[str, typer.Argument(help="A Stable-Diffusion-layout pipeline folder (e.g. RUN/model), or embedded.")],
    out: Annotated[Path, typer.Argument(help="The PNG to write.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="DDIM steps.")] = 30,
    guidance: Annotated[float, typer.Option("--guidance", help="CFG scale.")] = 4.0,
) -> None:
    """A grid of a trained model's generations: one row per caption, one column per seed.

    The captions are training and held-out captions of the shapes world; seeds 0-3; drawn at twice the size."""
    quiet_libraries()
    from unsample_lab.embedded.samples import sample_grid  # registration stays cheap

    check_output(out, ".png")
    folder = model_folder(model)
    index = folder / "model_index.json"
    if not index.is_file() or json.loads(index.read_text(encoding="utf-8")).get("_class_name") != "StableDiffusionPipeline":
        raise UserError(f"{folder} is not a StableDiffusionPipeline folder (its model_index.json names another class, "
                        "or it has none)")
    grid = sample_grid(folder, steps=steps, guidance=guidance)
    image = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
    atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))
    typer.echo(f"wrote {out}")


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
    from unsample_lab.embedded.evaluate import EvalConfig, evaluate  # registration stays cheap

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
    from unsample_lab.embedded.pixel_evaluate import PixelEvalConfig, evaluate_pixel  # registration stays cheap

    card = evaluate_pixel(model_dir, out, PixelEvalConfig.quick() if quick else PixelEvalConfig())
    for key, value in card["figures"].items():
        typer.echo(f"{key:>26}: {json.dumps(value)}")
