"""Crash-safe checkpoints of a training run: safetensors + JSON, no pickle anywhere.

Layout inside the run folder::

    checkpoints/<stage>-<step>/   weights.safetensors, optim.safetensors, state.json
    latest.json                   {"dir": "<stage>-<step>"}  (the only pointer that counts)

A checkpoint is written into a temporary folder, renamed into place, and only then does
``latest.json`` (itself written to a temporary name and ``os.replace``d) point at it. An
interruption at any moment leaves ``latest.json`` naming a complete checkpoint. Optimizer state
is flattened into safetensors (``<param index>.<name>``); the optimizer's hyperparameters come
from the config on resume, so nothing but tensors and JSON is ever read back.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unsample.errors import InputError
from unsample_lab.embedded.run_folder import fsync_dir, write_json_atomic

LATEST = "latest.json"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: named weight groups, flat optimizer tensors, and JSON state."""

    path: Path
    weights: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor]
    state: dict[str, Any]


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as a flat dict of tensors."""
    flat: dict[str, torch.Tensor] = {}
    for index, entries in opt.state_dict()["state"].items():
        for name, value in entries.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            flat[f"{index}.{name}"] = value.detach().clone().contiguous()
    return flat


def load_optimizer_tensors(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    """Put flattened per-parameter state back; hyperparameters stay as constructed."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    full = opt.state_dict()
    if state and max(state) >= sum(len(g["params"]) for g in full["param_groups"]):
        raise InputError("checkpoint optimizer state has more parameters than the model; the run's config changed")
    full["state"] = state
    opt.load_state_dict(full)


def write_checkpoint(
    run_dir: Path,
    stage: str,
    step: int,
    weights: dict[str, torch.Tensor],
    optim: dict[str, torch.Tensor],
    state: dict[str, Any],
    *,
    keep: int = 1,
) -> Path:
    """Write a checkpoint atomically, point ``latest.json`` at it, prune older ones."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"{stage}-{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
    save_file(optim, str(tmp / "optim.safetensors"))
    with open(tmp / "state.json", "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    for file in ("weights.safetensors", "optim.safetensors"):
        with open(tmp / file, "rb") as f:
            os.fsync(f.fileno())
    old = root / f".{name}.old-{os.getpid()}"
    if final.exists():  # a rewrite of the same step: move the old one aside, never delete first
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    fsync_dir(root)
    write_json_atomic(run_dir / LATEST, {"dir": name})
    _prune(root, keep=keep, current=name)
    return final


def _prune(root: Path, *, keep: int, current: str) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    old = [p for p in done if p.name != current][: max(0, len(done) - keep)]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():  # leftovers of interrupted writes
        if p.name.startswith(".") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def read_latest(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``latest.json`` points at, or None for a fresh run folder."""
    pointer = run_dir / LATEST
    if not pointer.exists():
        return None
    name = json.loads(pointer.read_text(encoding="utf-8"))["dir"]
    path = run_dir / CHECKPOINTS / name
    if not path.is_dir():
        raise FileNotFoundError(f"{pointer} names checkpoint {name!r}, which is missing; delete {pointer} to restart")
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return Checkpoint(
        path=path,
        weights=load_file(str(path / "weights.safetensors")),
        optim=load_file(str(path / "optim.safetensors")),
        state=state,
    )
