"""The CLI end to end on a tiny pipeline folder: files, sidecars, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from unsample.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_invert_reconstruct_edit(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    inv = tmp_path / "inv.safetensors"
    common = ["--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"]
    r = _run("invert", str(src), "--prompt", "a red cat", "--steps", "4", "--guidance", "2", "-o", str(inv), *common)
    assert r.exit_code == 0, r.output
    assert inv.is_file()
    out = tmp_path / "rec.png"
    r = _run("reconstruct", str(inv), "-o", str(out), *common)
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["nfe"] == 8 and side["guidance"] == 2.0 and side["inversion"]["steps"] == 4
    edited = tmp_path / "edit.png"
    r = _run("edit", str(inv), "--prompt", "a green dog", "--start-step", "1", "-o", str(edited), *common)
    assert r.exit_code == 0, r.output
    side = json.loads(edited.with_suffix(".json").read_text())
    assert side["prompt"] == "a green dog" and side["start_step"] == 1 and side["nfe"] == 6


def test_errors_are_one_line_with_exit_2_and_write_nothing(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "inv.safetensors"
    r = _run("invert", str(tmp_path / "missing.png"), "-o", str(out), "--model", str(tiny_pipeline_dir))
    assert r.exit_code == 2 and "does not exist" in r.output and not out.exists()
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(img)
    r = _run("invert", str(img), "-o", str(out), "--method", "nope", "--model", str(tiny_pipeline_dir))
    assert r.exit_code == 2 and "unknown method" in r.output and not out.exists()
    r = _run("invert", str(img), "-o", str(tmp_path / "inv.pt"), "--model", str(tiny_pipeline_dir))
    assert r.exit_code == 2 and "must end in .safetensors" in r.output
    r = _run("reconstruct", str(img), "-o", str(tmp_path / "r.png"))
    assert r.exit_code == 2 and "not a readable safetensors" in r.output
    assert not (tmp_path / "r.png").exists()


def test_methods_lists_every_registered_method() -> None:
    from unsample.methods.registry import available_methods

    r = _run("methods")
    assert r.exit_code == 0
    for name in available_methods():
        assert name in r.output


def test_train_embedded_refuses_a_folder_without_a_trained_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = runner.invoke(app, ["train-embedded", "--out", str(out), "--tiny", "--autoencoder-from", str(tmp_path)])
    assert r.exit_code == 2
    assert "no training.json in" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()  # nothing written for a refused start


def test_output_and_report_paths_are_checked_before_any_work(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    folder = tmp_path / "out.png"
    folder.mkdir()
    r = CliRunner().invoke(app, ["invert", str(src), "-o", str(tmp_path / "x.safetensors"), "--model", str(tiny_pipeline_dir),
                                 "--steps", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["reconstruct", str(tmp_path / "x.safetensors"), "-o", str(folder), "--model", str(tiny_pipeline_dir)])
    assert r.exit_code == 2 and "is a folder" in r.output and len(r.output.strip().splitlines()) == 1
    a_file = tmp_path / "report"
    a_file.write_text("keep me")
    r = CliRunner().invoke(app, ["bench", "edit", "--out", str(a_file), "--pairs", "1", "--steps", "1", "--model", str(tiny_pipeline_dir)])
    assert r.exit_code == 2 and "is a file" in r.output and a_file.read_text() == "keep me"
    r = CliRunner().invoke(app, ["bench", "edit", "--out", str(tmp_path / "rep"), "--edit-guidance", "nan", "--pairs", "1",
                                 "--model", str(tiny_pipeline_dir)])
    assert r.exit_code == 2 and "guidance" in r.output and not (tmp_path / "rep").exists()
    r = CliRunner().invoke(app, ["invert", str(tmp_path), "-o", str(tmp_path / "y.safetensors"), "--model", str(tiny_pipeline_dir)])
    assert r.exit_code == 2 and "is a folder, not an image" in r.output


def test_os_errors_on_writing_are_one_line(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    """/sys refuses new files even to root: the write fails with PermissionError after the inversion."""
    import tempfile

    import pytest

    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        pass
    else:  # pragma: no cover - a machine where /sys is writable
        import os

        os.close(fd)
        os.unlink(probe)
        pytest.skip("/sys is writable here")
    src = tmp_path / "in.png"
    tiny_image.save(src)
    r = CliRunner().invoke(app, ["invert", str(src), "-o", "/sys/x.safetensors", "--model", str(tiny_pipeline_dir),
                                 "--steps", "1", "--quiet"])
    assert r.exit_code == 2 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
    assert "Permission denied" in r.output


def test_bad_flags_and_values_are_one_line_on_stderr_from_the_entry_point(monkeypatch, capsys, tmp_path: Path) -> None:
    """The console script (not CliRunner, which bypasses it): typer would draw a box under the usage."""
    import pytest

    from unsample.cli import main

    cases = [
        (["invert", "x.png", "--steps", "0", "-o", str(tmp_path / "y.safetensors")],
         "error: Invalid value for '--steps': Input should be greater than or equal to 1 (see 'unsample invert --help')"),
        (["invert", "--bogus"], "error: No such option: --bogus (see 'unsample invert --help')"),
        (["edit"], "error: Missing argument 'source'. (see 'unsample edit --help')"),
    ]
    for argv, line in cases:
        monkeypatch.setattr("sys.argv", ["unsample", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2 and err.strip() == line and out == "", (argv, out, err)
    assert not (tmp_path / "y.safetensors").exists()
    monkeypatch.setattr("sys.argv", ["unsample", "methods"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0 and "ddim" in capsys.readouterr().out
