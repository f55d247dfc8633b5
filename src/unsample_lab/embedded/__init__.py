"""Training, evaluation and installation of the embedded models (the lab; the library loads the
installed weights by name through `unsample.embedded`).

`install_trained_model` is the explicit step that copies a finished run's ``model/`` folder into
the installed package; training itself only writes to the run folder the user names.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from unsample.embedded import embedded_model_path, model_folder
from unsample.errors import InputError
from unsample_lab.embedded.configs import TrainConfig
from unsample_lab.embedded.run_folder import portable_model_index, replace_dir

__all__ = ["model_classifier_file", "install_trained_model", "train_embedded", "TrainConfig"]


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
