"""Paste-back (`unsample.editing.paste`): outside the edit mask the output is the input's own pixels
at the working size, byte for byte; inside, the decoded edit over a seam feathered inward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import unsample
from unsample.cli import app
from unsample.editing.paste import paste_back, seam_band, seam_weight
from unsample.editing.spec import EditSpec
from unsample.errors import InputError, InversionFileError
from unsample.images import fit_image
from unsample.inversion import Inversion, _digest

SOURCE, TARGET = "a red cat", "a green cat"

# the tiny pipeline works at 16 x 16 pixels with an 8 x 8 latent: a cell is 2 x 2 pixels
CELLS = np.zeros((8, 8), dtype=bool)
CELLS[2:6, 2:6] = True
PIXELS = np.zeros((16, 16), dtype=bool)
PIXELS[4:12, 4:12] = True
"""The same mask in pixels, written out by hand."""


def _edit(model: Any, source: Any, **settings: Any) -> Any:
    settings = {"source_prompt": SOURCE, "steps": 3, "mask": CELLS, "escalate": False} | settings
    return unsample.edit(model, source, TARGET, output="result", **settings)


def test_outside_the_mask_the_edit_is_the_input_byte_for_byte(tiny_model: Any, tiny_image: Image.Image) -> None:
    res = _edit(tiny_model, tiny_image)
    source, image, decoded = np.asarray(tiny_image), np.asarray(res.image), np.asarray(res.decoded)
    assert res.paste is not None and res.paste.applied and res.paste.seam == EditSpec().paste_seam
    assert np.array_equal(image[~PIXELS], source[~PIXELS])
    assert not np.array_equal(decoded[~PIXELS], source[~PIXELS])  # the decoded background is at the autoencoder's floor
    assert np.array_equal(image[7:9, 7:9], decoded[7:9, 7:9])  # deeper than the seam: the decoded edit
    assert torch.equal(res.latent, _edit(tiny_model, tiny_image, paste_back=False).latent)  # the latent is the model's


def test_the_input_is_pasted_at_the_working_size(tiny_model: Any) -> None:
    """With ``fit="crop"`` a 24 x 16 image is edited at 16 x 16 (shorter side to the resolution,
    centre crop): what is pasted back is that crop (tests/test_sizing.py has the default fit)."""
    rng = np.random.default_rng(3)
    wide = Image.fromarray((rng.random((16, 24, 3)) * 255).astype(np.uint8))
    res = _edit(tiny_model, wide, fit="crop")
    working = np.asarray(fit_image(wide, 16, tiny_model.size_multiple, "model"))
    assert working.shape == (16, 16, 3)
    assert np.array_equal(np.asarray(res.image)[~PIXELS], working[~PIXELS])


def test_the_seam_ramps_inward_from_the_border_of_the_mask() -> None:
    """The right half of a 4 x 4-cell mask at 32 x 32 pixels: the border is between columns 15 and
    16, so with a seam of 3 pixels columns 16, 17, 18 are blends 1/4, 2/4, 3/4 and the rest decoded;
    the image's own right edge is no border."""
    cells = np.zeros((4, 4), dtype=bool)
    cells[:, 2:] = True
    weight = seam_weight(cells, (32, 32), 3)
    assert np.array_equal(weight[:, :16], np.zeros((32, 16)))
    assert np.allclose(weight[:, 16:19], np.tile([0.25, 0.5, 0.75], (32, 1)), rtol=0, atol=1e-12)
    assert np.array_equal(weight[:, 19:], np.ones((32, 13)))
    assert (np.diff(weight, axis=1) >= 0).all()  # monotone away from the border
    assert np.array_equal(seam_band(cells, (32, 32), 3), np.pad(np.ones((32, 3), dtype=bool), ((0, 0), (16, 13))))
    rng = np.random.default_rng(0)
    blotchy = rng.random((8, 8)) > 0.5
    w = seam_weight(blotchy, (64, 64), 5)
    assert w.min() >= 0 and w.max() <= 1 and ((w > 0) == np.kron(blotchy, np.ones((8, 8), dtype=bool))).all()


def test_seam_zero_is_a_hard_cut() -> None:
    decoded = np.full((16, 16, 3), 200, dtype=np.uint8)
    source = np.full((16, 16, 3), 10, dtype=np.uint8)
    out = paste_back(decoded, source, CELLS, 0)
    assert (out[PIXELS] == 200).all() and (out[~PIXELS] == 10).all()
    assert not seam_band(CELLS, (16, 16), 0).any()
    feathered = paste_back(decoded, source, CELLS, 1)
    assert (feathered[4, 4:12] == 105).all()  # the first ring inside: round(0.5 * 200 + 0.5 * 10)
    assert (feathered[5:11, 5:11] == 200).all() and (feathered[~PIXELS] == 10).all()


def test_paste_back_refuses_pixels_of_two_sizes_and_bad_seams() -> None:
    with pytest.raises(InputError, match="one size"):
        paste_back(np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), CELLS, 0)
    with pytest.raises(InputError, match="uint8"):
        paste_back(np.zeros((16, 16, 3), np.float32), np.zeros((16, 16, 3), np.uint8), CELLS, 0)
    with pytest.raises(InputError, match="seam"):
        seam_weight(CELLS, (16, 16), -1)
    for seam in (-1, 65, 2.5):
        with pytest.raises(InputError, match="paste seam"):
            EditSpec(paste_seam=seam)


def test_no_paste_back_keeps_the_decoded_pixels(tiny_model: Any, tiny_image: Image.Image) -> None:
    res = _edit(tiny_model, tiny_image, paste_back=False)
    assert res.paste is not None and not res.paste.applied and "off" in res.paste.reason
    assert np.array_equal(np.asarray(res.image), np.asarray(res.decoded))
    unmasked = _edit(tiny_model, tiny_image, mask="none")
    assert not unmasked.paste.applied and "no mask" in unmasked.paste.reason
    assert np.array_equal(np.asarray(unmasked.image), np.asarray(unmasked.decoded))
    everything = _edit(tiny_model, tiny_image, mask=np.ones((8, 8), dtype=bool))
    assert not everything.paste.applied and "every latent cell" in everything.paste.reason


def test_the_cli_pastes_back_by_default_and_not_with_no_paste_back(
    tiny_pipeline_dir: Path, tiny_image: Image.Image, tmp_path: Path
) -> None:
    src, mask = tmp_path / "in.png", tmp_path / "mask.png"
    tiny_image.save(src)
    Image.fromarray(PIXELS.astype(np.uint8) * 255).save(mask)
    outs = {}
    for name, extra in (("pasted", []), ("decoded", ["--no-paste-back"])):
        out = tmp_path / f"{name}.png"
        r = CliRunner().invoke(app, ["edit", str(src), "--no-escalate", "--source-prompt", SOURCE, "--target-prompt", TARGET, "--steps",
                                     "3", "--mask", str(mask), "-o", str(out), "--model", str(tiny_pipeline_dir),
                                     "--device", "cpu", "--quiet", *extra], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        outs[name] = (np.asarray(Image.open(out).convert("RGB")), json.loads(out.with_suffix(".json").read_text()))
    source = np.asarray(tiny_image)
    pasted, side = outs["pasted"]
    assert np.array_equal(pasted[~PIXELS], source[~PIXELS])
    assert side["paste"] == {"applied": True, "seam": EditSpec().paste_seam, "reason": ""}
    assert side["edit"]["paste_back"] is True
    decoded, side = outs["decoded"]
    assert not np.array_equal(decoded[~PIXELS], source[~PIXELS])
    assert side["paste"]["applied"] is False and side["edit"]["paste_back"] is False
    assert np.array_equal(decoded[7:9, 7:9], pasted[7:9, 7:9])  # the same edit inside, past the seam


def test_a_saved_and_reloaded_inversion_pastes_back_the_same(
    tiny_model: Any, tiny_image: Image.Image, tmp_path: Path
) -> None:
    inv = unsample.invert(tiny_model, tiny_image, SOURCE, steps=3)
    assert inv.pixels is not None and inv.pixels.dtype == torch.uint8
    assert np.array_equal(inv.pixels[0].permute(1, 2, 0).numpy(), np.asarray(tiny_image))
    back = Inversion.load(inv.save(tmp_path / "inv.safetensors"))
    assert back.pixels is not None and torch.equal(back.pixels, inv.pixels)
    fresh, reloaded = _edit(tiny_model, inv), _edit(tiny_model, back)
    assert reloaded.paste.applied
    assert np.array_equal(np.asarray(reloaded.image), np.asarray(fresh.image))
    assert np.array_equal(np.asarray(reloaded.image)[~PIXELS], np.asarray(tiny_image)[~PIXELS])


def _rewrite(path: Path, change: Any) -> None:
    """Rewrite an inversion file's tensors and digest them again (a file that passes the digest)."""
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["unsample"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open handle is no dict)
    tensors = change(tensors)
    meta = {k: v for k, v in header.items() if k != "sha256"}
    save_file(tensors, str(path), metadata={"unsample": json.dumps({**meta, "sha256": _digest(tensors, meta)})})


def test_an_inversion_file_without_pixels_loads_and_says_why_it_keeps_the_decoded_pixels(
    tiny_model: Any, tiny_image: Image.Image, tmp_path: Path
) -> None:
    path = unsample.invert(tiny_model, tiny_image, SOURCE, steps=3).save(tmp_path / "old.safetensors")
    _rewrite(path, lambda t: {k: v for k, v in t.items() if k != "pixels"})
    old = Inversion.load(path)
    assert old.pixels is None
    res = _edit(tiny_model, old)
    assert not res.paste.applied and "no input pixels" in res.paste.reason
    assert np.array_equal(np.asarray(res.image), np.asarray(res.decoded))


@pytest.mark.parametrize("bad", [
    torch.zeros(1, 3, 16, 16, dtype=torch.float32),  # not uint8
    torch.zeros(1, 3, 8, 8, dtype=torch.uint8),  # not the recorded image size
    torch.zeros(3, 16, 16, dtype=torch.uint8),  # no batch dimension
    torch.zeros(2, 3, 16, 16, dtype=torch.uint8),  # another batch than the latent's
])
def test_a_malformed_pixels_tensor_is_an_inversion_file_error(
    tiny_model: Any, tiny_image: Image.Image, tiny_pipeline_dir: Path, tmp_path: Path, bad: torch.Tensor
) -> None:
    path = unsample.invert(tiny_model, tiny_image, SOURCE, steps=3).save(tmp_path / "bad.safetensors")
    _rewrite(path, lambda t: t | {"pixels": bad})
    with pytest.raises(InversionFileError, match="'pixels'") as err:
        Inversion.load(path)
    assert "\n" not in str(err.value) and "damaged" in str(err.value)
    r = CliRunner().invoke(app, ["edit", str(path), "--no-escalate", "--target-prompt", TARGET, "-o", str(tmp_path / "e.png"),
                                 "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"])
    assert r.exit_code == 2 and "'pixels'" in r.output and "Traceback" not in r.output


def test_the_edit_bench_scores_the_background_with_paste_back_and_without(tiny_model: Any, tmp_path: Path) -> None:
    from unsample_lab.bench import edit as edit_bench
    from unsample_lab.bench.paste import PSNR_CAP

    bench = edit_bench.EditBench(methods=("ddim",), controls=("swap",), masks=("none", "exact"), pairs=2,
                                 kinds=("color",), steps=3, seed=1, paste_seam=1)
    result = edit_bench.run(tiny_model, bench, progress=False)
    for r in result["per_pair"]:
        if r["mask"] == "none":  # nothing to paste: the figures are the decoded ones, and no seam
            assert r["bg_psnr_paste"] == r["bg_psnr"] and r["target_psnr_paste"] == r["target_psnr"]
            assert np.isnan(r["seam_psnr"]) and r["seam_area"] == 0.0
        else:
            assert PSNR_CAP >= r["bg_psnr_paste"] > r["bg_psnr"] + 3
            assert 0 < r["seam_area"] < r["mask_area"] and np.isfinite(r["seam_psnr"]) and np.isfinite(r["seam_psnr_decoded"])
    edit_bench.write_report(result, bench, tmp_path / "r", "test", tiny_model)
    assert "## Paste-back (seam 1 px)" in (tmp_path / "r" / "report.md").read_text()
