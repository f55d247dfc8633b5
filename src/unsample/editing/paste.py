"""Paste-back: outside the edit mask the output takes the photo's own pixels.

A masked edit keeps the inverted trajectory outside its mask, so there the edited latent is the
image's latent; but decoding it gives the autoencoder's reconstruction, not the photo, and the
background of every edit sits at the autoencoder's floor. Pasting the input's pixels back over
the decoded edit outside the mask makes the background exact. This is the composite that image
editors and inpainting pipelines apply after decoding (diffusers' `VaeImageProcessor.apply_overlay`
pastes the original back outside the inpainting mask; Avrahami, Fried and Lischinski, "Blended
Latent Diffusion", SIGGRAPH 2023, discuss the autoencoder's imperfect background and this pixel
blend as its simplest remedy), here with a seam feathered *inward*, so that not one pixel outside
the mask changes.

In one formula, with ``x`` the input's pixels (at the working size, or at the input's own size
when the edit is written back there, the decoded edit enlarged to it first), ``x_hat`` the decoded edit
(both 8-bit, [H, W, 3]), ``M`` the edit mask brought from latent cells to pixels (a pixel may
change when its cell may), ``d(p)`` the Euclidean distance from pixel ``p`` to the nearest pixel
outside ``M`` (0 outside ``M``; the image's own border is no border of the mask) and ``s >= 0``
the seam width in pixels:

    w(p) = clip(d(p) / (s + 1), 0, 1)
    y(p) = x(p)                                    where w(p) = 0 (every pixel outside M)
         = round(w(p) * x_hat(p) + (1 - w(p)) * x(p))   elsewhere

The first ring inside the mask (d = 1) gets weight 1 / (s + 1), the weight climbs by
1 / (s + 1) a pixel and reaches 1 at depth s + 1: ``s`` pixels are blends, and ``s = 0`` is a
hard cut (every pixel of ``M`` decoded, every other the input's). The *seam band* is the set of
pixels with 0 < w < 1 (inside the mask, closer than s + 1 pixels to its border).

Symbols in code: ``x`` -> ``source``, ``x_hat`` -> ``decoded``, ``M`` -> `pixel_mask`, ``w`` ->
`seam_weight`, ``s`` -> ``seam``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unsample.errors import InputError


@dataclass(frozen=True)
class PasteBack:
    """What paste-back did to an edit's image: ``applied`` (the image outside the mask is the
    input's own pixels), the seam width in pixels, and when not applied, why."""

    applied: bool
    seam: int
    reason: str = ""
    """Why the decoded pixels were kept (empty when applied)."""

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "seam": self.seam, "reason": self.reason}


def pixel_mask(mask: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The edit mask ([h, w] bool, latent cells, True = may change) as pixels ([H, W] bool) of an
    image of ``size`` = (H, W): pixel (y, x) takes cell (floor(y h / H), floor(x w / W)); at the
    working size each cell covers an (H / h) x (W / w) block, at another size (an edit written
    back at the input's own size) the nearest cell."""
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if m.ndim != 2 or m.dtype != bool:
        raise InputError(f"an edit mask must be a 2-D bool array of latent cells, got {m.dtype} of shape {m.shape}")
    (h, w), (height, width) = m.shape, size
    if height < h or width < w:
        raise InputError(f"a {h} x {w} mask cannot be drawn on an image of {height} x {width} pixels")
    rows = np.arange(height) * h // height
    cols = np.arange(width) * w // width
    return m[rows[:, None], cols[None, :]]


def seam_weight(mask: torch.Tensor | np.ndarray, size: tuple[int, int], seam: int) -> np.ndarray:
    """w = clip(d / (seam + 1), 0, 1) ([H, W] float64): 0 outside the mask, 1 deeper than
    ``seam`` pixels inside it (the module's formula)."""
    if isinstance(seam, bool) or not isinstance(seam, int) or seam < 0:
        raise InputError(f"the seam width must be a whole number of pixels >= 0, got {seam!r}")
    inside = pixel_mask(mask, size)
    if inside.all() or not inside.any():
        return inside.astype(np.float64)
    from scipy.ndimage import distance_transform_edt  # heavy (scipy): loaded on use

    depth = distance_transform_edt(inside)  # d: distance to the nearest pixel outside the mask
    return np.clip(depth / (seam + 1), 0.0, 1.0)


def seam_band(mask: torch.Tensor | np.ndarray, size: tuple[int, int], seam: int) -> np.ndarray:
    """The seam band ([H, W] bool): the pixels paste-back blends, 0 < w < 1 (inside the mask and
    closer than ``seam`` + 1 pixels to its border; empty for ``seam`` = 0)."""
    weight = seam_weight(mask, size, seam)
    return (weight > 0) & (weight < 1)


def paste_back(decoded: np.ndarray, source: np.ndarray, mask: torch.Tensor | np.ndarray, seam: int) -> np.ndarray:
    """The decoded edit with the input's own pixels outside the mask, over a seam of ``seam``
    pixels feathered inward (the module's formula). ``decoded`` and ``source`` are uint8
    [H, W, 3] of one size; the result is uint8 and equals ``source`` byte for byte outside the mask."""
    for name, arr in (("decoded", decoded), ("source", source)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(f"paste-back's {name} pixels must be a uint8 H x W x 3 array, got "
                             f"{getattr(arr, 'dtype', type(arr).__name__)} of shape {getattr(arr, 'shape', None)}")
    if decoded.shape != source.shape:
        raise InputError(f"paste-back needs the decoded and the source pixels at one size, got {decoded.shape[:2]} "
                         f"and {source.shape[:2]}")
    weight = seam_weight(mask, decoded.shape[:2], seam)[..., None]
    blend = np.rint(weight * decoded.astype(np.float64) + (1.0 - weight) * source.astype(np.float64))
    return np.where(weight > 0, blend.clip(0, 255).astype(np.uint8), source)
