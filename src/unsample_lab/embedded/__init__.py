"""Training, evaluation and installation of the embedded models (the lab; the library loads the
installed weights by name through `unsample.embedded`).

`install_trained_model` is the explicit step that copies a finished run's ``model/`` folder into
the installed package; training itself only writes to the run folder the user names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from unsample.embedded import embedded_model_path, model_folder
from unsample.errors import InputError
from unsample_lab.embedded.configs import TrainConfig
from unsample_lab.embedded.run_folder import portable_model_index, replace_dir

__all__ = ["PIPELINE_CLASSES", "TrainConfig", "install_trained_model", "model_classifier_file", "train_embedded"]

PIPELINE_CLASSES: dict[str, str] = {
    "embedded": "StableDiffusionPipeline",
    "embedded-pixel": "DDIMPipeline",
    "embedded-flow": "StableDiffusion3Pipeline",
}
"""The pipeline class (``model_index.json``'s ``_class_name``) each embedded model is."""


def model_classifier_file(model: str | Path) -> Path:
    """The noisy classifier shipped beside a pixel pipeline (``classifier.safetensors``); a
    one-line ValueError when the folder has none."""
    from unsample_lab.embedded.pixel_configs import CLASSIFIER_FILE  # it loads torch; this package's import stays free of it

    path = model_folder(model) / CLASSIFIER_FILE
    if not path.is_file():
        raise InputError(f"{model_folder(model)} has no {CLASSIFIER_FILE}: classifier guidance needs the model's "
                         "noisy classifier beside its model_index.json (unsample train-embedded-pixel writes one)")
    return path


def install_trained_model(out_dir: Path, name: str = "embedded") -> Path:
    """Copy ``out_dir/model`` (a finished training run) into the package as embedded model ``name``,
    atomically (``unsample install-embedded``, and the train commands' ``--install``).

    ``out_dir`` may also be the ``model`` folder itself. A pipeline of another class than ``name``'s
    (`PIPELINE_CLASSES`) is refused before anything is written. Returns `embedded_model_path(name)`.
    """
    if name not in PIPELINE_CLASSES:
        raise InputError(f"unknown embedded model {name!r}; expected one of {', '.join(PIPELINE_CLASSES)}")
    source = Path(out_dir)
    if not (source / "model_index.json").exists():
        source = source / "model"
    if not (source / "model_index.json").exists():
        raise FileNotFoundError(
            f"no pipeline at {Path(out_dir)} (no model_index.json there or in model/); "
            "finish a run with `unsample train-embedded --out DIR` first"
        )
    found = json.loads((source / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    if found != PIPELINE_CLASSES[name]:
        fits = [n for n, cls in PIPELINE_CLASSES.items() if cls == found]
        hint = f"; it is a model for --model {fits[0]}" if fits else ""
        raise InputError(f"{source} holds a {found}, not the {PIPELINE_CLASSES[name]} that {name} is{hint}")
    target = embedded_model_path(name)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    portable_model_index(tmp)
    replace_dir(tmp, target)
    return target


def __getattr__(name: str) -> Any:
    # A lazy re-export: importing the package stays free of torch and diffusers.
    if name == "train_embedded":
        from unsample_lab.embedded.train import train_embedded  # the trainer loads torch: only when asked for

        return train_embedded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
