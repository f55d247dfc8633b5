"""The same command and seed give byte-identical tensors and PNGs, run after run, in fresh
processes (another hash seed each time); only the metadata's timings differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_batch import _contents

pytestmark = pytest.mark.subprocess  # fresh interpreters are the point: another hash seed each time


def _twice(cmd: list[str], tmp_path: Path, name: str) -> tuple[dict, dict]:
    runs = []
    for k, hash_seed in enumerate(("1", "2")):
        out = tmp_path / f"{name}{k}"
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        r = subprocess.run([sys.executable, "-m", "unsample.cli", *cmd, "-o", str(out / "result.png")]
                           if cmd[0] == "edit" else [sys.executable, "-m", "unsample.cli", *cmd, "-o", str(out / "inv.safetensors")],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        runs.append(_contents(out))
    return runs[0], runs[1]


def test_invert_and_edit_are_byte_identical_across_runs(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    tiny_image.save(image)
    common = ["--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet", "--seed", "3"]
    first, second = _twice(["invert", str(image), "--prompt", "a red cat", "--method", "edict", "--steps", "6",
                            "--guidance", "3", *common], tmp_path, "inv")
    assert list(first) == ["inv.safetensors"] and first == second
    first, second = _twice(["edit", str(image), "--prompt", "a green cat", "--source-prompt", "a red cat",
                            "--steps", "6", "--no-escalate", *common], tmp_path, "edit")
    assert sorted(first) == ["result.json", "result.mask.png", "result.png"] and first == second
    sidecar = json.loads((tmp_path / "edit0" / "result.json").read_text())
    assert sidecar["mask"] == "noise"  # the default mask, whose K noise draws come from the seed
