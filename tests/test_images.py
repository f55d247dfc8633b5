"""Image loading: EXIF orientation, RGB, and the documented sizing rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unsample.images import fit_image, load_image, tensor_to_pil


def test_exif_orientation_is_applied_and_mode_is_rgb(tmp_path: Path) -> None:
    img = Image.new("RGBA", (40, 20), (255, 0, 0, 128))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.convert("RGB").save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.size == (20, 40) and loaded.mode == "RGB"
    assert load_image(img).mode == "RGB"


def test_fit_model_crops_centre_square_and_multiple_keeps_aspect() -> None:
    img = Image.new("RGB", (300, 200))
    assert fit_image(img, 64, 16, "model").size == (64, 64)
    assert fit_image(img, 64, 64, "multiple").size == (256, 192)
    assert fit_image(Image.new("RGB", (30, 30)), 64, 64, "multiple").size == (64, 64)
    with pytest.raises(ValueError, match="fit="):
        fit_image(img, 64, 16, "stretch")  # type: ignore[arg-type]


def test_unreadable_inputs_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "none.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        load_image(bad)


def test_tensor_to_pil_round_trips_8bit() -> None:
    import torch

    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    assert np.array_equal(np.asarray(tensor_to_pil(t)), arr)
