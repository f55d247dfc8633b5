"""Tests for the new backgrounds (`unsample_lab.shapes.backgrounds`) and their object judge."""

from __future__ import annotations

import dataclasses
import hashlib
import socket

import numpy as np
import pytest

from unsample.errors import InputError
from unsample_lab.bench import edit as edit_bench
from unsample_lab.shapes.backgrounds import (
    NEW_BACKGROUNDS,
    NEW_PERIODS,
    PHOTOS,
    STRIPE_ANGLES,
    BackgroundPair,
    background_pair,
    background_pairs,
    background_seed,
    object_regions,
    photo,
)
from unsample_lab.shapes.detect import TRUNCATION, detect, detection_matches
from unsample_lab.shapes.edits import EditPair, random_edit_pairs
from unsample_lab.shapes.object_judge import object_judge, objects_read_right
from unsample_lab.shapes.render import PATTERN_PERIOD, background_image, composite, render
from unsample_lab.shapes.robustness import ANGLE_RANGES, SCALE_RANGES
from unsample_lab.shapes.vocabulary import BACKGROUND_COLORS, OBJECT_COLORS, TEXTURES

PER_VARIANT = 12  # object-edit pairs per variant for the judge's ceiling and floor


@pytest.fixture(scope="module")
def pairs() -> list[EditPair]:
    return random_edit_pairs(16, seed=3, split="heldout")  # 12 object edits, 4 background edits


@pytest.fixture(scope="module")
def moved(pairs: list[EditPair]) -> list[BackgroundPair]:
    return [q for _, q in background_pairs(pairs, seed=5)]


def test_clean_pairs_and_their_detections_are_unchanged() -> None:
    # the hash of the first 12 held-out pairs at seed 0, their captions and the detector's
    # readings, taken before the new backgrounds existed: the clean set's figures cannot move
    digest = hashlib.sha256()
    for p in random_edit_pairs(12, seed=0, size=64, split="heldout"):
        for part in (p.source.image, p.target.image, p.mask):
            digest.update(part.tobytes())
        digest.update(p.source_caption.encode())
        digest.update(p.target_caption.encode())
        for image in (p.source.image, p.target.image):
            d = detect(image)
            objects = [(o.shape, o.color, o.size, round(o.score, 9)) for o in d.objects]
            digest.update(repr((d.background, d.texture, objects)).encode())
    assert digest.hexdigest() == "221071136f1838bced999b6d1b8e79f2627448c4d19244b1f77f58cfab3d5862"


def test_composite_over_the_palette_background_is_the_render(pairs: list[EditPair]) -> None:
    for p in pairs:
        scene = p.source.scene
        plate = background_image(scene.background, scene.texture, 64)
        assert np.array_equal(composite(scene, plate).image, render(scene).image)
    with pytest.raises(InputError, match="non-finite"):
        composite(pairs[0].source.scene, np.full((64, 64, 3), np.nan))


def test_pairs_are_deterministic(pairs: list[EditPair]) -> None:
    for variant in NEW_BACKGROUNDS:
        first, again = background_pair(pairs[0], variant, 7), background_pair(pairs[0], variant, 7)
        assert first.description == again.description
        for name in ("source", "target", "mask", "background"):
            assert np.array_equal(getattr(first, name), getattr(again, name))
        other = background_pair(pairs[0], variant, 8)
        assert not np.array_equal(other.background, first.background)
    assert background_seed(5, 0, "photo") == background_seed(5, 0, "photo")
    assert len({background_seed(5, i, v) for i in range(3) for v in NEW_BACKGROUNDS}) == 12


def test_only_object_edits_and_the_mask_is_where_they_differ(
    pairs: list[EditPair], moved: list[BackgroundPair]
) -> None:
    objects = [p for p in pairs if p.object_index is not None]
    assert len(moved) == len(NEW_BACKGROUNDS) * len(objects) == len(NEW_BACKGROUNDS) * PER_VARIANT
    background_edit = next(p for p in pairs if p.kind == "background")
    with pytest.raises(InputError, match="only object edits"):
        background_pair(background_edit, "photo", 0)
    for q in moved:
        assert np.array_equal(q.mask, np.any(q.source != q.target, axis=-1))
        assert q.mask.any()
        scenes = (q.pair.source.scene, q.pair.target.scene)
        regions = object_regions(scenes, 64)
        assert not np.any(q.mask & ~regions[q.pair.object_index])
        # outside every object's region both sides are the background, rounded
        outside = ~np.logical_or.reduce(regions)
        plate = np.clip(np.rint(q.background), 0, 255).astype(np.uint8)
        assert np.array_equal(q.source[outside], plate[outside])
        assert np.array_equal(q.target[outside], plate[outside])


def test_regions_of_two_objects_are_apart(moved: list[BackgroundPair]) -> None:
    for q in moved:
        regions = object_regions((q.pair.source.scene, q.pair.target.scene), 64)
        if len(regions) == 2:
            assert not np.any(regions[0] & regions[1])


def test_patterns_are_ones_the_renderer_never_draws() -> None:
    drawn_angles = [(45.0, 45.0), *ANGLE_RANGES]
    for low, high in STRIPE_ANGLES:
        assert all(high < a or low > b for a, b in drawn_angles)
    drawn_periods = [(PATTERN_PERIOD, PATTERN_PERIOD)] + [
        (PATTERN_PERIOD * a, PATTERN_PERIOD * b) for a, b in SCALE_RANGES
    ]
    for low, high in NEW_PERIODS:
        assert all(high < a or low > b for a, b in drawn_periods)


def test_new_backgrounds_are_not_palette_backgrounds(moved: list[BackgroundPair]) -> None:
    plates = np.stack([background_image(b, t, 64) for b in BACKGROUND_COLORS for t in TEXTURES])
    for q in moved:
        pixels = np.rint(q.background)
        distance = np.linalg.norm(pixels[None] - plates, axis=-1)
        # root mean squared distance (truncated, as the detector's fit) to the closest palette plate
        closest = np.sqrt(np.min(np.mean(np.minimum(distance, TRUNCATION) ** 2, axis=(1, 2))))
        # synthetic backgrounds: every pixel is at least 40 off every palette colour segment
        assert closest >= (20.0 if q.variant == "photo" else TRUNCATION - 0.1), q.description
        # and the palette detector cannot read their exact targets
        assert not detection_matches(detect(q.target), q.pair.target_caption, check_texture=False)


@pytest.mark.parametrize("variant", NEW_BACKGROUNDS)
def test_judge_ceiling_and_floor(moved: list[BackgroundPair], variant: str) -> None:
    chosen = [q for q in moved if q.variant == variant]
    assert len(chosen) == PER_VARIANT
    for q in chosen:
        judge = object_judge(q)
        assert judge(q.target), q.description  # ceiling: the exact target is judged right
        assert not judge(q.source), q.description  # floor: the unedited source is judged wrong


def test_judge_fails_a_missing_or_miscoloured_object(moved: list[BackgroundPair]) -> None:
    for q in moved[:: len(moved) // 8]:
        judge = object_judge(q)
        erased = np.clip(np.rint(q.background), 0, 255).astype(np.uint8)
        assert not judge(erased)
        target = q.pair.target.scene
        obj = target.objects[0]
        others = [c for c in OBJECT_COLORS if c != obj.color]
        wrong = dataclasses.replace(target, objects=(dataclasses.replace(obj, color=others[0]),)
                                    + target.objects[1:])
        image = composite(wrong, q.background).image
        assert not objects_read_right(image, q.background, q.pair.source.scene, target,
                                      check_size=False)


def test_photos_load_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    photo.cache_clear()
    for name in PHOTOS:
        image = photo(name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 256
    with pytest.raises(InputError, match="unknown photo"):
        photo("moon")


def test_bench_cases_of_the_new_backgrounds() -> None:
    bench = edit_bench.EditBench(pairs=8, backgrounds=True, variants=("new-gradient", "photo"))
    cases = edit_bench.load_cases(bench, 64)
    clean = edit_bench.load_cases(edit_bench.EditBench(pairs=8), 64)
    by_name = {c.name: c for c in clean}
    assert [c.variant for c in cases] == ["new-gradient"] * 6 + ["photo"] * 6  # 2 background edits skipped
    for case in cases:
        assert case.kind != "background" and case.judge is not None and case.target is not None
        twin = by_name[case.name]
        assert (case.source_caption, case.target_caption) == (twin.source_caption, twin.target_caption)
        assert case.judge(case.target) and not case.judge(case.source)
    every = edit_bench.EditBench(pairs=4, robustness=True, backgrounds=True)
    assert every.variant_names[-len(NEW_BACKGROUNDS):] == NEW_BACKGROUNDS
