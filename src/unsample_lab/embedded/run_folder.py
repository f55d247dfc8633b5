"""The files of a training run's folder, shared by every embedded-model trainer (no torch here).

A run folder ``out/`` holds ``run.json`` (the config), ``train.log`` (`RunLog`), ``latest.json`` +
``checkpoints/`` (`unsample_lab.embedded.checkpoint`) and, once finished, ``model/`` (the exported
pipeline, with ``training.json`` beside its weights). Everything here is written whole or not at
all: JSON through a temporary file and ``os.replace``, a folder by swapping names.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
"""The run's config: ``{"config": ...}``."""
LOG_NAME = "train.log"
MODEL_DIR = "model"
"""The exported pipeline's folder inside the run folder."""
TRAINING_JSON = "training.json"
"""Beside the exported weights: the steps and wall time of each stage, and the config."""


class RunLog:
    """Appends timestamped lines to ``train.log`` (and echoes them when asked)."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if self.echo:
            print(line, file=sys.stderr, flush=True)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entry list to disk (a rename inside it survives a power cut); a no-op where
    folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def portable_model_index(model_dir: Path) -> None:
    """Name the tokenizer class ``PreTrainedTokenizerFast`` in ``model_index.json``.

    transformers 5 saves its fast tokenizers as ``TokenizersBackend``, a name transformers 4
    lacks; ``PreTrainedTokenizerFast`` is the same class in 5 and exists in 4, so both load it.
    """
    path = Path(model_dir) / "model_index.json"
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("tokenizer", [None, None])[1] == "TokenizersBackend":
        index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
        write_json_atomic(path, index)


def replace_dir(new: Path, target: Path) -> None:
    """Swap folder ``new`` into ``target``: renames only, so ``target`` is never half-written."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


def folder_megabytes(path: Path, pattern: str = "*.safetensors") -> float:
    """The size of the files under ``path`` that match ``pattern``, in MB."""
    return sum(p.stat().st_size for p in path.rglob(pattern)) / 1e6
