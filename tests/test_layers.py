"""The library's layers and its boundary with the lab, as checks that fail instead of reviews.

The import-linter contracts in pyproject.toml (``[tool.importlinter]``) say which way imports may
point: the library (`unsample`) never imports the lab (`unsample_lab`), and inside the library the
edges (cli, ui, batch) sit above the api, the api above editing, editing above the methods and
backends, and those above core and errors. These tests run the contracts, and check in a fresh
interpreter that ``import unsample`` and an ``unsample edit`` on the embedded model load none of
the lab's training, evaluation, bench or shapes-world code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # lint-imports and a fresh interpreter run in processes of their own

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CONFIG = ROOT / "pyproject.toml"

LAB_HEAVY = ("unsample_lab.embedded", "unsample_lab.bench", "unsample_lab.shapes")
"""The lab's training and evaluation, benches and shapes world: an edit must load none of them."""

_LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"


def _env() -> dict[str, str]:
    """This checkout's src/ first on the path, so the sources checked are these, whatever is installed."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": "1"}


def test_import_linter_contracts_are_kept() -> None:
    """``lint-imports`` (import-linter's own entry point, in a subprocess) keeps every contract."""
    proc = subprocess.run([sys.executable, "-c", _LINT, str(CONFIG)], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=300, check=False)
    report = proc.stdout + proc.stderr
    assert "Contracts:" in report, "lint-imports could not run:\n" + report[-3000:]
    assert proc.returncode == 0, "broken import contracts:\n" + report[-6000:]


def test_the_contracts_name_every_library_module_and_the_lab_boundary() -> None:
    """The layers contract is exhaustive (a new module of `unsample` must be placed in a layer),
    and the boundary contract covers the whole library, not a part of it."""
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    boundary = contracts["library-never-imports-lab"]
    assert boundary["type"] == "forbidden"
    assert boundary["source_modules"] == ["unsample"] and boundary["forbidden_modules"] == ["unsample_lab"]
    layers = contracts["library-layers"]
    assert layers["type"] == "layers" and layers["containers"] == ["unsample"] and layers["exhaustive"] is True
    assert layers["layers"][-1] == "errors"


_FRESH_INTERPRETER = r"""
import json, sys
from pathlib import Path

import unsample

after_import = sorted(sys.modules)

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from unsample.cli import app

folder = Path(sys.argv[1])
image = np.zeros((64, 64, 3), dtype=np.uint8)
image[16:48, 16:48] = (220, 30, 30)
Image.fromarray(image).save(folder / "in.png")
result = CliRunner().invoke(app, [
    "edit", str(folder / "in.png"), "-o", str(folder / "out.png"), "--model", "embedded", "--steps", "2",
    "--source-prompt", "a large red square on a plain black background",
    "--prompt", "a large blue square on a plain black background",
])
print(json.dumps({"after_import": after_import, "after_edit": sorted(sys.modules), "exit_code": result.exit_code,
                  "output": result.output, "exception": repr(result.exception)}))
"""


@pytest.fixture(scope="module")
def fresh_interpreter(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``import unsample``, then ``unsample edit`` on the embedded model (2 steps) in-process, in a
    new interpreter; what it had loaded after each."""
    folder = tmp_path_factory.mktemp("fresh")
    proc = subprocess.run([sys.executable, "-c", _FRESH_INTERPRETER, str(folder)], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["exit_code"] == 0, (found["output"], found["exception"])
    assert (folder / "out.png").is_file() and (folder / "out.json").is_file()
    return found


def _under(modules: object, roots: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]  # type: ignore[attr-defined]


def test_import_unsample_loads_no_lab_and_no_heavy_library(fresh_interpreter: dict[str, object]) -> None:
    loaded = fresh_interpreter["after_import"]
    assert "unsample" in loaded  # type: ignore[operator]
    assert _under(loaded, ("unsample_lab",)) == []
    assert _under(loaded, ("torch", "diffusers", "transformers", "accelerate", "gradio")) == []


def test_an_edit_from_the_command_line_loads_no_lab_training_bench_or_shapes(fresh_interpreter: dict[str, object]) -> None:
    loaded = fresh_interpreter["after_edit"]
    assert "unsample.cli" in loaded and "torch" in loaded  # type: ignore[operator]
    assert _under(loaded, LAB_HEAVY) == []
