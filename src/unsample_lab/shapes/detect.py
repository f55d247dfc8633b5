"""An analytic detector for shapes-world images (no learned weights).

`detect(image)` reads back what a caption would say, in four steps:

1. Background colour: for each background colour, the RGB distance of every pixel to the segment
   [base, shade] of that colour (every background pixel of any texture lies on it), truncated at
   `TRUNCATION` so object pixels count the same for every hypothesis; the smallest mean squared
   truncated distance wins.
2. Texture: each texture's exact background (`background_image`) in that colour is compared with
   the image the same truncated way; the closest wins.
3. Objects: pixels farther than `OBJECT_THRESHOLD` from that colour's segment (a test that
   ignores the texture, so it survives blur) are grouped into 8-connected components;
   components smaller than a quarter of the smallest object are noise. A component's colour
   is the median of its purest pixels (at least `PURE_FRACTION` of its 90th-percentile distance
   from the background), named by the nearest object colour. Each pixel near the component
   (grown by two pixels, not into other components) gets a coverage estimate, alpha =
   projection of (pixel - background) onto (colour - background), using the fitted texture's
   exact background; the object's mask is alpha >= 0.5, as in the renderer.
4. Shape and size: for each shape, the bounding radius R that gives the shape the object's
   soft area (sum of alpha; ``area = UNIT_AREA[shape] * R**2``) places a soft template at the
   alpha-weighted centroid (shapes are centred on their centroids). Templates are rotated over
   one symmetry period in `ANGLE_STEP` steps (hearts only within +-`HEART_ANGLE_RANGE`), cheaply,
   by shifting the shape's `radial_profile`; the shape whose best template has the highest soft
   intersection over union with alpha wins (its IoU is the object's `score`). The size is
   "small" or "large" by R against the geometric mean of the two sizes' radii.

`detection_matches` compares a detection with a scene, spec or caption: the background colour
and the multiset of object (shape, colour) pairs, plus sizes and texture unless told not to.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from unsample.errors import InputError
from unsample_lab.shapes.captions import parse_caption
from unsample_lab.shapes.geometry import PROFILE_STEPS, SYMMETRY_DEGREES, UNIT_AREA, radial_profile
from unsample_lab.shapes.render import background_image
from unsample_lab.shapes.scene import SIZE_RADIUS, Scene, SceneSpec
from unsample_lab.shapes.vocabulary import (
    BACKGROUND_COLORS,
    BACKGROUND_RGB,
    OBJECT_COLORS,
    OBJECT_RGB,
    SHAPES,
    TEXTURES,
)

TRUNCATION = 40.0
OBJECT_THRESHOLD = 40.0
PURE_FRACTION = 0.8
ROUNDING = 0.9  # grey levels of slack on the coverage-0.5 threshold
ANGLE_STEP = 3.0
HEART_ANGLE_RANGE = 45.0  # hearts are searched in [-45, 45] degrees (scenes use +-30)
SIZE_THRESHOLD = math.sqrt(SIZE_RADIUS["small"] * SIZE_RADIUS["large"])
_MIN_AREA = 0.25 * UNIT_AREA["triangle"] * SIZE_RADIUS["small"] ** 2  # fraction of the canvas
_OBJECT_RGB = np.array([OBJECT_RGB[c] for c in OBJECT_COLORS], dtype=np.float64)


@dataclass(frozen=True)
class ShapeFit:
    shape: str
    radius: float  # bounding radius, pixels
    angle: float
    score: float
    x: float  # centroid, pixels
    y: float


@dataclass(frozen=True, eq=False)
class DetectedObject:
    """One detected object: words, centroid (canvas fractions), angle, template IoU, mask."""

    shape: str
    color: str
    size: str
    x: float
    y: float
    angle: float
    score: float
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Detection:
    """What `detect` read from an image; objects are listed left to right."""

    background: str
    texture: str
    objects: tuple[DetectedObject, ...]


def _truncated_score(distance: np.ndarray) -> np.ndarray:
    """Mean squared truncated distance over the last two axes."""
    return np.mean(np.minimum(distance, TRUNCATION) ** 2, axis=(-2, -1))


def _segment_distance(image: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    d = end - start
    t = np.clip(((image - start) @ d) / float(d @ d), 0.0, 1.0)
    return np.linalg.norm(image - (start + t[..., None] * d), axis=-1)


def _shift_stack(array: np.ndarray, fill: float | int | bool, diagonal: bool) -> list[np.ndarray]:
    """The array shifted by one pixel in each of 4 (or 8) directions."""
    padded = np.pad(array, 1, constant_values=fill)
    h, w = array.shape
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if diagonal:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    return [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in steps]


def _dilate(mask: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce([mask, *_shift_stack(mask, False, diagonal=False)])


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a bool mask, by min-label propagation with pointer jumping."""
    h, w = mask.shape
    none = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:
        smallest = np.minimum.reduce([labels, *_shift_stack(labels, none, diagonal=True)])
        smallest = np.where(mask, smallest, none)
        flat = np.append(smallest.ravel(), none)
        smallest = flat[smallest]  # jump to the label of the label's own pixel
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    return [labels == value for value in np.unique(labels[mask])]


def _angles(shape: str) -> np.ndarray:
    if shape == "circle":
        return np.zeros(1)
    if shape == "heart":
        return np.arange(-HEART_ANGLE_RANGE, HEART_ANGLE_RANGE + 1e-9, ANGLE_STEP)
    return np.arange(0.0, SYMMETRY_DEGREES[shape], ANGLE_STEP)


def classify_shape(alpha: np.ndarray) -> ShapeFit:
    """Fit every shape's templates to a soft coverage map (module docstring, step 4).

    `alpha` is a float (H, W) coverage map of one object (zero elsewhere); the best fit's bounding
    radius and centroid are in pixels, its `score` the soft IoU.
    """
    area = float(alpha.sum())
    h, w = alpha.shape
    rows, cols = np.arange(h) + 0.5, np.arange(w) + 0.5
    cy = float(alpha.sum(axis=1) @ rows) / area
    cx = float(alpha.sum(axis=0) @ cols) / area
    reach = math.sqrt(area / min(UNIT_AREA.values())) + 2.0
    top, bottom = max(int(cy - reach), 0), min(int(cy + reach) + 1, h)
    left, right = max(int(cx - reach), 0), min(int(cx + reach) + 1, w)
    observed = alpha[top:bottom, left:right].reshape(-1)
    dx = (cols[None, left:right] - cx) + np.zeros((bottom - top, 1))
    dy = (cy - rows[top:bottom, None]) + np.zeros((1, right - left))
    distance = np.hypot(dx, dy).reshape(-1)
    ray = np.rint(np.degrees(np.arctan2(dy, dx)).reshape(-1) * PROFILE_STEPS / 360.0).astype(int)
    best = ShapeFit("circle", 0.0, 0.0, -1.0, cx, cy)
    for shape in SHAPES:
        radius = math.sqrt(area / UNIT_AREA[shape])
        angles = _angles(shape)
        shifts = np.rint(angles * PROFILE_STEPS / 360.0).astype(int)
        profile = radial_profile(shape)
        # the template is 1 inside the inscribed circle and 0 outside the bounding one whatever
        # the angle: sum those pixels once, evaluate only the ring between them per angle
        inner = distance <= radius * profile.min() - 0.5
        outer = distance >= radius * profile.max() + 0.5
        ring = ~(inner | outer)
        fixed_overlap = observed[inner].sum()
        fixed_union = np.count_nonzero(inner) + observed[outer].sum()
        boundary = radius * profile[(ray[ring][None, :] - shifts[:, None]) % PROFILE_STEPS]
        template = np.clip(boundary - distance[ring] + 0.5, 0.0, 1.0)  # (angles, ring pixels)
        seen = observed[ring]
        overlap = fixed_overlap + np.minimum(template, seen).sum(axis=1)
        iou = overlap / (fixed_union + np.maximum(template, seen).sum(axis=1))
        k = int(np.argmax(iou))
        if iou[k] > best.score:
            best = ShapeFit(shape, radius, float(angles[k]), float(iou[k]), cx, cy)
    return best


def detect(image: np.ndarray) -> Detection:
    """Read background colour, texture and objects (shape, colour, size) from an RGB image."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"detect() takes an (H, W, 3) numpy array, got {getattr(image, 'shape', type(image))}"
        )
    if image.shape[0] != image.shape[1] or image.shape[0] < 16:
        raise InputError(f"detect() takes a square image of side >= 16, got {image.shape[:2]}")
    if image.dtype != np.uint8:
        raise InputError(
            f"detect() takes uint8 pixels in 0..255, got dtype {image.dtype}; "
            "convert with np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for floats in [0, 1]"
        )
    size = image.shape[0]
    pixels = image.astype(np.float64)

    # 1. background colour
    colour_scores, segment_distances = [], []
    for name in BACKGROUND_COLORS:
        base, shade = (np.asarray(c, dtype=np.float64) for c in BACKGROUND_RGB[name])
        segment_distances.append(_segment_distance(pixels, base, shade))
        colour_scores.append(float(_truncated_score(segment_distances[-1])))
    k = int(np.argmin(colour_scores))
    background, off_background = BACKGROUND_COLORS[k], segment_distances[k]

    # 2. texture
    templates = np.stack([background_image(background, t, size) for t in TEXTURES])
    k = int(np.argmin(_truncated_score(np.linalg.norm(pixels[None] - templates, axis=-1))))
    texture, plate = TEXTURES[k], templates[k]

    # 3. objects: components of off-background pixels, colour, coverage
    candidates = off_background > OBJECT_THRESHOLD
    objects = []
    for component in _components(candidates):
        if component.sum() < _MIN_AREA * size * size:
            continue
        # the purest pixels: those nearly as far from the background as the component gets
        far = off_background[component]
        core = component & (off_background >= PURE_FRACTION * np.percentile(far, 90))
        colour = np.median(pixels[core], axis=0)
        name = OBJECT_COLORS[int(np.argmin(np.linalg.norm(_OBJECT_RGB - colour, axis=1)))]
        direction = colour - plate
        contrast = np.sqrt(np.maximum(np.sum(direction * direction, axis=-1), 1e-6))
        coverage = np.sum((pixels - plate) * direction, axis=-1) / contrast**2
        region = _dilate(_dilate(component)) & ~(candidates & ~component)
        alpha = np.where(region, np.clip(coverage, 0.0, 1.0), 0.0)
        # coverage exactly 0.5 is common (whole sub-samples); allow the uint8 rounding error
        mask = alpha >= 0.5 - ROUNDING / contrast
        if not mask.any():
            continue
        mask.setflags(write=False)
        fit = classify_shape(alpha)
        objects.append(
            DetectedObject(
                shape=fit.shape,
                color=name,
                size="small" if fit.radius / size < SIZE_THRESHOLD else "large",
                x=fit.x / size,
                y=fit.y / size,
                angle=fit.angle,
                score=fit.score,
                mask=mask,
            )
        )
    objects.sort(key=lambda o: (o.x, o.y))
    return Detection(background=background, texture=texture, objects=tuple(objects))


def detection_matches(
    detection: Detection,
    target: SceneSpec | Scene | str,
    *,
    check_size: bool = True,
    check_texture: bool = True,
) -> bool:
    """Whether a detection agrees with a scene, spec or caption.

    Always compared: background colour and the multiset of objects' (shape, colour). Sizes and
    texture are compared too unless `check_size` / `check_texture` is False.
    """
    if isinstance(target, str):
        spec = parse_caption(target)
    elif isinstance(target, Scene):
        spec = target.spec
    elif isinstance(target, SceneSpec):
        spec = target
    else:
        raise TypeError(
            f"target must be a SceneSpec, Scene or caption, got {type(target).__name__}"
        )
    if detection.background != spec.background:
        return False
    if check_texture and detection.texture != spec.texture:
        return False

    def words(shape: str, color: str, size: str) -> tuple[str, ...]:
        return (shape, color, size) if check_size else (shape, color)

    found = Counter(words(o.shape, o.color, o.size) for o in detection.objects)
    wanted = Counter(words(o.shape, o.color, o.size) for o in spec.objects)
    return found == wanted
