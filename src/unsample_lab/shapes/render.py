"""Deterministic, anti-aliased rendering of scenes into uint8 RGB images and object masks.

Everything is computed by coverage on a supersampled grid (`SUPERSAMPLE` x `SUPERSAMPLE`
samples per pixel, at fixed sub-pixel offsets), with plain float64 numpy: the same scene always
gives the same pixels.

Background: each pixel is ``base + t * (shade - base)`` where t in [0, 1] is the texture's
coverage of the shade colour (fixed patterns, in canvas fractions so any size works):
plain t = 0; striped: 45-degree stripes, period `PATTERN_PERIOD`; checkered: squares of
`PATTERN_PERIOD`; gradient: t = y (base at the top, shade at the bottom); dotted: discs of radius
`DOT_RADIUS` on a grid of `PATTERN_PERIOD`. Backgrounds are cached per (colour, texture, size).

An optional `BackgroundStyle` varies the background beyond what scenes ever draw (for robustness
tests): the pattern rotated CCW on screen by ``angle_deg - 45`` (stripes then run at `angle_deg`;
grids rotate about the origin, the gradient about the canvas centre, clipped to [0, 1]), scaled
by `period_scale` (period and dot radius), and base and shade shifted by `colour_offset`
(clipped to [0, 255]). ``style=None`` is the default path, unchanged; ``BackgroundStyle()`` gives
the same pixels, because the rotation by 0 and the scale by 1 are exact in floating point.

Objects: coverage alpha in [0, 1] of each object's shape is computed only inside its bounding
box; the pixel becomes ``(1 - alpha) * below + alpha * colour``. An object's mask is
``alpha >= 0.5``. Objects never overlap, so the masks are disjoint and draw order does not matter.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unsample.errors import InputError
from unsample_lab.shapes.geometry import inside, to_unit_frame
from unsample_lab.shapes.scene import Scene, SceneObject
from unsample_lab.shapes.vocabulary import BACKGROUND_RGB, OBJECT_RGB, TEXTURES

DEFAULT_SIZE = 64
SUPERSAMPLE = 4
PATTERN_PERIOD = 1.0 / 8.0
DOT_RADIUS = 0.03


@dataclass(frozen=True)
class BackgroundStyle:
    """A background variation: stripe angle (degrees), pattern scale, per-channel RGB offset."""

    angle_deg: float = 45.0
    period_scale: float = 1.0
    colour_offset: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if not isinstance(self.angle_deg, (int, float)) or not math.isfinite(self.angle_deg):
            raise InputError(f"angle_deg must be a finite number, got {self.angle_deg!r}")
        scale = self.period_scale
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise InputError(f"period_scale must be a finite number > 0, got {scale!r}")
        offset = self.colour_offset
        if not (
            isinstance(offset, tuple)
            and len(offset) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) for c in offset)
            and all(-255 <= c <= 255 for c in offset)
        ):
            raise InputError(
                f"colour_offset must be a tuple of 3 ints in [-255, 255], got {offset!r}"
            )


@dataclass(frozen=True, eq=False)
class Render:
    """A rendered scene: image (H, W, 3) uint8, one bool (H, W) mask per object, the scene.

    ``masks[i]`` belongs to ``scene.objects[i]``. The arrays are read-only.
    """

    image: np.ndarray
    masks: tuple[np.ndarray, ...]
    scene: Scene


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise InputError(f"size must be an int >= 16 (pixels per side), got {size!r}")


def _subsample_offsets() -> np.ndarray:
    return (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE


def _styled_coverage(
    texture: str, u: np.ndarray, v: np.ndarray, style: BackgroundStyle
) -> np.ndarray:
    """`_shade_coverage` of the pattern rotated by ``angle_deg - 45`` and scaled by the style."""
    delta = math.radians(style.angle_deg - 45.0)
    c, s, scale = math.cos(delta), math.sin(delta), style.period_scale
    if texture == "gradient":
        # rotate about the canvas centre (0.5, 0.5): t = s (u - 1/2) + c (v - 1/2) + 1/2
        return np.clip(s * u + c * v + 0.5 * (1.0 - s - c), 0.0, 1.0)
    # sample the pattern at the inversely rotated point (u, v down: CCW on screen is R(-delta))
    ur, vr = c * u - s * v, s * u + c * v
    return _shade_coverage(texture, ur, vr, scale)


def _shade_coverage(
    texture: str, u: np.ndarray, v: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """Fraction t in [0, 1] of the shade colour at canvas-fraction points (u, v)."""
    if texture == "plain":
        return np.zeros_like(u)
    if texture == "striped":
        phase = (u + v) / (math.sqrt(2.0) * PATTERN_PERIOD * scale)
        return (np.mod(phase, 1.0) < 0.5).astype(np.float64)
    if texture == "checkered":
        period = PATTERN_PERIOD * scale
        cells = np.floor(u / period) + np.floor(v / period)
        return np.mod(cells, 2.0)
    if texture == "gradient":
        return v
    if texture == "dotted":
        period, radius = PATTERN_PERIOD * scale, DOT_RADIUS * scale
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        return (du * du + dv * dv <= radius**2).astype(np.float64)
    raise InputError(f"unknown texture {texture!r}; expected one of: {', '.join(TEXTURES)}")


@functools.lru_cache(maxsize=128)
def _background_cached(
    background: str, texture: str, size: int, style: BackgroundStyle | None = None
) -> np.ndarray:
    if background not in BACKGROUND_RGB:
        raise InputError(
            f"unknown background colour {background!r}; "
            f"expected one of: {', '.join(BACKGROUND_RGB)}"
        )
    fine = (np.arange(size)[:, None] + _subsample_offsets()[None, :]).reshape(-1) / size
    u, v = np.meshgrid(fine, fine)  # u along columns, v along rows
    t = _shade_coverage(texture, u, v) if style is None else _styled_coverage(texture, u, v, style)
    t = t.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    base, shade = (np.asarray(c, dtype=np.float64) for c in BACKGROUND_RGB[background])
    if style is not None:
        offset = np.asarray(style.colour_offset, dtype=np.float64)
        base, shade = np.clip(base + offset, 0.0, 255.0), np.clip(shade + offset, 0.0, 255.0)
    image = base + t[..., None] * (shade - base)
    image.setflags(write=False)
    return image


def background_image(
    background: str,
    texture: str,
    size: int = DEFAULT_SIZE,
    *,
    style: BackgroundStyle | None = None,
) -> np.ndarray:
    """The float64 (size, size, 3) background of a colour and texture, before rounding."""
    _check_size(size)
    if style is None:
        return _background_cached(background, texture, size)
    return _background_cached(background, texture, size, style)


def object_coverage(obj: SceneObject, size: int) -> tuple[tuple[int, int], np.ndarray]:
    """Coverage alpha of one object inside its bounding box: ((top, left), alpha (h, w))."""
    cx, cy, radius = obj.x * size, obj.y * size, obj.radius * size
    top, left = max(int(cy - radius) - 1, 0), max(int(cx - radius) - 1, 0)
    bottom, right = min(int(cy + radius) + 2, size), min(int(cx + radius) + 2, size)
    offsets = _subsample_offsets()
    ys = (np.arange(top, bottom)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(left, right)[:, None] + offsets[None, :]).reshape(-1)
    ux, uy = to_unit_frame(xs[None, :], ys[:, None], cx, cy, radius, obj.angle)
    hit = inside(obj.shape, ux, uy).astype(np.float64)
    alpha = hit.reshape(bottom - top, SUPERSAMPLE, right - left, SUPERSAMPLE).mean(axis=(1, 3))
    return (top, left), alpha


def render(
    scene: Scene, size: int = DEFAULT_SIZE, *, style: BackgroundStyle | None = None
) -> Render:
    """Render a scene at `size` x `size` pixels: image, per-object masks, and the scene.

    `style` (optional) varies the background only; None is the default background.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"render() takes a Scene, got {type(scene).__name__}")
    if style is not None and not isinstance(style, BackgroundStyle):
        raise TypeError(f"style must be a BackgroundStyle or None, got {type(style).__name__}")
    _check_size(size)
    if style is None:
        canvas = _background_cached(scene.background, scene.texture, size).copy()
    else:
        canvas = _background_cached(scene.background, scene.texture, size, style).copy()
    return _paint_objects(canvas, scene)


def composite(scene: Scene, background: np.ndarray) -> Render:
    """The scene's objects painted over any float (size, size, 3) background, as `render` paints.

    The scene's own background words are not drawn: `background` (values in [0, 255]) takes their
    place, so a scene can sit on a background the shapes world never has.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"composite() takes a Scene, got {type(scene).__name__}")
    if not isinstance(background, np.ndarray) or background.ndim != 3 or background.shape[2] != 3:
        raise InputError(
            f"background must be an (H, W, 3) array, got {getattr(background, 'shape', background)!r}"
        )
    if background.shape[0] != background.shape[1]:
        raise InputError(f"background must be square, got {background.shape[:2]}")
    _check_size(background.shape[0])
    if not np.all(np.isfinite(background)):
        raise InputError("background has non-finite values (NaN or infinity)")
    return _paint_objects(np.array(background, dtype=np.float64), scene)


def _paint_objects(canvas: np.ndarray, scene: Scene) -> Render:
    """Paint the scene's objects into the float canvas (in place) and round it to uint8."""
    size = canvas.shape[0]
    masks = []
    for obj in scene.objects:
        (top, left), alpha = object_coverage(obj, size)
        h, w = alpha.shape
        window = canvas[top : top + h, left : left + w]
        colour = np.asarray(OBJECT_RGB[obj.color], dtype=np.float64)
        window += alpha[..., None] * (colour - window)
        mask = np.zeros((size, size), dtype=bool)
        mask[top : top + h, left : left + w] = alpha >= 0.5
        mask.setflags(write=False)
        masks.append(mask)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    image.setflags(write=False)
    return Render(image=image, masks=tuple(masks), scene=scene)


def render_batch(scenes: Sequence[Scene], size: int = DEFAULT_SIZE) -> np.ndarray:
    """Render many scenes into one (B, size, size, 3) uint8 array."""
    if len(scenes) == 0:
        raise InputError("render_batch() needs at least one scene")
    return np.stack([render(scene, size).image for scene in scenes])
