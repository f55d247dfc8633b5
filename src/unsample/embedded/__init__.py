"""The embedded models: small pipelines trained on the shapes world, shipped as package data.

- ``embedded`` (the default): a Stable-Diffusion-layout latent pipeline, trained by
  `unsample_lab.embedded.train.train_embedded` (``unsample train-embedded``);
- ``embedded-pixel``: a 32 px class-conditional pixel-space DDIMPipeline and its noisy shape
  classifier, trained by `unsample_lab.embedded.pixel_train.train_embedded_pixel`
  (``unsample train-embedded-pixel``);
- ``embedded-flow``: an SD3-architecture (MMDiT) rectified-flow pipeline on the default model's
  autoencoder, trained by `unsample_lab.embedded.flow_train.train_embedded_flow`
  (``unsample train-embedded --family flow``).

`embedded_model_path` is where each lives. Their training, evaluation and installation live in the
lab (`unsample_lab.embedded`), which the library never imports. Nothing is loaded at import time.
"""

from __future__ import annotations

from pathlib import Path

from unsample.errors import InputError

__all__ = ["EMBEDDED_MODELS", "embedded_model_path", "model_folder"]

EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "embedded": ("model", "unsample train-embedded"),
    "embedded-pixel": ("pixel_model", "unsample train-embedded-pixel"),
    "embedded-flow": ("flow_model", "unsample train-embedded --family flow"),
}
"""Name -> (package folder, the command that trains it)."""


def embedded_model_path(name: str = "embedded") -> Path:
    """The package folder that holds embedded model ``name`` (it may not exist before training)."""
    if name not in EMBEDDED_MODELS:
        raise InputError(f"unknown embedded model {name!r}; expected one of {', '.join(EMBEDDED_MODELS)}")
    return Path(__file__).resolve().parent / EMBEDDED_MODELS[name][0]


def model_folder(model: str | Path) -> Path:
    """The folder behind a model name: an embedded model's package folder, or ``model`` as a path."""
    return embedded_model_path(str(model)) if str(model) in EMBEDDED_MODELS else Path(model)
