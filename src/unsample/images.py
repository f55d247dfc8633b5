"""Reading user images and turning tensors back into images.

Sizing rule (``fit``):
- ``"model"`` (default): scale so the shorter side equals the model's resolution (Lanczos),
  then crop the centre to a square of that side. This is what the model was trained on.
- ``"multiple"``: keep the aspect ratio and scale, round each side down to the nearest
  multiple of the model's ``size_multiple`` (VAE factor times UNet downsampling; 64 for SD),
  never below one multiple. Nothing is cropped.
EXIF orientation is applied first, and every image is converted to 8-bit RGB without changing what
it shows: 16-bit and float images are rescaled, transparent pixels are composited onto white.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from unsample.errors import InputError

Fit = Literal["model", "multiple"]


MAX_PIXELS = 64_000_000
"""Largest image (width x height) read; beyond it a file is refused before its pixels are decoded
(a 69-byte PNG can declare 30000 x 30000 and ask for gigabytes)."""

ACCEPTED = (
    "a path to a PNG/JPEG/TIFF file, a PIL image, a numpy array (H x W x 3 or H x W, uint8 or float in [0, 1]) "
    "or a torch tensor ([3, H, W] or [1, 3, H, W] in [0, 1])"
)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB without silently changing content: 16-bit and float images are rescaled, not clipped
    to white or black; transparent pixels are composited onto white, so hidden colour stays hidden."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F":
            if not np.isfinite(arr).all():
                raise InputError("the image holds NaN or infinite values; give an image with finite pixels")
            peak = 1.0 if arr.max(initial=0.0) <= 1.0 and arr.min(initial=0.0) >= 0.0 else 255.0
        else:
            peak = 65535.0 if arr.max(initial=0.0) > 255 or mode.startswith("I;16") else 255.0
        arr = np.clip(np.rint(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _from_array(source: object) -> Image.Image:
    if isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] != 3:
            raise InputError(f"an image tensor must be [3, H, W] or [1, 3, H, W] in [0, 1], got shape {tuple(source.shape)}")
        arr = t.permute(1, 2, 0).double().numpy()
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InputError("an image tensor must hold finite values in [0, 1]")
        return Image.fromarray(np.rint(arr * 255).astype(np.uint8))
    arr = np.asarray(source)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InputError(f"an image array must be H x W x 3 (or 4, or H x W), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return _to_rgb(Image.fromarray(arr))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InputError("a float image array must hold finite values in [0, 1]")
        return _to_rgb(Image.fromarray(np.rint(arr * 255).astype(np.uint8)))
    raise InputError(f"an image array must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def load_image(source: str | Path | Image.Image | np.ndarray | torch.Tensor) -> Image.Image:
    """An RGB PIL image from a path, a PIL image, a numpy array or a tensor, EXIF orientation applied."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        return _from_array(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            raise InputError(f"{str(path)!r} is a folder, not an image; give the path of a PNG or JPEG")
        if not path.exists():
            raise InputError(f"image file {str(path)!r} does not exist; give the path of a PNG or JPEG")
        if not path.is_file():
            raise InputError(f"{str(path)!r} is not a regular file (a device or pipe?); give the path of a PNG or JPEG")

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(path)
                if image.width * image.height > MAX_PIXELS:
                    raise InputError(
                        f"{str(path)!r} declares {image.width} x {image.height} pixels, more than the {MAX_PIXELS:,} "
                        "this tool reads; downscale it first"
                    )
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise InputError(f"{str(path)!r} declares too many pixels to read safely ({err}); downscale it first") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise InputError(f"{str(path)!r} is not an image PIL can read ({err}); give a PNG or JPEG") from err
    else:
        raise InputError(f"an image must be {ACCEPTED}; got {type(source).__name__}")
    return _to_rgb(ImageOps.exif_transpose(image))


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
    raise InputError(f"fit={fit!r} is not supported; use model or multiple")


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """[1, 3, H, W] or [3, H, W] in [0, 1] -> an 8-bit RGB image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise InputError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """PSNR (dB) of two 8-bit images of one size (scikit-image's); identical images give inf."""
    from skimage.metrics import peak_signal_noise_ratio  # scikit-image takes ~0.4 s to import: loaded on use

    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise InputError(f"PSNR needs images of one size, got {x.shape} and {y.shape}")
    if np.array_equal(x, y):
        return float("inf")
    return float(peak_signal_noise_ratio(x, y, data_range=255))
