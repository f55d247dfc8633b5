"""New backgrounds: an edit pair's objects composited over backgrounds the shapes world never has.

The robustness set's re-render variants only restyle a palette background (its stripes turned
to 10-80 degrees, its period scaled by 0.55-1.7, its colours shifted by 18-30). This family
replaces the background altogether, keeping the pair's objects, so an exact target still
exists: the source scene's objects and the target scene's objects are painted (`render.composite`,
the renderer's own supersampled coverage) over one and the same background image; the mask is
the pixels where the two composites differ.

Variants (`NEW_BACKGROUNDS`), each drawn from one seed:

- "new-pattern": two-colour stripes running at an angle in [95, 130] or [140, 175] degrees
  (they lean the other way: scenes draw 45, the robustness set 10-80), period
  `NEW_PERIODS` (2.2-3.8 px or 14-20 px at 64 px; scenes draw 8, the robustness set 4.4-13.6),
  the shade colour's share of a period `STRIPE_DUTY` (scenes: one half), a random phase.
- "new-checker": a checkerboard (cells of a `NEW_PERIODS` period) or a grid of dots (radius
  `DOT_FRACTION` of the period), rotated by an angle in [0, 90).
- "new-gradient": a linear gradient whose shade grows in a direction 60-300 degrees away from
  "down" (scenes: top to bottom; the robustness set: turned by at most 35 degrees), or a
  radial one (a random centre, radius `RADIAL_RADIUS` of the canvas side).
- "photo": a square crop (`PHOTO_CROP` of the short side, at a random place) of one of the
  photographs that ship inside scikit-image's wheel (`PHOTOS`; the grey ones as grey RGB),
  area-resampled to the canvas.

The synthetic variants draw two colours off the palette (every point between them at least
`PALETTE_DISTANCE` from every palette background's base-to-shade segment) and separable from the
pair's object colours (every point between them at least the vocabulary's
`MIN_OBJECT_BACKGROUND_DISTANCE` from the source's and the target's object colours, the rule
that lets the renderer's masks and the detector read an object by colour). A photo cannot be
separable everywhere; its crop is redrawn (at most `PHOTO_TRIES` times, then the best crop is
kept) until, around every object (`object_regions`), at least `PHOTO_SEPARABLE` of the pixels
lie `PHOTO_SEPARATION` or more from that object's colours.

Only object edits (colour, shape, size) are drawn: a background edit names a palette background
that a foreign background has replaced, so it has no exact target here; `background_pair`
refuses one and `background_pairs` skips them. The captions stay the pair's own: the background
words name the scene's palette background, the only words the model knows, so source and target
prompts differ in the edited word alone, as in the clean set.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from unsample.errors import InputError
from unsample_lab.shapes.edits import EditPair
from unsample_lab.shapes.render import SUPERSAMPLE, composite
from unsample_lab.shapes.robustness import ROBUSTNESS_VARIANTS
from unsample_lab.shapes.scene import OBJECT_GAP, Scene
from unsample_lab.shapes.vocabulary import (
    BACKGROUND_RGB,
    MIN_OBJECT_BACKGROUND_DISTANCE,
    OBJECT_RGB,
)

NEW_BACKGROUNDS: tuple[str, ...] = ("new-pattern", "new-checker", "new-gradient", "photo")
PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel")
NEW_PERIODS: tuple[tuple[float, float], ...] = ((0.035, 0.06), (0.22, 0.32))  # canvas fractions
STRIPE_ANGLES: tuple[tuple[float, float], ...] = ((95.0, 130.0), (140.0, 175.0))
STRIPE_DUTY: tuple[float, float] = (0.2, 0.4)
DOT_FRACTION: tuple[float, float] = (0.2, 0.35)
GRADIENT_TURN: tuple[float, float] = (60.0, 300.0)  # degrees away from "down"
RADIAL_RADIUS: tuple[float, float] = (0.5, 1.0)
PALETTE_DISTANCE = 40.0
COLOUR_CONTRAST: tuple[float, float] = (40.0, 140.0)  # distance between the two colours
COLOUR_TRIES = 5000
PHOTO_CROP: tuple[float, float] = (0.2, 0.6)
PHOTO_SEPARATION = 60.0
PHOTO_SEPARABLE = 0.97
PHOTO_TRIES = 40
REGION_MARGIN = 1.5  # pixels around an object's bounding circle that belong to its region
_PALETTE_SEGMENTS = tuple(
    (np.asarray(base, dtype=np.float64), np.asarray(shade, dtype=np.float64))
    for base, shade in BACKGROUND_RGB.values()
)


@dataclass(frozen=True, eq=False)
class BackgroundPair:
    """An edit pair over a new background: uint8 (H, W, 3) source and target, bool (H, W) mask.

    `background` is the exact float64 (H, W, 3) background under both (what the object judge
    reads objects against); `description` names the drawn parameters; `pair` is the clean pair.
    Arrays are read-only.
    """

    variant: str
    source: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    background: np.ndarray
    description: str
    pair: EditPair


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")


def _check_variant(variant: str) -> int:
    if variant not in NEW_BACKGROUNDS:
        raise InputError(
            f"unknown new background {variant!r}; expected one of: {', '.join(NEW_BACKGROUNDS)}"
        )
    return NEW_BACKGROUNDS.index(variant)


def _uniform_from(rng: np.random.Generator, ranges: Sequence[tuple[float, float]]) -> float:
    low, high = ranges[int(rng.integers(len(ranges)))]
    return float(rng.uniform(low, high))


def object_regions(scenes: Sequence[Scene], size: int) -> list[np.ndarray]:
    """One bool (size, size) region per object index: pixel centres within `REGION_MARGIN` px
    (at most half the scenes' `OBJECT_GAP`) of the largest bounding circle that object has in any
    of `scenes` (its source and target).

    The regions of two objects never overlap (bounding circles are `OBJECT_GAP` apart, 3 px at
    64); every pixel an object covers lies inside its region at 64 px and above.
    """
    centres = (np.arange(size) + 0.5)[:, None], (np.arange(size) + 0.5)[None, :]
    margin = min(REGION_MARGIN, 0.5 * OBJECT_GAP * size)
    regions = []
    for objects in zip(*(scene.objects for scene in scenes)):
        reach = max(o.radius for o in objects) * size + margin
        x, y = objects[0].x * size, objects[0].y * size
        regions.append(np.hypot(centres[1] - x, centres[0] - y) <= reach)
    return regions


def _fine_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Canvas-fraction sample points, `SUPERSAMPLE` x `SUPERSAMPLE` per pixel (as the renderer's)."""
    fine = (np.arange(size)[:, None] + (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE).reshape(-1)
    u, v = np.meshgrid(fine / size, fine / size)
    return u, v


def _pixel_mean(t: np.ndarray, size: int) -> np.ndarray:
    return t.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def _rotated(u: np.ndarray, v: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return c * u - s * v, s * u + c * v


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    d = end - start
    t = np.clip(((points - start) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (start + t[..., None] * d), axis=-1)


def _colours_fit(first: np.ndarray, second: np.ndarray, objects: np.ndarray) -> bool:
    """Whether the segment [first, second] is off the palette and clear of every object colour."""
    contrast = float(np.linalg.norm(second - first))
    if not COLOUR_CONTRAST[0] <= contrast <= COLOUR_CONTRAST[1]:
        return False
    if np.min(_segment_distance(objects, first, second)) < MIN_OBJECT_BACKGROUND_DISTANCE:
        return False
    points = first + np.linspace(0.0, 1.0, 33)[:, None] * (second - first)
    return all(
        np.min(_segment_distance(points, base, shade)) >= PALETTE_DISTANCE
        for base, shade in _PALETTE_SEGMENTS
    )


def _object_colours(pair: EditPair) -> np.ndarray:
    names = {o.color for scene in (pair.source.scene, pair.target.scene) for o in scene.objects}
    return np.array([OBJECT_RGB[n] for n in sorted(names)], dtype=np.float64)


def _draw_colours(rng: np.random.Generator, pair: EditPair) -> tuple[np.ndarray, np.ndarray]:
    objects = _object_colours(pair)
    for _ in range(COLOUR_TRIES):
        first, second = rng.uniform(0.0, 255.0, size=(2, 3))
        if _colours_fit(first, second, objects):
            return np.rint(first), np.rint(second)
    raise InputError(  # not reached for the vocabulary's colours (tests draw many pairs)
        f"no two background colours clear of {len(objects)} object colours in {COLOUR_TRIES} draws"
    )


def _pattern(variant: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """The shade colour's coverage t (size, size) of a synthetic variant, and its description."""
    u, v = _fine_grid(size)
    if variant == "new-pattern":
        angle, period = _uniform_from(rng, STRIPE_ANGLES), _uniform_from(rng, NEW_PERIODS)
        duty, phase = float(rng.uniform(*STRIPE_DUTY)), float(rng.uniform())
        theta = math.radians(angle)  # stripes run along (cos, -sin) on screen; across is (sin, cos)
        across = (u * math.sin(theta) + v * math.cos(theta)) / period + phase
        t = (np.mod(across, 1.0) < duty).astype(np.float64)
        text = f"stripes at {angle:.1f} deg, period {period * size:.1f} px, duty {duty:.2f}"
    elif variant == "new-checker":
        period, angle = _uniform_from(rng, NEW_PERIODS), float(rng.uniform(0.0, 90.0))
        ur, vr = _rotated(u - 0.5, v - 0.5, angle)
        if rng.random() < 0.5:
            t = np.mod(np.floor(ur / period) + np.floor(vr / period), 2.0)
            text = f"checkerboard, cells {period * size:.1f} px, turned {angle:.1f} deg"
        else:
            radius = float(rng.uniform(*DOT_FRACTION)) * period
            du, dv = np.mod(ur, period) - period / 2, np.mod(vr, period) - period / 2
            t = (du * du + dv * dv <= radius * radius).astype(np.float64)
            text = f"dots, radius {radius * size:.1f} px every {period * size:.1f} px, turned {angle:.1f} deg"
    else:  # new-gradient
        if rng.random() < 0.5:
            turn = float(rng.uniform(*GRADIENT_TURN))
            dx, dy = math.sin(math.radians(turn)), math.cos(math.radians(turn))  # (0, 1) is down
            t = np.clip(0.5 + (u - 0.5) * dx + (v - 0.5) * dy, 0.0, 1.0)
            text = f"linear gradient turned {turn:.0f} deg from top-to-bottom"
        else:
            cx, cy = rng.uniform(0.0, 1.0, size=2)
            radius = float(rng.uniform(*RADIAL_RADIUS))
            t = np.clip(np.hypot(u - cx, v - cy) / radius, 0.0, 1.0)
            text = f"radial gradient from ({cx:.2f}, {cy:.2f}), radius {radius * size:.0f} px"
    return _pixel_mean(t, size), text


@functools.lru_cache(maxsize=len(PHOTOS))
def photo(name: str) -> np.ndarray:
    """One of `PHOTOS` as a read-only uint8 (H, W, 3) array, read from scikit-image's own files."""
    if name not in PHOTOS:
        raise InputError(f"unknown photo {name!r}; expected one of: {', '.join(PHOTOS)}")
    import skimage.data  # heavy (scikit-image): loaded on use; these files ship in its wheel

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    image.setflags(write=False)
    return image


def _separable_share(background: np.ndarray, pair: EditPair) -> float:
    """The smallest share, over the objects, of region pixels `PHOTO_SEPARATION` from its colours."""
    scenes = (pair.source.scene, pair.target.scene)
    shares = []
    for i, region in enumerate(object_regions(scenes, background.shape[0])):
        colours = np.array([OBJECT_RGB[s.objects[i].color] for s in scenes], dtype=np.float64)
        pixels = background[region]
        gap = np.min(np.linalg.norm(pixels[:, None] - colours[None], axis=-1), axis=1)
        shares.append(float(np.mean(gap >= PHOTO_SEPARATION)))
    return min(shares)


def _photo_crop(rng: np.random.Generator, pair: EditPair, size: int) -> tuple[np.ndarray, str]:
    best: tuple[float, np.ndarray, str] | None = None
    for _ in range(PHOTO_TRIES):
        name = PHOTOS[int(rng.integers(len(PHOTOS)))]
        image = photo(name)
        h, w = image.shape[:2]
        side = round(float(rng.uniform(*PHOTO_CROP)) * min(h, w))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = Image.fromarray(image[top : top + side, left : left + side])
        background = np.asarray(crop.resize((size, size), Image.Resampling.BOX), dtype=np.float64)
        share = _separable_share(background, pair)
        text = f"photo {name}, {side} px crop at ({left}, {top})"
        if best is None or share > best[0]:
            best = (share, background, text)
        if share >= PHOTO_SEPARABLE:
            break
    assert best is not None
    return best[1], f"{best[2]}, {best[0]:.0%} of object pixels separable"


def new_background(pair: EditPair, variant: str, seed: int) -> tuple[np.ndarray, str]:
    """The float64 (H, W, 3) background of one variant for `pair`, drawn from `seed`, and its description."""
    index = _check_variant(variant)
    _check_seed(seed)
    rng = np.random.default_rng([int(seed), index])
    size = pair.source.image.shape[0]
    if variant == "photo":
        return _photo_crop(rng, pair, size)
    first, second = _draw_colours(rng, pair)
    t, text = _pattern(variant, rng, size)
    colours = f"rgb{tuple(int(c) for c in first)} to rgb{tuple(int(c) for c in second)}"
    return first + t[..., None] * (second - first), f"{text}, {colours}"


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def background_pair(pair: EditPair, variant: str, seed: int) -> BackgroundPair:
    """`pair`'s source and target objects over one new background of `variant`, drawn from `seed`."""
    if not isinstance(pair, EditPair):
        raise TypeError(f"background_pair() takes an EditPair, got {type(pair).__name__}")
    if pair.object_index is None:
        raise InputError(
            f"a {pair.kind} edit changes the palette background a new background replaces: "
            "only object edits (color, shape, size) have an exact target on a new background"
        )
    background, description = new_background(pair, variant, seed)
    source = np.array(composite(pair.source.scene, background).image)
    target = np.array(composite(pair.target.scene, background).image)
    return BackgroundPair(
        variant=variant,
        source=_read_only(source),
        target=_read_only(target),
        mask=_read_only(np.any(source != target, axis=-1)),
        background=_read_only(background),
        description=description,
        pair=pair,
    )


def background_seed(seed: int, pair_index: int, variant: str) -> int:
    """The seed `background_pairs` passes to `background_pair` for one (pair index, variant)."""
    _check_seed(seed)
    key = len(ROBUSTNESS_VARIANTS) + _check_variant(variant)  # apart from the robustness seeds
    state = np.random.SeedSequence([int(seed), int(pair_index), key])
    return int(state.generate_state(1, dtype=np.uint32)[0])


def background_pairs(
    pairs: Sequence[EditPair], seed: int, variants: Sequence[str] = NEW_BACKGROUNDS
) -> list[tuple[int, BackgroundPair]]:
    """Every object-edit pair under every variant, variant-major, with its index in `pairs`."""
    _check_seed(seed)
    if len(variants) == 0:
        raise InputError(f"variants must be a non-empty subset of {NEW_BACKGROUNDS}")
    for variant in variants:
        _check_variant(variant)
    return [
        (i, background_pair(pair, variant, background_seed(seed, i, variant)))
        for variant in variants
        for i, pair in enumerate(pairs)
        if pair.object_index is not None
    ]
