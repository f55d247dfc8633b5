"""The model card's failure anatomy: which parts of a caption a detection gets right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from unsample.embedded.evaluate import PARTS, caption_parts
from unsample.shapes import caption, detect, random_scene, render


@pytest.fixture(scope="module")
def scene():
    return random_scene(np.random.default_rng(3), n_objects=1, split="heldout")


def test_an_exact_render_is_right_on_every_part(scene) -> None:
    parts = caption_parts(detect(render(scene).image), caption(scene))
    assert tuple(parts) == PARTS and all(parts.values()), parts


@pytest.mark.parametrize("part", ["background", "colors", "shapes"])
def test_one_wrong_word_fails_that_part_only(scene, part: str) -> None:
    from unsample.shapes.vocabulary import BACKGROUND_COLORS, OBJECT_COLORS, SHAPES

    obj = scene.objects[0]
    if part == "background":
        other = next(c for c in BACKGROUND_COLORS if c != scene.background)
        wrong = dataclasses.replace(scene, background=other)
    elif part == "colors":
        other = next(c for c in OBJECT_COLORS if c != obj.color and c != scene.background)
        wrong = dataclasses.replace(scene, objects=(dataclasses.replace(obj, color=other),))
    else:
        other = next(s for s in SHAPES if s != obj.shape)
        wrong = dataclasses.replace(scene, objects=(dataclasses.replace(obj, shape=other),))
    parts = caption_parts(detect(render(scene).image), caption(wrong))
    assert {k for k, ok in parts.items() if not ok} == {part}, parts


def test_a_missing_object_fails_the_count(scene) -> None:
    from unsample.shapes.detect import Detection

    empty = Detection(background=scene.background, texture=scene.texture, objects=())
    parts = caption_parts(empty, caption(scene))
    assert not parts["count"] and parts["background"], parts
