"""Reading user images and turning tensors back into images.

Sizing rule (``fit``), with ``R`` the model's resolution and ``m`` its ``size_multiple`` (the
VAE factor times the network's downsampling: 64 for SD 1.x/2.x, 32 for SDXL, 16 for SD3 and Flux):
- ``"area"`` (default): keep the aspect ratio and scale the image to about the model's native
  pixel count ``R x R``: with ``s = R / sqrt(W * H)``, each side becomes ``round(side * s / m) * m``
  (never below ``m``), Lanczos. Nothing is cropped, small images are scaled up, large ones down.
  Examples, a 3:2 photo (3000 x 2000): 640 x 448 on SD 1.5 (R 512, m 64; 109% of 512^2),
  960 x 640 on SD 2.x (R 768; 104%), 1248 x 832 on SDXL (R 1024, m 32; 99%) and on SD3 and Flux
  (R 1024, m 16; 99%), 80 x 48 on the embedded model (R 64, m 16; 94%).
- ``"crop"`` (formerly ``"model"``, still accepted): scale so the shorter side equals ``R``
  (Lanczos), then crop the centre to a square of that side: what the model was trained on, but a
  non-square photo loses its edges.
- ``"native"`` (formerly ``"multiple"``, still accepted): keep the image's own size, each side
  rounded down to a multiple of ``m`` (never below one). Nothing is cropped, but a photo far
  larger than ``R x R`` is outside what the model knows (it repeats objects) and costs memory:
  `size_warning` says so above `NATIVE_AREA_WARNING` times the native area.
An edit of a whole-image fit (area, native) is written back at the input's own size
(`unsample.EditSpec.output_size`); a crop's edit is the crop.
EXIF orientation is applied first, and every image is converted to 8-bit RGB without changing what
it shows: 16-bit and float images are rescaled, transparent pixels are composited onto white.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from unsample.errors import InputError

Fit = Literal["area", "crop", "native", "model", "multiple"]
"""A sizing rule; "model" and "multiple" are the earlier names of "crop" and "native"."""
FITS = ("area", "crop", "native")
FIT_ALIASES = {"model": "crop", "multiple": "native"}
NATIVE_AREA_WARNING = 2.0
"""``fit="native"`` warns when the working size exceeds this many times the model's native area."""


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


def canonical_fit(fit: Any) -> str:
    """The sizing rule ``fit`` names ("area", "crop" or "native"; the old names map to the new)."""
    if not isinstance(fit, str) or fit not in (*FITS, *FIT_ALIASES):
        raise InputError(f"fit={fit!r} is not supported; use area (keep the aspect ratio at about the model's pixel "
                         "count), crop (centre square) or native (the image's own size)")
    return FIT_ALIASES.get(fit, fit)


def working_size(width: int, height: int, resolution: int, multiple: int, fit: Fit = "area") -> tuple[int, int]:
    """The (width, height) an image of ``width`` x ``height`` is edited at, by the module's rule."""
    fit = canonical_fit(fit)
    if width < 1 or height < 1:
        raise InputError(f"an image of {width} x {height} pixels has nothing to edit")
    if fit == "crop":
        return resolution, resolution
    if fit == "native":
        return max(multiple, width // multiple * multiple), max(multiple, height // multiple * multiple)
    scale = resolution / math.sqrt(width * height)
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


def size_warning(size: tuple[int, int], resolution: int) -> str | None:
    """One line when a working ``size`` (width, height) is over `NATIVE_AREA_WARNING` times the
    model's native area (None otherwise)."""
    ratio = size[0] * size[1] / resolution**2
    if ratio <= NATIVE_AREA_WARNING:
        return None
    return (f"the image is edited at {size[0]} x {size[1]} pixels, {ratio:.1f}x the model's native {resolution} x "
            f"{resolution}: the model may repeat objects and needs more memory; fit='area' edits at about "
            f"{resolution} x {resolution} and writes the result at the image's own size")


def fit_image(image: Image.Image, resolution: int, multiple: int, fit: Fit = "area") -> Image.Image:
    """Resize (and for ``fit="crop"`` centre-crop) an image by the module's sizing rule."""
    fit = canonical_fit(fit)
    w, h = image.size
    if fit == "crop":
        scale = resolution / min(w, h)
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), Image.Resampling.LANCZOS)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        return image.crop((left, top, left + resolution, top + resolution))
    nw, nh = working_size(w, h, resolution, multiple, fit)
    return image if (nw, nh) == (w, h) else image.resize((nw, nh), Image.Resampling.LANCZOS)


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
