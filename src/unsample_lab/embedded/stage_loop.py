"""What every embedded-model training stage shares: named weight groups, the learning rate, the
EMA update, `StageClock` (a stage's wall clock across resumes), `StageLoop` (that clock, thread
tuning, logging and periodic checkpoints), the progress bar, and a run's config in its run.json
(`JsonConfig`, `resolve_run_config`)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from unsample.errors import InputError
from unsample_lab.embedded.run_folder import RUN_JSON, write_json_atomic
from unsample_lab.embedded.threads import ThreadTuner


class LoopConfig(Protocol):
    log_every: int
    checkpoint_minutes: float
    threads: int


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every key under ``prefix.`` (one checkpoint holds several modules)."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def group(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The weights saved under ``prefix.``, with the prefix taken off."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in weights.items() if k.startswith(start)}


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for param_group in opt.param_groups:
        param_group["lr"] = lr


def update_ema(ema: dict[str, torch.Tensor], module: torch.nn.Module, step: int, decay: float) -> None:
    """ema <- d ema + (1 - d) weights, d = min(decay, (1 + step) / (10 + step)); buffers copied."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].mul_(d).add_(v, alpha=1 - d)
            else:
                ema[k].copy_(v)


class StageClock:
    """Wall time spent in a stage, accumulated across resumes (``already``: the seconds before this one)."""

    def __init__(self, already: float) -> None:
        self.already = already
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.already + time.monotonic() - self.start


def progress_bar(enabled: bool, total: int, initial: int, desc: str) -> Any:
    """A tqdm bar over a stage's steps (``initial`` done before a resume); silent when not ``enabled``."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


class StageLoop:
    """One stage's clock (accumulated across resumes), thread tuner, log lines and saves."""

    def __init__(self, stage: str, cap_minutes: float, state: dict[str, Any], cfg: LoopConfig,
                 log: Callable[[str], None]) -> None:
        self.stage, self.log, self.cfg = stage, log, cfg
        self.cap = cap_minutes * 60.0
        self.already = float(state.get("stage_seconds", 0.0)) if state.get("stage") == stage else 0.0
        self.begin = time.monotonic()
        self.last_save = self.begin
        self.tuner = ThreadTuner(cfg.threads)
        self.recent: list[float] = []

    @property
    def elapsed(self) -> float:
        return self.already + time.monotonic() - self.begin

    @property
    def time_fraction(self) -> float:
        return self.elapsed / self.cap if self.cap > 0 else 1.0

    def running(self, step: int, total: int) -> bool:
        return step < total and self.elapsed < self.cap

    def after_step(self, step: int, total: int, loss: float, lr: float, save: Callable[[int], None]) -> None:
        self.recent.append(loss)
        if step % self.cfg.log_every == 0 or step == total:
            self.log(f"stage={self.stage} step={step}/{total} loss={np.mean(self.recent):.5f} lr={lr:.2e} "
                     f"elapsed={self.elapsed:.1f}s {self.tuner.describe()}")
            self.recent.clear()
        if time.monotonic() - self.last_save >= self.cfg.checkpoint_minutes * 60.0:
            save(step)
            self.last_save = time.monotonic()


class JsonConfig:
    """``to_json`` / ``from_json`` for a frozen training-config dataclass (lists back to tuples;
    a field the class does not know means another version made the run)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown {cls.__name__} fields {sorted(unknown)}; the run was made by another version")
        data = {**getattr(cls, "LEGACY", {}), **data}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def resolve_run_config(out: Path, config: Any, cls: type, allowed: frozenset[str]) -> Any:
    """The config of run folder ``out``: the one in its run.json (``config`` None), or ``config``,
    which may differ from the saved one only in ``allowed`` fields (then it is saved); a new run
    saves ``config`` or ``cls()``."""
    path = out / RUN_JSON
    if path.exists():
        saved = cls.from_json(json.loads(path.read_text(encoding="utf-8"))["config"])
        if config is None:
            return saved
        changed = {f.name for f in dataclasses.fields(cls) if getattr(saved, f.name) != getattr(config, f.name)}
        if changed - allowed:
            raise InputError(f"{out} holds a run with a different config ({', '.join(sorted(changed - allowed))}); "
                             "use a new --out folder or the same config")
        if changed:
            write_json_atomic(path, {"config": config.to_json()})
        return config
    cfg = config if config is not None else cls()
    write_json_atomic(path, {"config": cfg.to_json()})
    return cfg
