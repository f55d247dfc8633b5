"""What one ``unsample edit IMAGE --source-prompt A --target-prompt B`` does: the library's modules and
functions it runs, and how often it repeats the pieces of work an edit needs once.

It runs the command once to import everything, then traces a second run in process
(``sys.setprofile``) on the embedded default model, and counts:

- the library modules (files under the ``unsample`` package) any of whose code ran, and the calls
  into library functions (every Python call whose code lives there);
- the unknown-word check (``prompt_problems``) per prompt, the grid builds (``make_grid``, which
  every grid build ends in), the model checks (``check_model``).

It imports nothing but ``unsample.cli``, so the same file measures an older checkout too:
``PYTHONPATH=OLD/src python src/unsample_lab/bench/edit_path.py``. From this one: ``unsample bench
edit-path``.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from PIL import Image

SOURCE = "a large red circle on a plain gray background"
TARGET = "a large blue circle on a plain gray background"
WATCHED = ("prompt_problems", "make_grid", "check_model")


@dataclass
class EditPath:
    """What the traced edit ran."""

    modules: set[str] = field(default_factory=set)
    calls: int = 0
    work: dict[str, Counter[str]] = field(default_factory=lambda: {name: Counter() for name in WATCHED})
    exit_code: int = 0

    def lines(self) -> list[str]:
        out = [f"library modules run: {len(self.modules)}", f"calls into library functions: {self.calls}"]
        for name in WATCHED:
            counts = self.work[name]
            detail = ", ".join(f"{k!r}: {v}" for k, v in counts.items()) if name == "prompt_problems" else ""
            out.append(f"{name}: {sum(counts.values())}" + (f" ({detail})" if detail else ""))
        out += ["modules:"] + [f"  {m}" for m in sorted(self.modules)]
        return out


def _scene(path: Path) -> None:
    """A 64 px red disc on gray: a scene the embedded model's vocabulary describes."""
    yy, xx = np.mgrid[:64, :64]
    pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
    pixels[(yy - 32) ** 2 + (xx - 32) ** 2 < 18 ** 2] = (220, 30, 30)
    Image.fromarray(pixels).save(path)


def trace_edit(steps: int = 4) -> EditPath:
    """Run ``unsample edit`` with its defaults (but ``steps``) under the profiler."""
    from typer.testing import CliRunner

    import unsample
    from unsample.cli import app

    root = str(Path(unsample.__file__).resolve().parent)
    path = EditPath()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or frame.f_code.co_name == "<module>":
            return
        filename = frame.f_code.co_filename
        if not filename.startswith(root):
            return
        path.modules.add(str(Path(filename).resolve().relative_to(Path(root).parent)))
        path.calls += 1
        name = frame.f_code.co_name
        if name in path.work:
            key = frame.f_locals.get("prompt", "") if name == "prompt_problems" else name
            path.work[name][str(key)] += 1

    with tempfile.TemporaryDirectory() as folder:
        image, out = Path(folder) / "scene.png", Path(folder) / "edit.png"
        _scene(image)
        runner = CliRunner()
        args = ["edit", str(image), "--source-prompt", SOURCE, "--target-prompt", TARGET, "--steps", str(steps),
                "-o", str(out), "--device", "cpu", "--quiet"]
        runner.invoke(app, args)  # once untraced: imports and the method registry's discovery are done by then
        out.unlink(missing_ok=True)
        sys.setprofile(profile)
        try:
            result = runner.invoke(app, args)
        finally:
            sys.setprofile(None)
        path.exit_code = result.exit_code
        if result.exit_code != 0 or not out.is_file():
            raise RuntimeError(f"the traced edit failed (exit {result.exit_code}): {result.output}")
    return path


if __name__ == "__main__":  # an older checkout has no lab command: run this file with its src on PYTHONPATH
    for line in trace_edit().lines():
        print(line)
