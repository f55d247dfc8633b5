"""The shapes world's scenes for the web page (``unsample ui``), found by the library through the
``unsample.scenes`` entry point (pyproject.toml: ``shapes = "unsample_lab.ui_scenes:SCENES"``).

`SCENES` is an `unsample.ui.scenes.SceneProvider`: the captions the page offers, their rendering
(`unsample_lab.shapes.render`, the geometry seeded) and, for a model of the shapes world (its
tokenizer knows every caption word: the embedded models), the caption of the scene the analytic
detector (`unsample_lab.shapes.detect`) reads in an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from unsample_lab.shapes import VOCABULARY, ObjectSpec, SceneSpec, caption, detect, parse_caption, render, scene_from_spec

CAPTIONS: tuple[str, ...] = (
    "a large red circle on a plain gray background",
    "a large red circle on a striped blue background",
    "a small blue star and a large yellow square on a plain black background",
    "a large yellow star on a plain blue background",
    "a small white heart on a dotted brown background",
)
"""The scenes the page offers (training captions of the embedded model)."""


@dataclass(frozen=True)
class ShapesScenes:
    """Shapes-world scenes: render a caption, read a caption back from an image."""

    captions: tuple[str, ...] = CAPTIONS

    def render(self, caption: str, size: int, seed: int = 0) -> Image.Image:
        """The scene ``caption`` describes, ``size`` pixels a side, its layout drawn with ``seed``."""
        scene = scene_from_spec(parse_caption(caption), np.random.default_rng(seed))
        return Image.fromarray(render(scene, size=size).image)

    def suggest(self, vocabulary: list[str] | None, image: Image.Image) -> str | None:
        """The caption of the scene detected in ``image`` when ``vocabulary`` holds every word of
        the shapes world; None for other models or when no valid scene is read."""
        if vocabulary is None or not set(VOCABULARY) <= set(vocabulary):
            return None
        try:
            found = detect(np.asarray(image.convert("RGB"), dtype=np.uint8))
            spec = SceneSpec(tuple(ObjectSpec(o.size, o.color, o.shape) for o in found.objects), found.background,
                             found.texture)
        except ValueError:  # not a square image of side >= 16, or no valid scene in it
            return None
        return caption(spec)


SCENES = ShapesScenes()
"""The provider the ``unsample.scenes`` entry point names."""
