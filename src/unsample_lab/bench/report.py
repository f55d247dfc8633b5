"""What every benchmark report shares: run metadata, strict JSON, the per-item CSV, and a report
folder written in full or not at all."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from unsample.errors import InputError


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def run_metadata(command: str, bench: Any, model: Any) -> dict[str, Any]:
    """The full configuration of a run: command, bench settings, model, device and versions."""
    return {
        "command": command,
        "bench": asdict(bench),
        "model": model.name,
        "model_fingerprint": model.fingerprint,
        "device": str(model.device),
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "versions": {"python": platform.python_version()}
        | {p: _version(p) for p in ("unsample", "torch", "diffusers", "transformers", "scikit-image")},
    }


def _strict(value: Any) -> Any:
    """NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(_strict(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


@contextmanager
def report_folder(out: Path) -> Iterator[Path]:
    """A temp folder beside ``out`` to write a report into; on success it becomes ``out`` (replacing
    an earlier report there), on any error or interruption it is removed, so ``out`` holds a
    complete report or the one it held before."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{str(out)!r} is a file; give a folder for the report")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
