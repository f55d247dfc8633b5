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


def test_bad_image_sources_get_one_line_errors(tmp_path: Path) -> None:
    import torch

    with pytest.raises(ValueError, match="is a folder, not an image"):
        load_image(tmp_path)
    with pytest.raises(ValueError, match="not a regular file"):
        load_image("/dev/null")
    for bad in (None, b"\x89PNG", 3):
        with pytest.raises(ValueError, match="an image must be a path"):
            load_image(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        load_image(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        load_image(np.full((8, 8, 3), 2.0))


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)  # 30000 x 30000 RGB, no pixel data
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    assert bomb.stat().st_size < 100
    with pytest.raises(ValueError, match="pixels"):
        load_image(bomb)


def test_arrays_and_tensors_are_images() -> None:
    import torch

    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    arr[..., 0] = 200
    assert np.array_equal(np.asarray(load_image(arr)), arr)
    assert np.array_equal(np.asarray(load_image(arr.astype(np.float64) / 255.0)), arr)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0
    assert np.array_equal(np.asarray(load_image(t)), arr)
    assert np.array_equal(np.asarray(load_image(t[None])), arr)


def test_sixteen_bit_float_and_transparent_images_keep_their_content(tmp_path: Path) -> None:
    grey16 = np.full((4, 4), 32896, dtype=np.uint16)  # 128 * 257: mid grey in 16 bits
    path = tmp_path / "g16.png"
    Image.fromarray(grey16).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.array_equal(np.asarray(load_image(path)), np.full((4, 4, 3), 128, dtype=np.uint8))
    f = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F")
    assert np.array_equal(np.asarray(load_image(f)), np.full((4, 4, 3), 128, dtype=np.uint8))
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 1] = 255  # green hidden under fully transparent pixels
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel
    out = np.asarray(load_image(Image.fromarray(rgba, mode="RGBA")))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)
