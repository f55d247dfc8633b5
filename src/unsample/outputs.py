"""Output files written whole or not at all: a temp file in the same folder, then a rename.

Every command, the batch runner and the benchmarks write through here, so a kill at any moment
leaves either the old file, the new one, or (after SIGKILL) a hidden ``.NAME.*`` temp file that
the next run removes, never a half-written output.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unsample import __version__


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a hidden temp file beside ``path``, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent.resolve())
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_png_with_sidecar(image: Any, path: Path, record: dict[str, Any]) -> Path:
    """Save a PNG and ``<name>.json`` beside it, both atomically; returns the sidecar's path."""

    sidecar = path.with_suffix(".json")
    record = {"unsample_version": __version__, "image": path.name, **record}
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    atomic_write(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2, default=str) + "\n"))
    return sidecar


def write_png(image: Any, path: Path, record: dict[str, Any], sidecar: bool = True) -> None:
    """A PNG with its JSON sidecar, or (``sidecar=False``: a mask overlay) the PNG alone; atomically."""
    if sidecar:
        write_png_with_sidecar(image, path, record)
    else:
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
