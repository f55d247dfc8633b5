"""A table of bad inputs across the CLI and the API: each is a one-line error (exit code 2 in the
CLI), no traceback, nothing written, and no existing output clobbered."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unsample
from unsample.cli import app


@pytest.fixture(scope="module")
def files(tiny_pipeline_dir: Path, tiny_image, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    f = {"dir": d, "src": d / "src.png", "inv": d / "inv.safetensors", "model": tiny_pipeline_dir}
    tiny_image.save(f["src"])
    unsample.invert(unsample.load(str(tiny_pipeline_dir), device="cpu"), tiny_image, "a red cat", steps=2).save(f["inv"])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (d / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                                 + chunk(b"IEND", b""))
    (d / "text.png").write_text("not a picture")
    (d / "pickle.safetensors").write_bytes(pickle.dumps({"trajectory": [1, 2, 3]}))
    (d / "junk.safetensors").write_bytes(b"\x00\x01junk")
    (d / "folder.png").mkdir()
    (d / "folder.safetensors").mkdir()
    (d / "report").write_text("an existing file")
    (d / "keep.safetensors").write_text("an existing output")
    (d / "bad.jsonl").write_text('{"id": "a", "job": "paint", "image": "src.png"}\n')
    (d / "ok.jsonl").write_text('{"id": "a", "job": "invert", "image": "src.png", "prompt": "a red cat", "steps": 1}\n')
    (d / "prompts.jsonl").write_text('["not", "an", "object"]\n')
    return f


def _cases(f: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    d, src, inv, m = str(f["dir"]), str(f["src"]), str(f["inv"]), ["--model", str(f["model"]), "--device", "cpu", "--quiet"]
    mb = m[:-1]  # the benches have no --quiet
    out = f"{d}/new.safetensors"
    png = f"{d}/new.png"
    inv_args = ["invert", src, "-o", out, "--prompt", "a red cat", "--steps", "2"] + m
    edit_args = ["edit", src, "-o", png, "--source-prompt", "a red cat", "--target-prompt", "a green cat", "--steps", "2"] + m
    return [
        ("missing image", ["invert", f"{d}/nope.png", "-o", out] + m, "does not exist"),
        ("folder as image", ["invert", f"{d}/folder.png", "-o", out] + m, "is a folder"),
        ("/dev/null as image", ["invert", "/dev/null", "-o", out] + m, "not a regular file"),
        ("decompression bomb", ["invert", f"{d}/bomb.png", "-o", out] + m, "pixels"),
        ("text file as image", ["invert", f"{d}/text.png", "-o", out] + m, "not an image"),
        ("output suffix", ["invert", src, "-o", f"{d}/x.pt"] + m, "must end in .safetensors"),
        ("output folder missing", ["invert", src, "-o", f"{d}/nope/x.safetensors"] + m, "does not exist"),
        ("output is a folder", ["invert", src, "-o", f"{d}/folder.safetensors"] + m, "is a folder"),
        ("unknown method", inv_args + ["--method", "magic"], "unknown method"),
        ("unknown option", inv_args + ["--method", "edict", "--option", "q=1"], "has no option"),
        ("option out of range", inv_args + ["--method", "edict", "--option", "p=2"], "p=2"),
        ("option NaN", inv_args + ["--method", "fixed-point", "--option", "tol=nan"], "tol=nan"),
        ("option not KEY=VALUE", inv_args + ["--option", "precision"], "precision"),
        ("guidance NaN", inv_args + ["--guidance", "nan"], "guidance="),
        ("guidance inf", inv_args + ["--guidance", "inf"], "guidance="),
        ("guidance absurd", inv_args + ["--guidance", "1e30"], "guidance="),
        ("guidance negative", inv_args + ["--guidance", "-1"], "guidance="),
        ("bad fit", inv_args + ["--fit", "stretch"], "--fit"),
        ("unknown word", ["invert", src, "-o", out, "--prompt", "a red zebra"] + m, "zebra"),
        ("prompt too long", ["invert", src, "-o", out, "--prompt", " ".join(["cat"] * 30)] + m, "tokens"),
        ("existing output kept on error", ["invert", src, "-o", f"{d}/keep.safetensors", "--guidance", "nan"] + m, "guidance="),
        ("missing inversion", ["reconstruct", f"{d}/nope.safetensors", "-o", png] + m, "does not exist"),
        ("pickle as inversion", ["reconstruct", f"{d}/pickle.safetensors", "-o", png] + m, "not a readable safetensors"),
        ("junk as inversion", ["reconstruct", f"{d}/junk.safetensors", "-o", png] + m, "not a readable safetensors"),
        ("reconstruct to .jpg", ["reconstruct", inv, "-o", f"{d}/x.jpg"] + m, "must end in .png"),
        ("reconstruct to a folder", ["reconstruct", inv, "-o", f"{d}/folder.png"] + m, "is a folder"),
        ("edit without a prompt", ["edit", inv, "-o", png] + m, "give the edit's prompt"),
        ("edit prompts disagree", ["edit", inv, "-o", png, "--prompt", "a cat", "--target-prompt", "a dog"] + m, "disagree"),
        ("edit image without source prompt", ["edit", src, "-o", png, "--prompt", "a green cat"] + m, "--source-prompt"),
        ("edit bad control", edit_args + ["--control", "swap"], "control="),
        ("edit bad reweight", edit_args + ["--reweight", "green"], "WORD=SCALE"),
        ("edit bad mask name", edit_args + ["--mask", "blob"], "--mask 'blob'"),
        ("edit missing mask file", edit_args + ["--mask", f"{d}/nope.png"], "nope.png"),
        ("edit start step past steps", edit_args + ["--start-step", "9"], "--start-step 9"),
        ("edit direct on edict", edit_args + ["--method", "edict", "--direct"], "reconstructs exactly already"),
        ("edit guidance NaN", edit_args + ["--guidance", "nan"], "guidance="),
        ("edit unknown word", ["edit", inv, "-o", png, "--prompt", "a green zebra"] + m, "zebra"),
        ("edit bad mask rule", edit_args + ["--mask-rule", "median"], "mask rule"),
        ("bench out is a file", ["bench", "edit", "--out", f"{d}/report", "--pairs", "1"] + mb, "is a file"),
        ("bench bad control", ["bench", "edit", "--out", f"{d}/r1", "--controls", "magic"] + mb, "control 'magic'"),
        ("bench bad mask", ["bench", "edit", "--out", f"{d}/r2", "--masks", "blob"] + mb, "mask 'blob'"),
        ("bench variants without robustness", ["bench", "edit", "--out", f"{d}/r3", "--variants", "jpeg"] + mb, "--robustness"),
        ("bench new background without --backgrounds", ["bench", "edit", "--out", f"{d}/r3", "--robustness", "--variants",
                                                       "photo"] + mb, "--backgrounds"),
        ("bench unknown variant", ["bench", "edit", "--out", f"{d}/r3", "--backgrounds", "--variants", "sky"] + mb, "not one of"),
        ("bench images without prompts", ["bench", "edit", "--out", f"{d}/r4", "--images", d, "--pairs", "1"] + mb, "go together"),
        ("bench prompts line of the wrong shape", ["bench", "edit", "--out", f"{d}/r5", "--images", d, "--prompts",
                                                  f"{d}/prompts.jsonl"] + mb, "prompts.jsonl:1"),
        ("bench option without method", ["bench", "reconstruction", "--out", f"{d}/r6", "--option", "p=1"] + mb, "METHOD:KEY=VALUE"),
        ("bench guidance NaN", ["bench", "edit", "--out", f"{d}/r7", "--edit-guidance", "nan"] + mb, "guidance"),
        ("batch missing manifest", ["batch", f"{d}/nope.jsonl", "--out", f"{d}/b1"] + m, "does not exist"),
        ("batch bad manifest line", ["batch", f"{d}/bad.jsonl", "--out", f"{d}/b2"] + m, "bad.jsonl:1"),
        ("batch --processes with --shard", ["batch", str(f["dir"] / "ok.jsonl"), "--out", f"{d}/b3", "--processes", "2",
                                            "--shard", "0/2"] + m, "not both"),
        ("batch bad shard", ["batch", str(f["dir"] / "ok.jsonl"), "--out", f"{d}/b4", "--shard", "3/2"] + m, "--shard '3/2'"),
    ]


def test_every_bad_cli_input_is_one_line_exit_2_and_writes_nothing(files: dict[str, Path]) -> None:
    cases = _cases(files)
    assert len(cases) >= 40
    runner = CliRunner()
    before = {p: p.stat().st_mtime_ns for p in files["dir"].rglob("*")}
    failures = []
    for name, args, expected in cases:
        r = runner.invoke(app, args)
        lines = [line for line in r.output.splitlines() if line.strip()]
        ok = (r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
              and "Traceback" not in r.output)
        if not ok:
            failures.append(f"{name}: exit {r.exit_code}, output {r.output!r}")
    after = {p: p.stat().st_mtime_ns for p in files["dir"].rglob("*")}
    assert not failures, "\n".join(failures)
    assert after == before  # nothing new, nothing changed (the existing output included)
    assert (files["dir"] / "keep.safetensors").read_text() == "an existing output"


@pytest.mark.parametrize("image, message", [
    (None, "an image must be a path"), (b"\x89PNG", "an image must be a path"), (3, "an image must be a path"),
    (torch.zeros(2, 8, 8), r"\[3, H, W\]"), (torch.full((3, 8, 8), 2.0), r"in \[0, 1\]"),
])
def test_bad_api_images_name_what_is_accepted(tiny_model, image, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unsample.invert(tiny_model, image, "a red cat", steps=2)


def test_bad_api_edits(tiny_model, files: dict[str, Path]) -> None:
    inv = unsample.Inversion.load(files["inv"])
    for kwargs, message in (({"prompt": None}, "target prompt"), ({"prompt": "a cat", "mask": "blob"}, "not one of"),
                            ({"prompt": "a cat", "start_step": 5}, "start_step=5"),
                            ({"prompt": "a cat", "guidance": float("nan")}, "guidance="),
                            ({"prompt": "a cat", "mask_dilate": -1}, "dilation")):
        with pytest.raises(ValueError, match=message):
            unsample.edit(tiny_model, inv, **kwargs)
