"""Quiet by default: a normal ``unsample edit`` with stderr in a file, and ``unsample.load()`` of each
embedded model, write to stderr only the project's own lines (no other package's warnings, no loading
bars, no bar redraws); the pieces (`unsample.api.quiet`) behave as they say."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unsample.api import quiet
from unsample.embedded import EMBEDDED_MODELS, embedded_model_path
from unsample_lab.shapes import parse_caption, render, scene_from_spec

ROOT = Path(__file__).resolve().parents[1]
SOURCE_CAPTION = "a large red circle on a striped blue background"


def scene_image(path: Path, caption: str = SOURCE_CAPTION) -> Path:
    """The demo's scene (a caption of the shapes world, drawn by the lab) as a 64 x 64 PNG."""
    scene = scene_from_spec(parse_caption(caption), np.random.default_rng(0))
    Image.fromarray(render(scene, size=64).image).save(path)
    return path

OWN_PREFIXES = ("warning: ", "note: ", "check: ")
"""What the CLI itself writes on stderr besides phase lines: the input-fidelity and unknown-word
warnings, the paste-back note, and the edit check's verdict (on stderr when the edit did not take)."""


def own_line(line: str) -> bool:
    """A line of the project's own: a phase's line (`quiet.PHASE_LINE`) or one the CLI echoes (`OWN_PREFIXES`)."""
    return bool(quiet.PHASE_LINE.match(line)) or line.startswith(OWN_PREFIXES)


def _env() -> dict[str, str]:
    """This checkout's src/ first on the path; no terminal anywhere."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": "1"}


needs_embedded = pytest.mark.skipif(not all((embedded_model_path(n) / "model_index.json").is_file() for n in EMBEDDED_MODELS),
                                    reason="the embedded models are not installed")


@pytest.mark.subprocess
@pytest.mark.model
@needs_embedded
def test_edit_with_stderr_in_a_file_writes_only_the_projects_lines(tmp_path: Path) -> None:
    source = tmp_path / "circle.png"
    scene_image(source)
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        r = subprocess.run([sys.executable, "-m", "unsample.cli", "edit", str(source),
                            "--source-prompt", SOURCE_CAPTION,
                            "--target-prompt", "a large green circle on a striped blue background",
                            "--steps", "8", "-o", str(tmp_path / "green.png")],
                           stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), cwd=tmp_path, timeout=600, check=False)
    text = err_path.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text, "a progress bar was drawn into a file"
    lines = text.splitlines()
    assert [line for line in lines if not own_line(line)] == []
    assert any(line.startswith("invert (edict): 8 steps, ") for line in lines), lines
    assert any(line.startswith("edit (edict): ") for line in lines), lines


@pytest.mark.subprocess
@pytest.mark.model
@needs_embedded
def test_loading_each_embedded_model_writes_nothing_on_stderr() -> None:
    script = f"import unsample\nfor name in {sorted(EMBEDDED_MODELS)!r}: unsample.load(name)\n"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_a_phase_off_a_terminal_is_one_line_at_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    bar = quiet.PhaseProgress(5, "invert (edict)")
    for _ in range(5):
        bar.update(1)
    assert stream.getvalue() == ""
    bar.close()
    bar.close()  # once only
    line = stream.getvalue()
    assert line.startswith("invert (edict): 5 steps, ") and line.count("\n") == 1 and quiet.PHASE_LINE.match(line.strip())
    stream.truncate(0)
    stream.seek(0)
    interrupted = quiet.PhaseProgress(3, "batch", unit="job")
    interrupted.update(1)
    interrupted.close(finished=False)
    assert stream.getvalue() == ""


def test_a_phase_on_a_terminal_is_a_bar_and_no_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(quiet, "stderr_is_terminal", lambda: True)
    bar = quiet.PhaseProgress(2, "edit (ddim)")
    bar.update(2)
    bar.close()
    drawn = stream.getvalue()
    assert "edit (ddim)" in drawn and "\r" in drawn and not quiet.PHASE_LINE.match(drawn.strip())


def test_the_known_noise_is_dropped_and_other_warnings_kept(caplog: pytest.LogCaptureFixture) -> None:
    quiet.filter_known_warnings()
    quiet.filter_known_warnings()
    name, fragment = quiet.KNOWN_NOISE[0]
    logger = logging.getLogger(name)
    assert sum(isinstance(f, quiet._DropKnown) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=name):
        logger.warning(f"`CLIPImageProcessor` {fragment} `CLIPImageProcessorPil` for backward compatibility.")
        logger.warning("something else entirely")
    assert [r.getMessage() for r in caplog.records] == ["something else entirely"]


def test_library_bars_are_put_back_as_they_were() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    before = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    with quiet.library_bars(False):
        assert not diffusers_logging.is_progress_bar_enabled() and not transformers_logging.is_progress_bar_enabled()
    assert (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()) == before
    with quiet.library_bars(True):
        assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()
    assert (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()) == before


@pytest.mark.subprocess
@pytest.mark.model
@needs_embedded
def test_verbose_shows_the_loading_bars() -> None:
    r = subprocess.run([sys.executable, "-m", "unsample.cli", "--verbose", "vocabulary"], capture_output=True, text=True,
                       env=_env(), timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert "Loading pipeline components" in r.stderr


def test_the_root_flags_reach_the_commands(tmp_path: Path) -> None:
    """``unsample --debug`` (and so ``--verbose``, read the same way) is seen inside a command: typer runs
    commands in its own copy of click, so the flags are read from that context."""
    from typer.testing import CliRunner

    from unsample.cli import build_app
    from unsample.errors import InputError

    args = ["invert", str(tmp_path / "missing.png"), "--prompt", "a circle", "-o", str(tmp_path / "x.safetensors")]
    plain = CliRunner().invoke(build_app(), args)
    assert plain.exit_code == 2 and "does not exist" in plain.output
    debug = CliRunner().invoke(build_app(), ["--debug", *args])
    assert isinstance(debug.exception, InputError)
