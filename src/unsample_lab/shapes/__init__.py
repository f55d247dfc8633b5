"""The shapes world: tiny captioned scenes for training and judging a text-to-image model.

A scene is one or two coloured shapes (circle, square, triangle, star, heart; small or large;
continuous position and rotation; never overlapping, always inside the canvas) on a coloured,
textured background. It has exactly one caption in a closed grammar::

    "a small blue star and a large yellow square on a plain black background"

Modules, each small and importable on its own (nothing runs at import time):

- `vocabulary`: every caption word, by class, and the colour palette.
- `scene`: frozen dataclasses `SceneSpec` (what a caption says) and `Scene` (plus geometry),
  valid by construction.
- `captions`: `caption`, `parse_caption`, and the deterministic train / held-out split.
- `sampling`: `random_scene`, `scene_from_spec`, seeded by a numpy Generator.
- `geometry` / `render`: point-in-shape tests and a supersampled, deterministic renderer.
- `edits`: source/target pairs differing in one thing, with the mask of changed pixels.
- `detect`: an analytic detector that reads a caption's content back from pixels.
- `robustness`, `backgrounds`: edit pairs off the training distribution (perturbed; over new
  backgrounds, judged by `object_judge` against the known background).
"""

from unsample_lab.shapes.captions import HELD_OUT_FRACTION, SPLITS, caption, is_held_out, parse_caption
from unsample_lab.shapes.detect import DetectedObject, Detection, detect, detection_matches
from unsample_lab.shapes.edits import (
    EDIT_KINDS,
    EditNotPossible,
    EditPair,
    make_edit_pair,
    random_edit_pairs,
)
from unsample_lab.shapes.render import Render, background_image, render, render_batch
from unsample_lab.shapes.sampling import all_specs, random_scene, random_spec, scene_from_spec
from unsample_lab.shapes.scene import SIZE_RADIUS, ObjectSpec, Scene, SceneObject, SceneSpec
from unsample_lab.shapes.vocabulary import (
    BACKGROUND_COLORS,
    BACKGROUND_RGB,
    OBJECT_COLORS,
    OBJECT_RGB,
    SHAPES,
    SIZES,
    TEXTURES,
    VOCABULARY,
    color_allowed_on,
)

__all__ = [
    "BACKGROUND_COLORS",
    "BACKGROUND_RGB",
    "EDIT_KINDS",
    "HELD_OUT_FRACTION",
    "OBJECT_COLORS",
    "OBJECT_RGB",
    "SHAPES",
    "SIZES",
    "SIZE_RADIUS",
    "SPLITS",
    "TEXTURES",
    "VOCABULARY",
    "DetectedObject",
    "Detection",
    "EditNotPossible",
    "EditPair",
    "ObjectSpec",
    "Render",
    "Scene",
    "SceneObject",
    "SceneSpec",
    "all_specs",
    "background_image",
    "caption",
    "color_allowed_on",
    "detect",
    "detection_matches",
    "is_held_out",
    "make_edit_pair",
    "parse_caption",
    "random_edit_pairs",
    "random_scene",
    "random_spec",
    "render",
    "render_batch",
    "scene_from_spec",
]
