"""Random scenes: symbolic content first (`random_spec`), then geometry (`scene_from_spec`).

Every draw comes from the `np.random.Generator` passed in, so a seed fixes the scene. Words are
uniform (an object's colour uniform among those allowed on the background; the two objects of a
scene must differ). Geometry is uniform over valid placements: centres are drawn uniformly in
the range that keeps each bounding circle inside the canvas, and a pair of centres is rejected
as a whole until the two circles are `OBJECT_GAP` apart. If the pair comes out in the wrong
left-to-right order, both centres are mirrored (x -> 1 - x), which keeps them valid, so the
scene's caption lists the objects in the spec's order. Rotations are uniform in
[-MAX_ANGLE, MAX_ANGLE] degrees (0 for circles).

`random_scene(..., split=...)` draws specs until one lies in the requested caption split;
`all_specs(n)` enumerates the whole caption space (e.g. to list the held-out captions).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from unsample.errors import InputError
from unsample_lab.shapes.captions import SPLITS, in_split
from unsample_lab.shapes.scene import (
    EDGE_MARGIN,
    MAX_ANGLE,
    MAX_OBJECTS,
    OBJECT_GAP,
    SIZE_RADIUS,
    ObjectSpec,
    Scene,
    SceneObject,
    SceneSpec,
)
from unsample_lab.shapes.vocabulary import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    TEXTURES,
    color_allowed_on,
)

_PLACEMENT_BATCH = 256
_MAX_DRAWS = 10_000


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def random_spec(rng: np.random.Generator, n_objects: int | None = None) -> SceneSpec:
    """Draw the symbolic content of a scene: 1 or 2 objects (uniform if `n_objects` is None)."""
    _check_rng(rng)
    if n_objects is None:
        n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    if n_objects not in range(1, MAX_OBJECTS + 1):
        raise InputError(f"n_objects must be 1..{MAX_OBJECTS} or None, got {n_objects!r}")
    background = _pick(rng, BACKGROUND_COLORS)
    texture = _pick(rng, TEXTURES)
    colors = [c for c in OBJECT_COLORS if color_allowed_on(c, background)]
    objects: list[ObjectSpec] = []
    while len(objects) < n_objects:
        obj = ObjectSpec(_pick(rng, SIZES), _pick(rng, colors), _pick(rng, SHAPES))
        if obj not in objects:
            objects.append(obj)
    return SceneSpec(tuple(objects), background, texture)


def _place(radii: list[float], rng: np.random.Generator) -> np.ndarray:
    """Centres (n, 2) for bounding circles of `radii`, uniform over valid placements."""
    r = np.asarray(radii)
    low, high = r + EDGE_MARGIN, 1.0 - r - EDGE_MARGIN
    for _ in range(_MAX_DRAWS // _PLACEMENT_BATCH + 1):
        centres = low[None, :, None] + (high - low)[None, :, None] * rng.random(
            (_PLACEMENT_BATCH, len(r), 2)
        )
        ok = np.ones(_PLACEMENT_BATCH, dtype=bool)
        for i in range(len(r)):
            for j in range(i):
                distance = np.linalg.norm(centres[:, i] - centres[:, j], axis=-1)
                ok &= distance >= r[i] + r[j] + OBJECT_GAP
        if ok.any():
            return centres[int(np.argmax(ok))]
    raise RuntimeError(f"could not place objects of radii {radii} on the canvas")


def scene_from_spec(spec: SceneSpec, rng: np.random.Generator) -> Scene:
    """A scene with random geometry whose caption is the caption of `spec` (same object order)."""
    _check_rng(rng)
    if not isinstance(spec, SceneSpec):
        raise TypeError(f"spec must be a SceneSpec (see parse_caption), got {type(spec).__name__}")
    centres = _place([SIZE_RADIUS[o.size] for o in spec.objects], rng)
    angles = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=len(spec.objects))
    if len(spec.objects) == 2 and centres[0, 0] > centres[1, 0]:
        centres[:, 0] = 1.0 - centres[:, 0]  # mirror: the first object must be the leftmost
    objects = tuple(
        SceneObject(
            o.size,
            o.color,
            o.shape,
            float(centres[i, 0]),
            float(centres[i, 1]),
            0.0 if o.shape == "circle" else float(angles[i]),
        )
        for i, o in enumerate(spec.objects)
    )
    return Scene(objects, spec.background, spec.texture)


def random_scene(
    rng: np.random.Generator, n_objects: int | None = None, split: str = "any"
) -> Scene:
    """Draw a random valid scene whose caption lies in `split` ("train", "heldout" or "any")."""
    _check_rng(rng)
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    for _ in range(_MAX_DRAWS):
        spec = random_spec(rng, n_objects)
        if in_split(spec, split):
            return scene_from_spec(spec, rng)
    raise RuntimeError(f"no scene in split {split!r} after {_MAX_DRAWS} draws")


def all_specs(n_objects: int) -> Iterator[SceneSpec]:
    """Every valid spec with `n_objects` objects (a pair in both orders: two captions)."""
    if n_objects not in range(1, MAX_OBJECTS + 1):
        raise InputError(f"n_objects must be 1..{MAX_OBJECTS}, got {n_objects!r}")
    for background in BACKGROUND_COLORS:
        colors = [c for c in OBJECT_COLORS if color_allowed_on(c, background)]
        objects = [ObjectSpec(s, c, h) for s in SIZES for c in colors for h in SHAPES]
        for texture in TEXTURES:
            for combo in itertools.permutations(objects, n_objects):
                yield SceneSpec(combo, background, texture)
