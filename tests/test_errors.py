"""The error boundary: what the user can fix is one line and exit 2; a bug keeps its traceback."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from unsample import errors
from unsample.cli import app, main
from unsample.methods import ddim, registry


def _invert_args(tiny_pipeline_dir: Path, tiny_image: Any, tmp_path: Path) -> list[str]:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    return ["invert", str(src), "--prompt", "a red cat", "--steps", "2", "-o", str(tmp_path / "inv.safetensors"),
            "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"]


def test_a_value_error_inside_a_method_is_a_bug_with_its_traceback(
    tiny_pipeline_dir: Path, tiny_image: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("an internal shape mismatch")

    _replace_ddim_invert(monkeypatch, broken)
    args = _invert_args(tiny_pipeline_dir, tiny_image, tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and isinstance(r.exception, ValueError) and "error:" not in r.output
    monkeypatch.setattr(sys, "argv", ["unsample", *args])
    with pytest.raises(ValueError, match="internal shape mismatch"):  # the interpreter prints it, exit code 1
        main()
    assert not (tmp_path / "inv.safetensors").exists()


def _replace_ddim_invert(monkeypatch: pytest.MonkeyPatch, invert: Any) -> None:
    """The registry's ddim entry with another invert function (for this test only)."""
    monkeypatch.setitem(registry._registry(), "ddim", dataclasses.replace(ddim.METHOD, invert=invert))


@pytest.mark.parametrize("kind", [errors.InputError, errors.ModelLoadError, errors.InversionFileError, errors.NonFiniteError])
def test_every_error_of_the_hierarchy_is_one_line_and_exit_2(
    kind: type[errors.UnsampleError], tiny_pipeline_dir: Path, tiny_image: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise kind("what was wrong; what to do")

    _replace_ddim_invert(monkeypatch, refused)
    r = CliRunner().invoke(app, _invert_args(tiny_pipeline_dir, tiny_image, tmp_path))
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and lines == ["error: what was wrong; what to do"], r.output


def test_the_hierarchy_is_one_tree_of_value_errors() -> None:
    for kind in (errors.InputError, errors.ModelLoadError, errors.InversionFileError, errors.NonFiniteError):
        assert issubclass(kind, errors.UnsampleError) and issubclass(kind, ValueError)
    assert errors.NonFiniteError("x", time_label=3.0).time_label == 3.0
