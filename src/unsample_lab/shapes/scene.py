"""Scenes as frozen data: what a caption says (`SceneSpec`) and where things are (`Scene`).

A `SceneSpec` is the symbolic content of a caption: one or two objects, each a (size, colour,
shape) triple, plus the background colour and texture. A `Scene` adds geometry: each object's
centre (x, y) as a fraction of the canvas side (x to the right, y down, so scenes render at any
resolution) and its rotation in degrees (counter-clockwise on screen).

Both classes check themselves on construction, so every `Scene` that exists is a valid one:
known words, an object colour that differs clearly from the background (`color_allowed_on`),
no two identical objects, every object's bounding circle (radius `SIZE_RADIUS[size]`) at least
`EDGE_MARGIN` inside the canvas and at least `OBJECT_GAP` away from the other object's.
Bounding circles contain the shape at any rotation, so these checks hold for the pixels too.

`Scene.spec` lists the objects left to right (by x, then y): that order is the caption's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from unsample.errors import InputError
from unsample_lab.shapes.vocabulary import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    TEXTURES,
    color_allowed_on,
)

MAX_OBJECTS = 2
# Bounding-circle radius of each size, as a fraction of the canvas side (8 and 13.4 px at 64).
SIZE_RADIUS: dict[str, float] = {"small": 0.125, "large": 0.21}
EDGE_MARGIN = 1.5 / 64  # gap between a bounding circle and the canvas edge
OBJECT_GAP = 3.0 / 64  # gap between two bounding circles
MAX_ANGLE = 30.0  # random scenes draw rotations uniformly from [-MAX_ANGLE, MAX_ANGLE] degrees
_TOLERANCE = 1e-9


def _check_word(word: str, allowed: tuple[str, ...], what: str) -> None:
    if word not in allowed:
        raise InputError(f"unknown {what} {word!r}; expected one of: {', '.join(allowed)}")


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a caption names it: "a <size> <color> <shape>"."""

    size: str
    color: str
    shape: str

    def __post_init__(self) -> None:
        _check_word(self.size, SIZES, "size")
        _check_word(self.color, OBJECT_COLORS, "object colour")
        _check_word(self.shape, SHAPES, "shape")


@dataclass(frozen=True)
class SceneSpec:
    """The symbolic part of a scene: objects (in caption order), background colour, texture."""

    objects: tuple[ObjectSpec, ...]
    background: str
    texture: str

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple):
            raise TypeError(f"objects must be a tuple, got {type(self.objects).__name__}")
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise InputError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        _check_word(self.background, BACKGROUND_COLORS, "background colour")
        _check_word(self.texture, TEXTURES, "texture")
        for obj in self.objects:
            if not isinstance(obj, ObjectSpec):
                raise TypeError(f"objects must be ObjectSpec, got {type(obj).__name__}")
            if not color_allowed_on(obj.color, self.background):
                raise InputError(
                    f"a {obj.color} object is not allowed on a {self.background} background "
                    "(the colours are too close to tell apart)"
                )
        if len(set(self.objects)) != len(self.objects):
            raise InputError("the objects of a scene must differ in size, colour or shape")


@dataclass(frozen=True)
class SceneObject:
    """One placed object: its words plus centre (fractions of the canvas) and angle (degrees)."""

    size: str
    color: str
    shape: str
    x: float
    y: float
    angle: float = 0.0

    def __post_init__(self) -> None:
        ObjectSpec(self.size, self.color, self.shape)  # validates the words
        for name in ("x", "y", "angle"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"object {name} must be a finite number, got {value!r}")

    @property
    def spec(self) -> ObjectSpec:
        return ObjectSpec(self.size, self.color, self.shape)

    @property
    def radius(self) -> float:
        """Bounding-circle radius as a fraction of the canvas side."""
        return SIZE_RADIUS[self.size]


def fits_canvas(x: float, y: float, radius: float) -> bool:
    """Whether a bounding circle lies inside the canvas with `EDGE_MARGIN` to spare."""
    low, high = radius + EDGE_MARGIN - _TOLERANCE, 1.0 - radius - EDGE_MARGIN + _TOLERANCE
    return low <= x <= high and low <= y <= high


def circles_apart(
    first: tuple[float, float, float], second: tuple[float, float, float]
) -> bool:
    """Whether two bounding circles (x, y, radius) are at least `OBJECT_GAP` apart."""
    (x1, y1, r1), (x2, y2, r2) = first, second
    return math.hypot(x1 - x2, y1 - y2) >= r1 + r2 + OBJECT_GAP - _TOLERANCE


@dataclass(frozen=True)
class Scene:
    """A complete, valid scene: placed objects, background colour and texture."""

    objects: tuple[SceneObject, ...]
    background: str
    texture: str

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple):
            raise TypeError(f"objects must be a tuple, got {type(self.objects).__name__}")
        for obj in self.objects:
            if not isinstance(obj, SceneObject):
                raise TypeError(f"objects must be SceneObject, got {type(obj).__name__}")
        SceneSpec(tuple(o.spec for o in self.objects), self.background, self.texture)
        for i, obj in enumerate(self.objects):
            if not fits_canvas(obj.x, obj.y, obj.radius):
                raise InputError(
                    f"object {i} ({obj.size} {obj.shape} at x={obj.x:.3f}, y={obj.y:.3f}) "
                    "is not fully inside the canvas"
                )
            for j in range(i):
                other = self.objects[j]
                if not circles_apart((obj.x, obj.y, obj.radius), (other.x, other.y, other.radius)):
                    raise InputError(f"objects {j} and {i} overlap or are too close")

    @property
    def left_to_right(self) -> tuple[SceneObject, ...]:
        """The objects in caption order: by x, then y."""
        return tuple(sorted(self.objects, key=lambda o: (o.x, o.y)))

    @property
    def spec(self) -> SceneSpec:
        """The symbolic content, objects left to right (the caption's order)."""
        return SceneSpec(tuple(o.spec for o in self.left_to_right), self.background, self.texture)
