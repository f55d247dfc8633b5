"""The embedded models: small pipelines trained on the shapes world, shipped as package data.

- ``embedded`` (the default): a Stable-Diffusion-layout latent pipeline, trained by
  `unsample.embedded.train.train_embedded` (``unsample train-embedded``);
- ``embedded-pixel``: a 32 px class-conditional pixel-space DDIMPipeline and its noisy shape
  classifier, trained by `unsample.embedded.pixel_train.train_embedded_pixel`
  (``unsample train-embedded-pixel``);
- ``embedded-flow``: an SD3-architecture (MMDiT) rectified-flow pipeline on the default model's
  autoencoder, trained by `unsample.embedded.flow_train.train_embedded_flow`
  (``unsample train-embedded --family flow``).

`embedded_model_path` is where each lives; `install_trained_model` copies a finished run's
``model/`` folder into the package. Nothing is loaded at import time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["EMBEDDED_MODELS", "embedded_model_path", "model_folder", "model_classifier_file", "install_trained_model", "train_embedded", "TrainConfig"]

EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "embedded": ("model", "unsample train-embedded"),
    "embedded-pixel": ("pixel_model", "unsample train-embedded-pixel"),
    "embedded-flow": ("flow_model", "unsample train-embedded --family flow"),
}
"""Name -> (package folder, the command that trains it)."""


def embedded_model_path(name: str = "embedded") -> Path:
    """The package folder that holds embedded model ``name`` (it may not exist before training)."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; expected one of {', '.join(EMBEDDED_MODELS)}")
    return Path(__file__).resolve().parent / EMBEDDED_MODELS[name][0]


def model_folder(model: str | Path) -> Path:
    """The folder behind a model name: an embedded model's package folder, or ``model`` as a path."""
    return embedded_model_path(str(model)) if str(model) in EMBEDDED_MODELS else Path(model)


def model_classifier_file(model: str | Path) -> Path:
    """The noisy classifier shipped beside a pixel pipeline (``classifier.safetensors``); a
    one-line ValueError when the folder has none."""
    from unsample.embedded.pixel_configs import CLASSIFIER_FILE

    path = model_folder(model) / CLASSIFIER_FILE
    if not path.is_file():
        raise ValueError(f"{model_folder(model)} has no {CLASSIFIER_FILE}: classifier guidance needs the model's "
                         "noisy classifier beside its model_index.json (unsample train-embedded-pixel writes one)")
    return path


def install_trained_model(out_dir: Path, name: str = "embedded") -> Path:
    """Copy ``out_dir/model`` (a finished training run) into the package, atomically.

    ``out_dir`` may also be the ``model`` folder itself. Returns `embedded_model_path(name)`.
    """
    source = Path(out_dir)
    if not (source / "model_index.json").exists():
        source = source / "model"
    if not (source / "model_index.json").exists():
        raise FileNotFoundError(
            f"no pipeline at {Path(out_dir)} (no model_index.json there or in model/); "
            "finish a run with `unsample train-embedded --out DIR` first"
        )
    target = embedded_model_path(name)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    from unsample.embedded.train import portable_model_index

    portable_model_index(tmp)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
    return target


def __getattr__(name: str):
    # Lazy re-exports: importing the package stays free of torch and diffusers.
    if name == "train_embedded":
        from unsample.embedded.train import train_embedded

        return train_embedded
    if name == "TrainConfig":
        from unsample.embedded.configs import TrainConfig

        return TrainConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
