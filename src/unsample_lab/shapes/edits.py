"""Edit pairs: a source scene and a target scene that differ in exactly one named thing.

Kinds (`EDIT_KINDS`):

- "color": one object gets another colour (allowed on the background, not making it identical
  to the other object); geometry unchanged.
- "shape": one object gets another shape; centre, size and angle unchanged (the bounding circle
  is the same, so the scene stays valid).
- "size": one object flips small <-> large around the same centre; only objects that still fit
  the canvas and keep their gap to the other object are candidates.
- "background": either the background colour changes (to one every object's colour is allowed
  on) or the texture changes; objects unchanged.

The edit mask is the set of pixels where the two renders differ. For colour and shape edits it
covers the edited object's footprint(s) including anti-aliased edge pixels; for background
edits it excludes every pixel fully covered by an object.

When the requested edit is impossible for a scene (no object can change size), `make_edit_pair`
raises `EditNotPossible` (a ValueError); `random_edit_pairs` then draws another scene.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unsample.errors import InputError
from unsample_lab.shapes.captions import SPLITS, caption
from unsample_lab.shapes.render import DEFAULT_SIZE, Render, render
from unsample_lab.shapes.sampling import random_scene
from unsample_lab.shapes.scene import SIZE_RADIUS, Scene, circles_apart, fits_canvas
from unsample_lab.shapes.vocabulary import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    SHAPES,
    TEXTURES,
    color_allowed_on,
)

EDIT_KINDS: tuple[str, ...] = ("color", "shape", "size", "background")


class EditNotPossible(ValueError):
    """The requested kind of edit cannot be applied to this scene."""


@dataclass(frozen=True, eq=False)
class EditPair:
    """Source and target renders that differ in one thing, their captions and the edit mask.

    `object_index` is the index (into ``scene.objects``) of the edited object, None for
    background edits. `mask` is a read-only bool (H, W) array: pixels that differ.
    """

    kind: str
    source: Render
    target: Render
    source_caption: str
    target_caption: str
    mask: np.ndarray
    object_index: int | None


def _choice(rng: np.random.Generator, options: Sequence[object]) -> object:
    return options[int(rng.integers(len(options)))]


def _replace_object(scene: Scene, index: int, **changes: object) -> Scene:
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(objects[index], **changes)
    return dataclasses.replace(scene, objects=tuple(objects))


def _differs_from_others(scene: Scene, index: int, spec: tuple[str, str, str]) -> bool:
    return all(
        (o.size, o.color, o.shape) != spec for j, o in enumerate(scene.objects) if j != index
    )


def _object_edit(scene: Scene, kind: str, rng: np.random.Generator) -> tuple[Scene, int]:
    candidates: list[tuple[int, dict[str, object]]] = []
    for i, obj in enumerate(scene.objects):
        if kind == "color":
            for color in OBJECT_COLORS:
                if (
                    color != obj.color
                    and color_allowed_on(color, scene.background)
                    and _differs_from_others(scene, i, (obj.size, color, obj.shape))
                ):
                    candidates.append((i, {"color": color}))
        elif kind == "shape":
            for shape in SHAPES:
                new = (obj.size, obj.color, shape)
                if shape != obj.shape and _differs_from_others(scene, i, new):
                    candidates.append((i, {"shape": shape}))
        else:  # size
            size = "large" if obj.size == "small" else "small"
            radius = SIZE_RADIUS[size]
            fits = fits_canvas(obj.x, obj.y, radius) and all(
                circles_apart((obj.x, obj.y, radius), (o.x, o.y, o.radius))
                for j, o in enumerate(scene.objects)
                if j != i
            )
            if fits and _differs_from_others(scene, i, (size, obj.color, obj.shape)):
                candidates.append((i, {"size": size}))
    if not candidates:
        raise EditNotPossible(f"no object of this scene can take a {kind} edit")
    # pick the object first, then the new value, so each object is equally likely
    index = int(_choice(rng, sorted({i for i, _ in candidates})))
    changes = _choice(rng, [c for i, c in candidates if i == index])
    return _replace_object(scene, index, **changes), index  # type: ignore[arg-type]


def _background_edit(scene: Scene, rng: np.random.Generator) -> Scene:
    colors = [
        b
        for b in BACKGROUND_COLORS
        if b != scene.background and all(color_allowed_on(o.color, b) for o in scene.objects)
    ]
    textures = [t for t in TEXTURES if t != scene.texture]
    if colors and rng.random() < 0.5:
        return dataclasses.replace(scene, background=str(_choice(rng, colors)))
    return dataclasses.replace(scene, texture=str(_choice(rng, textures)))


def make_edit_pair(
    scene: Scene, kind: str, rng: np.random.Generator, size: int = DEFAULT_SIZE
) -> EditPair:
    """Apply one random edit of `kind` to `scene` and render both sides at `size` pixels."""
    if kind not in EDIT_KINDS:
        raise InputError(f"unknown edit kind {kind!r}; expected one of: {', '.join(EDIT_KINDS)}")
    if not isinstance(scene, Scene):
        raise TypeError(f"make_edit_pair() takes a Scene, got {type(scene).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    index: int | None
    if kind == "background":
        target, index = _background_edit(scene, rng), None
    else:
        target, index = _object_edit(scene, kind, rng)
    source_render, target_render = render(scene, size), render(target, size)
    mask = np.any(source_render.image != target_render.image, axis=-1)
    mask.setflags(write=False)
    return EditPair(
        kind=kind,
        source=source_render,
        target=target_render,
        source_caption=caption(scene),
        target_caption=caption(target),
        mask=mask,
        object_index=index,
    )


def random_edit_pairs(
    n: int,
    seed: int,
    kinds: Sequence[str] = EDIT_KINDS,
    size: int = DEFAULT_SIZE,
    split: str = "any",
) -> list[EditPair]:
    """`n` edit pairs, cycling through `kinds`, with source scenes from `split`; fixed by `seed`."""
    if not isinstance(n, int) or n < 0:
        raise InputError(f"n must be a non-negative int, got {n!r}")
    if not kinds or any(k not in EDIT_KINDS for k in kinds):
        raise InputError(f"kinds must be a non-empty subset of {EDIT_KINDS}, got {kinds!r}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    pairs: list[EditPair] = []
    while len(pairs) < n:
        kind = kinds[len(pairs) % len(kinds)]
        scene = random_scene(rng, split=split)
        try:
            pairs.append(make_edit_pair(scene, kind, rng, size))
        except EditNotPossible:
            continue
    return pairs
