"""Shape geometry: point-in-shape tests in a unit frame, shared by the renderer and the detector.

Each shape lives in a *unit frame*: y points up, the shape's area centroid is the origin and
every point of the shape is within distance 1 of it (the bounding circle has radius 1; for the
square, triangle, star and heart the farthest points touch it). A scene object of bounding
radius R pixels, centre (cx, cy) and angle theta (degrees, counter-clockwise on screen) covers
the pixel-space point (px, py) when ``inside(shape, *to_unit_frame(px, py, cx, cy, R, theta))``.
Because the bounding circle contains the shape whatever its rotation, placement (inside the
canvas, no overlap) can be checked on circles alone.

The heart is a square rotated 45 degrees with two discs on its upper edges (each disc's
diameter is one edge), shifted so its centroid is the origin and scaled so its tip is at
distance 1. ``UNIT_AREA`` holds each shape's area in the unit frame; the detector uses it to
turn a blob's pixel area into a radius.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from unsample.errors import InputError

CIRCLE_RADIUS = 0.82
SQUARE_HALF_SIDE = math.sqrt(0.5)  # corners on the unit circle
STAR_INNER_RADIUS = 0.47  # outer points on the unit circle
# Heart: diamond |x| + |y - HEART_DIAMOND_Y| <= HEART_HALF_DIAGONAL, plus two discs.
HEART_HALF_DIAGONAL = 1.0 / 1.3134202090350798
HEART_DIAMOND_Y = -0.3134202090350798 * HEART_HALF_DIAGONAL
HEART_DISC_RADIUS = HEART_HALF_DIAGONAL / math.sqrt(2.0)

UNIT_AREA: dict[str, float] = {
    "circle": math.pi * CIRCLE_RADIUS**2,
    "square": 4.0 * SQUARE_HALF_SIDE**2,
    "triangle": 3.0 * math.sqrt(3.0) / 4.0,
    "star": 5.0 * STAR_INNER_RADIUS * math.sin(math.radians(36.0)),
    "heart": 2.0686370870494897,  # measured on a fine grid; checked by the tests
}

# Rotational symmetry period of each shape, in degrees (the circle's is arbitrary).
SYMMETRY_DEGREES: dict[str, float] = {
    "circle": 360.0,
    "square": 90.0,
    "triangle": 120.0,
    "star": 72.0,
    "heart": 360.0,
}


def to_unit_frame(
    px: np.ndarray, py: np.ndarray, cx: float, cy: float, radius: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Map pixel-space points (x right, y down) into an object's unit frame (y up, unrotated)."""
    dx = (px - cx) / radius
    dy = (cy - py) / radius
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # rotate by -angle
    return c * dx + s * dy, -s * dx + c * dy


def inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean array: which unit-frame points (x, y) lie inside `shape`."""
    if shape == "circle":
        return x * x + y * y <= CIRCLE_RADIUS**2
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) <= SQUARE_HALF_SIDE
    if shape == "triangle":
        return _inside_triangle(x, y)
    if shape == "star":
        return _inside_star(x, y)
    if shape == "heart":
        return _inside_heart(x, y)
    raise InputError(f"unknown shape {shape!r}; expected circle, square, triangle, star or heart")


def _inside_triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Equilateral, vertex up, circumradius 1: each edge is at distance 1/2 from the centre,
    # with outward normals at -90, 30 and 150 degrees.
    result = y >= -0.5
    for degrees in (30.0, 150.0):
        nx, ny = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        result &= nx * x + ny * y <= 0.5
    return result


def _inside_star(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Fold the angle into [0, 36] degrees measured from the nearest outer point (one points up);
    # there the boundary is the segment from the point A = (1, 0) to the inner vertex
    # B = r_in * (cos 36, sin 36), and the inside is the origin's side of it.
    r = np.hypot(x, y)
    theta = np.degrees(np.arctan2(y, x)) - 90.0
    folded = np.radians(np.abs(np.mod(theta + 36.0, 72.0) - 36.0))
    fx, fy = r * np.cos(folded), r * np.sin(folded)
    bx = STAR_INNER_RADIUS * math.cos(math.radians(36.0))
    by = STAR_INNER_RADIUS * math.sin(math.radians(36.0))
    # cross(B - A, P - A) is positive on the origin's side
    cross = (bx - 1.0) * fy - by * (fx - 1.0)
    return cross >= 0.0


def _inside_heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a = HEART_HALF_DIAGONAL
    yd = HEART_DIAMOND_Y
    r2 = HEART_DISC_RADIUS**2
    diamond = np.abs(x) + np.abs(y - yd) <= a
    disc_y = yd + a / 2.0
    left = (x + a / 2.0) ** 2 + (y - disc_y) ** 2 <= r2
    right = (x - a / 2.0) ** 2 + (y - disc_y) ** 2 <= r2
    return diamond | left | right


PROFILE_STEPS = 3600  # radial profile resolution: 0.1 degree


@functools.lru_cache(maxsize=None)
def radial_profile(shape: str) -> np.ndarray:
    """Distance from the centroid to the boundary of `shape` along rays at 0.1-degree steps.

    Every shape here is star-shaped about its centroid (each ray leaves the shape once), so
    ``r <= radial_profile(shape)[ray]`` is the same point-in-shape test in polar coordinates;
    the detector uses it to rotate templates by shifting an index. Found by bisection on `inside`.
    """
    theta = np.radians(np.arange(PROFILE_STEPS) * (360.0 / PROFILE_STEPS))
    low, high = np.zeros(PROFILE_STEPS), np.full(PROFILE_STEPS, 1.0 + 1e-9)
    for _ in range(40):
        middle = (low + high) / 2
        hit = inside(shape, middle * np.cos(theta), middle * np.sin(theta))
        low, high = np.where(hit, middle, low), np.where(hit, high, middle)
    profile = low
    profile.setflags(write=False)
    return profile
