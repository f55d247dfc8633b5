"""Sizing (`unsample.images`): the rule's sizes worked out by hand, the old names, and an edit of
a non-square photo that comes back at the photo's own size with its own pixels outside the mask."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import unsample
from unsample.cli import app
from unsample.editing.paste import pixel_mask
from unsample.errors import InputError, SizeWarning
from unsample.images import canonical_fit, fit_image, size_warning, working_size
from unsample.inversion import Inversion

SOURCE, TARGET = "a red cat", "a green cat"


@pytest.mark.parametrize(("size", "resolution", "multiple", "expected"), [
    # s = R / sqrt(W H); each side round(side * s / m) * m
    ((3000, 2000), 512, 64, (640, 448)),     # s = 0.20903: 627.1 / 64 = 9.80 -> 10, 418.1 / 64 = 6.53 -> 7
    ((3000, 2000), 1024, 32, (1248, 832)),   # s = 0.41806: 1254.2 / 32 = 39.2 -> 39, 836.1 / 32 = 26.1 -> 26
    ((3000, 2000), 1024, 16, (1248, 832)),   # 1254.2 / 16 = 78.4 -> 78, 836.1 / 16 = 52.3 -> 52
    ((451, 300), 64, 16, (80, 48)),          # s = 0.17425: 78.6 / 16 = 4.91 -> 5, 52.3 / 16 = 3.27 -> 3
    ((100, 100), 512, 64, (512, 512)),       # a small image is scaled up to the native area
    ((40, 4000), 512, 64, (64, 5120)),       # s = 1.28: 51.2 / 64 = 0.8 -> 1 (one multiple), 5120 / 64 = 80
])
def test_the_area_rule_by_hand(size: tuple[int, int], resolution: int, multiple: int,
                               expected: tuple[int, int]) -> None:
    assert working_size(*size, resolution, multiple) == expected


def test_a_three_by_two_photo_is_within_ten_percent_of_the_native_area() -> None:
    for resolution, multiple in ((512, 64), (768, 64), (1024, 32), (1024, 16), (64, 16), (16, 4)):
        w, h = working_size(3000, 2000, resolution, multiple)
        assert abs(w * h / resolution**2 - 1) <= 0.10, (resolution, multiple, w, h)
        assert w % multiple == 0 and h % multiple == 0


def test_crop_and_native_keep_the_old_rules_under_new_names() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((30, 45, 3)) * 255).astype(np.uint8))
    assert canonical_fit("model") == "crop" and canonical_fit("multiple") == "native"
    crop = fit_image(photo, 16, 4, "crop")
    assert crop.size == (16, 16) and np.array_equal(np.asarray(crop), np.asarray(fit_image(photo, 16, 4, "model")))
    assert fit_image(photo, 16, 4, "native").size == (44, 28) == fit_image(photo, 16, 4, "multiple").size
    with pytest.raises(InputError, match="area .* crop .* native"):
        canonical_fit("square")


def test_native_far_above_the_model_warns() -> None:
    assert size_warning((1024, 1024), 512) is not None and "4.0x" in (size_warning((1024, 1024), 512) or "")
    assert size_warning((724, 724), 512) is None  # 2.0x: at the limit, no warning


def test_the_mask_maps_to_any_size_by_the_nearest_cell() -> None:
    cells = np.zeros((4, 6), dtype=bool)
    cells[1:3, 2:5] = True
    assert np.array_equal(pixel_mask(cells, (8, 12)), np.repeat(np.repeat(cells, 2, axis=0), 2, axis=1))
    odd = pixel_mask(cells, (10, 15))  # pixel (y, x) -> cell (y * 4 // 10, x * 6 // 15)
    assert odd.shape == (10, 15)
    assert odd[3, 5] == cells[1, 2] and odd[2, 5] == cells[0, 2] and odd[9, 14] == cells[3, 5]


def _photo(width: int, height: int, seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def _centre(width: int, height: int) -> np.ndarray:
    """A mask of the photo's middle (True = may change), at the photo's own size."""
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = True
    return mask


def test_a_three_by_two_photo_comes_back_whole_at_its_own_size(tiny_model: Any) -> None:
    photo = _photo(48, 32)
    res = unsample.edit(tiny_model, photo, TARGET, source_prompt=SOURCE, steps=3, mask=_centre(48, 32),
                        escalate=False, output="result")
    working = res.sizes["working"]
    assert res.image.size == (48, 32) and res.sizes == {"fit": "area", "input": [48, 32], "working": working,
                                                        "output": [48, 32]}
    assert abs(working[0] * working[1] / tiny_model.resolution**2 - 1) <= 0.10
    assert res.working_image.size == tuple(working) and res.inversion.image_size == (working[1], working[0])
    out, source = np.asarray(res.image), np.asarray(photo)
    outside = ~pixel_mask(res.mask.numpy(), (32, 48))
    assert outside[0, 0] and outside[-1, -1] and outside[0, -1] and outside[-1, 0]
    assert np.array_equal(out[outside], source[outside])  # the photo's own pixels, corners included
    assert not np.array_equal(out[~outside], source[~outside])  # the edit is there
    plain = unsample.edit(tiny_model, photo, TARGET, source_prompt=SOURCE, steps=3, mask=_centre(48, 32),
                          escalate=False, paste_back=False, output="result")
    assert plain.image.size == (48, 32) and not np.array_equal(np.asarray(plain.image)[0:2, 0:2], source[0:2, 0:2])
    small = unsample.edit(tiny_model, photo, TARGET, source_prompt=SOURCE, steps=3, mask=_centre(48, 32),
                          escalate=False, output_size="working", output="result")
    assert small.image.size == tuple(working) and small.sizes["output"] == working


def test_the_default_edit_of_a_photo_keeps_its_size(tiny_model: Any) -> None:
    """Every setting at its default (noise mask, the check, the ladder): the size and, where the
    mask did not reach, the pixels."""
    photo = _photo(60, 40, seed=5)
    res = unsample.edit(tiny_model, photo, TARGET, source_prompt=SOURCE, steps=4, output="result")
    assert res.image.size == (60, 40)
    if res.mask is not None and res.paste is not None and res.paste.applied:
        outside = ~pixel_mask(res.mask.numpy(), (40, 60))
        assert np.array_equal(np.asarray(res.image)[outside], np.asarray(photo)[outside])


def test_an_inversion_file_keeps_the_photo_for_its_edits(tiny_model: Any, tmp_path: Path) -> None:
    photo = _photo(40, 24)
    inv = unsample.invert(tiny_model, photo, SOURCE, steps=3)
    assert inv.original is not None and tuple(inv.original.shape) == (1, 3, 24, 40)
    assert inv.stats["sizing"]["fit"] == "area" and inv.input_size == (24, 40)
    inv.save(tmp_path / "photo.safetensors")
    loaded = Inversion.load(tmp_path / "photo.safetensors")
    assert np.array_equal(loaded.original.numpy(), inv.original.numpy())
    res = unsample.edit(tiny_model, loaded, TARGET, mask=_centre(40, 24), escalate=False, output="result")
    assert res.image.size == (40, 24)
    outside = ~pixel_mask(res.mask.numpy(), (24, 40))
    assert np.array_equal(np.asarray(res.image)[outside], np.asarray(photo)[outside])
    cropped = unsample.invert(tiny_model, photo, SOURCE, steps=3, fit="crop")
    assert cropped.original is None and cropped.input_size == (24, 40)


def test_a_damaged_original_is_refused(tiny_model: Any) -> None:
    inv = unsample.invert(tiny_model, _photo(40, 24), SOURCE, steps=2)
    with pytest.raises(InputError, match="original"):
        Inversion(**{**inv.__dict__, "original": inv.original.float()})
    with pytest.raises(InputError, match="original"):
        Inversion(**{**inv.__dict__, "original": torch.zeros(1, 4, 5, 5, dtype=torch.uint8)})


def test_the_cli_records_the_three_sizes_and_warns_on_native(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    _photo(48, 32).save(tmp_path / "photo.png")
    runner = CliRunner()
    out = tmp_path / "edit.png"
    result = runner.invoke(app, ["edit", str(tmp_path / "photo.png"), "-o", str(out), "--model", str(tiny_pipeline_dir),
                                 "--source-prompt", SOURCE, "--prompt", TARGET, "--steps", "2", "--no-escalate",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    sizes = json.loads(out.with_suffix(".json").read_text())["sizes"]
    assert sizes["input"] == [48, 32] and sizes["output"] == [48, 32] and sizes["fit"] == "area"
    assert Image.open(out).size == (48, 32)
    big = tmp_path / "big.png"
    _photo(64, 48).save(big)  # 12x the tiny model's 16 x 16
    result = runner.invoke(app, ["edit", str(big), "-o", str(tmp_path / "n.png"), "--model", str(tiny_pipeline_dir),
                                 "--source-prompt", SOURCE, "--prompt", TARGET, "--steps", "2", "--no-escalate",
                                 "--fit", "native", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "warning: the image is edited at 64 x 48 pixels, 12.0x the model's native 16 x 16" in result.output
    result = runner.invoke(app, ["edit", str(big), "-o", str(tmp_path / "x.png"), "--model", str(tiny_pipeline_dir),
                                 "--source-prompt", SOURCE, "--prompt", TARGET, "--fit", "square"])
    assert result.exit_code == 2 and "area" in result.output


def test_the_api_warns_on_native(tiny_model: Any) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unsample.invert(tiny_model, _photo(64, 48), SOURCE, steps=1, fit="native")
    assert any(issubclass(w.category, SizeWarning) for w in caught)


def test_batch_edits_photos_at_their_own_size(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    _photo(48, 32).save(tmp_path / "wide.png")
    _photo(24, 40, seed=4).save(tmp_path / "tall.png")
    lines = [
        {"id": "wide", "job": "edit", "image": "wide.png", "prompt": SOURCE, "target_prompt": TARGET, "steps": 2,
         "escalate": False},
        {"id": "tall", "job": "edit", "image": "tall.png", "prompt": SOURCE, "target_prompt": TARGET, "steps": 2,
         "escalate": False, "output_size": "working"},
        {"id": "inv", "job": "invert", "image": "wide.png", "prompt": SOURCE, "steps": 2, "fit": "model"},
    ]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(manifest), "--out", str(out), "--model", str(tiny_pipeline_dir),
                                      "--device", "cpu", "--quiet", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert Image.open(out / "wide.png").size == (48, 32)
    tall = json.loads((out / "tall.json").read_text())["sizes"]
    assert tall["input"] == [24, 40] and Image.open(out / "tall.png").size == tuple(tall["working"]) != (24, 40)
    inv = Inversion.load(out / "inv.safetensors")
    assert inv.original is None and inv.stats["sizing"]["fit"] == "crop" and inv.image_size == (16, 16)
