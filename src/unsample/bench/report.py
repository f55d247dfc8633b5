"""What every benchmark report shares: run metadata, strict JSON and the per-item CSV."""

from __future__ import annotations

import csv
import json
import math
import platform
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


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
