"""Judge an edit by its objects alone, against a known background (for `backgrounds`' pairs).

The analytic detector (`detect`) first fits a palette background; on a new background that fit
is meaningless. Here the exact background B (float, the one under source and target) is known,
so each object is read the way the detector reads one, inside its own region only:

1. Region: the pixels within `REGION_MARGIN` px of the larger of the object's source and target
   bounding circles (`backgrounds.object_regions`); everything the edit may legitimately
   change about that object lies inside it, and regions of two objects never overlap.
2. Object pixels: those farther than `OBJECT_THRESHOLD` (the detector's, 40 grey levels) from
   B; 8-connected pieces smaller than a quarter of the smallest object are dropped. None left:
   the object is missing.
3. Colour: the median of the purest object pixels (at least `PURE_FRACTION` of the 90th
   percentile of their distance from B), named by the nearest object colour.
4. Coverage: alpha = projection of (pixel - B) onto (colour - B), clipped to [0, 1], on the
   object pixels grown by two pixels (inside the region); shape, bounding radius and the
   template IoU by the detector's own fit (`detect.classify_shape`); size small or large by the
   radius against `detect.SIZE_THRESHOLD`.

An object reads right when its colour and shape are the target scene's (and its size, for a
size edit: the clean judge compares sizes only then too) and its template IoU is at least
`MIN_SCORE`. An edit succeeds when every object of the target scene reads right. What happens
outside the regions (background damage) is the bench's background PSNR, not this judge's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from unsample.errors import InputError
from unsample_lab.shapes.backgrounds import BackgroundPair, object_regions
from unsample_lab.shapes.detect import (
    OBJECT_THRESHOLD,
    PURE_FRACTION,
    SIZE_THRESHOLD,
    classify_shape,
)
from unsample_lab.shapes.geometry import UNIT_AREA
from unsample_lab.shapes.scene import SIZE_RADIUS, Scene
from unsample_lab.shapes.vocabulary import OBJECT_COLORS, OBJECT_RGB

MIN_SCORE = 0.6
_MIN_AREA = 0.25 * UNIT_AREA["triangle"] * SIZE_RADIUS["small"] ** 2  # fraction of the canvas
_OBJECT_RGB = np.array([OBJECT_RGB[c] for c in OBJECT_COLORS], dtype=np.float64)


@dataclass(frozen=True)
class ObjectReading:
    """What one region holds: colour, shape and size words and the template IoU."""

    color: str
    shape: str
    size: str
    score: float


def _grow(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel (4-neighbourhood)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _large_pieces(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    from scipy.ndimage import label  # heavy (scipy): loaded on use

    labels, count = label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def read_object(
    image: np.ndarray, background: np.ndarray, region: np.ndarray
) -> ObjectReading | None:
    """Read the object inside `region` of `image` against the exact `background`; None if absent."""
    pixels = image.astype(np.float64)
    off = np.linalg.norm(pixels - background, axis=-1)
    size = image.shape[0]
    found = _large_pieces(region & (off > OBJECT_THRESHOLD), _MIN_AREA * size * size)
    if not found.any():
        return None
    far = off[found]
    core = found & (off >= PURE_FRACTION * np.percentile(far, 90))
    colour = np.median(pixels[core], axis=0)
    name = OBJECT_COLORS[int(np.argmin(np.linalg.norm(_OBJECT_RGB - colour, axis=1)))]
    direction = colour - background
    contrast2 = np.maximum(np.sum(direction * direction, axis=-1), 1e-6)
    coverage = np.sum((pixels - background) * direction, axis=-1) / contrast2
    support = _grow(_grow(found)) & region
    alpha = np.where(support, np.clip(coverage, 0.0, 1.0), 0.0)
    fit = classify_shape(alpha)
    return ObjectReading(
        color=name,
        shape=fit.shape,
        size="small" if fit.radius / size < SIZE_THRESHOLD else "large",
        score=fit.score,
    )


def objects_read_right(
    image: np.ndarray,
    background: np.ndarray,
    source: Scene,
    target: Scene,
    *,
    check_size: bool,
) -> bool:
    """Whether every object of `target` reads right in `image` (module docstring's rule)."""
    if image.shape != background.shape or image.dtype != np.uint8:
        raise InputError(
            f"the judge takes a uint8 image shaped like its background {background.shape}, "
            f"got {image.dtype} {image.shape}"
        )
    if len(source.objects) != len(target.objects):
        raise InputError("source and target scenes must hold the same objects (an object edit)")
    for obj, region in zip(target.objects, object_regions((source, target), image.shape[0])):
        seen = read_object(image, background, region)
        if seen is None or seen.score < MIN_SCORE:
            return False
        if (seen.color, seen.shape) != (obj.color, obj.shape):
            return False
        if check_size and seen.size != obj.size:
            return False
    return True


def object_judge(pair: BackgroundPair) -> Callable[[np.ndarray], bool]:
    """The judge of one new-background pair: an edited uint8 image -> whether the edit is right."""
    source, target = pair.pair.source.scene, pair.pair.target.scene
    check_size = pair.pair.kind == "size"

    def judge(image: np.ndarray) -> bool:
        return objects_read_right(image, pair.background, source, target, check_size=check_size)

    return judge
