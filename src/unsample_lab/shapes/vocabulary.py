"""The closed vocabulary of the shapes world and the colours behind its words.

Every word a caption can contain is listed here, once: the word classes (``SHAPES``,
``OBJECT_COLORS``, ``BACKGROUND_COLORS``, ``TEXTURES``, ``SIZES``), the grammar's glue words
(``GLUE_WORDS``) and their union ``VOCABULARY``. The other modules take their names from here;
a texture *is* its caption word ("striped", "dotted"), so there is no second naming to keep in
sync.

The palette maps colour words to 8-bit sRGB. Object colours are at least ~100 apart from each
other (Euclidean RGB distance). A background colour is drawn as a base colour plus one shade of
it (darker, or lighter for black) used by the textures, so a textured background stays
recognisably its colour. An object colour may sit on a background only if it is a different
word and is at least ``MIN_OBJECT_BACKGROUND_DISTANCE`` away from every colour between the
background's base and shade (`color_allowed_on`); this keeps objects separable from any
background by colour alone, which is what the renderer's masks and the detector rely on.
"""

from __future__ import annotations

import math

from unsample.errors import InputError

RGB = tuple[int, int, int]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
SIZES: tuple[str, ...] = ("small", "large")
OBJECT_COLORS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "pink",
    "white",
)
BACKGROUND_COLORS: tuple[str, ...] = ("black", "gray", "blue", "brown")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered", "gradient", "dotted")
GLUE_WORDS: tuple[str, ...] = ("a", "and", "on", "background")

VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        GLUE_WORDS + SIZES + OBJECT_COLORS + SHAPES + TEXTURES + BACKGROUND_COLORS
    )
)

OBJECT_RGB: dict[str, RGB] = {
    "red": (210, 30, 40),
    "orange": (245, 125, 20),
    "yellow": (240, 225, 45),
    "green": (40, 170, 60),
    "cyan": (35, 200, 210),
    "blue": (45, 90, 240),
    "purple": (150, 55, 210),
    "pink": (250, 135, 200),
    "white": (240, 240, 240),
}

# background word -> (base colour, texture shade)
BACKGROUND_RGB: dict[str, tuple[RGB, RGB]] = {
    "black": ((20, 20, 20), (65, 65, 65)),
    "gray": ((128, 128, 128), (88, 88, 88)),
    "blue": ((35, 55, 150), (20, 30, 95)),
    "brown": ((115, 70, 35), (75, 45, 20)),
}

MIN_OBJECT_BACKGROUND_DISTANCE = 90.0


def _distance_to_segment(point: RGB, start: RGB, end: RGB) -> float:
    """Euclidean distance from an RGB point to the RGB segment [start, end]."""
    d = [e - s for s, e in zip(start, end)]
    v = [p - s for s, p in zip(start, point)]
    dd = sum(x * x for x in d)
    t = 0.0 if dd == 0 else max(0.0, min(1.0, sum(a * b for a, b in zip(v, d)) / dd))
    return math.dist(point, [s + t * x for s, x in zip(start, d)])


def color_allowed_on(object_color: str, background: str) -> bool:
    """Whether an object of `object_color` may be drawn on a `background` background."""
    if object_color not in OBJECT_RGB:
        raise InputError(f"unknown object colour {object_color!r}; expected one of {OBJECT_COLORS}")
    if background not in BACKGROUND_RGB:
        raise InputError(
            f"unknown background colour {background!r}; expected one of {BACKGROUND_COLORS}"
        )
    if object_color == background:
        return False
    base, shade = BACKGROUND_RGB[background]
    distance = _distance_to_segment(OBJECT_RGB[object_color], base, shade)
    return distance >= MIN_OBJECT_BACKGROUND_DISTANCE
