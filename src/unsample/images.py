"""Reading user images and turning tensors back into images.

Sizing rule (``fit``):
- ``"model"`` (default): scale so the shorter side equals the model's resolution (Lanczos),
  then crop the centre to a square of that side. This is what the model was trained on.
- ``"multiple"``: keep the aspect ratio and scale, round each side down to the nearest
  multiple of the model's ``size_multiple`` (VAE factor times UNet downsampling; 64 for SD),
  never below one multiple. Nothing is cropped.
EXIF orientation is applied first, and every image is converted to RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

Fit = Literal["model", "multiple"]


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """An RGB PIL image from a path or an image, EXIF orientation applied."""
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"image file {str(path)!r} does not exist; give the path of a PNG or JPEG")
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{str(path)!r} is not an image PIL can read ({err}); give a PNG or JPEG") from err
    return ImageOps.exif_transpose(image).convert("RGB")


def fit_image(image: Image.Image, resolution: int, multiple: int, fit: Fit = "model") -> Image.Image:
    """Resize (and for ``fit="model"`` centre-crop) an image by the module's sizing rule."""
    w, h = image.size
    if fit == "model":
        scale = resolution / min(w, h)
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), Image.Resampling.LANCZOS)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        return image.crop((left, top, left + resolution, top + resolution))
    if fit == "multiple":
        nw, nh = max(multiple, w // multiple * multiple), max(multiple, h // multiple * multiple)
        return image if (nw, nh) == (w, h) else image.resize((nw, nh), Image.Resampling.LANCZOS)
    raise ValueError(f"fit={fit!r} is not supported; use model or multiple")


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """[1, 3, H, W] or [3, H, W] in [0, 1] -> an 8-bit RGB image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)
