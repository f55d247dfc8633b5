"""Tests of the shapes world: vocabulary, scenes, captions, split, renderer, edits, detector."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

import unsample_lab.shapes as S
from unsample_lab.shapes.geometry import UNIT_AREA, inside, radial_profile
from unsample_lab.shapes.render import object_coverage
from unsample_lab.shapes.scene import EDGE_MARGIN, OBJECT_GAP

DEMO_CAPTIONS = (
    "a large red circle on a striped blue background",
    "a small blue star and a large yellow square on a plain black background",
    "a large red circle on a striped gray background",
)


def _scenes(seed: int, n: int, **kwargs: object) -> list[S.Scene]:
    rng = np.random.default_rng(seed)
    return [S.random_scene(rng, **kwargs) for _ in range(n)]


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding, float64 out."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(t * np.take(padded, range(i, i + n), axis=axis) for i, t in enumerate(taps))
    return out


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slight blur (sigma 0.7 px) then Gaussian noise of std 8/255."""
    noisy = _blur(image, 0.7) + rng.normal(0.0, 8.0, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# --- vocabulary and geometry -------------------------------------------------------------


def test_vocabulary_is_the_union_of_the_word_classes() -> None:
    classes = S.SHAPES + S.SIZES + S.OBJECT_COLORS + S.BACKGROUND_COLORS + S.TEXTURES
    assert set(S.VOCABULARY) == set(classes) | {"a", "and", "on", "background"}
    assert len(S.VOCABULARY) == len(set(S.VOCABULARY))
    assert {"red", "green", "blue", "yellow"} <= set(S.OBJECT_COLORS)
    assert len(S.OBJECT_COLORS) >= 8
    assert {"blue", "gray", "black"} <= set(S.BACKGROUND_COLORS)
    assert set(S.OBJECT_RGB) == set(S.OBJECT_COLORS)
    assert set(S.BACKGROUND_RGB) == set(S.BACKGROUND_COLORS)


def test_object_colours_are_clearly_distinct() -> None:
    rgb = np.array([S.OBJECT_RGB[c] for c in S.OBJECT_COLORS], dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert distances[~np.eye(len(rgb), dtype=bool)].min() >= 100


def test_object_colour_never_matches_its_background() -> None:
    for background in S.BACKGROUND_COLORS:
        allowed = [c for c in S.OBJECT_COLORS if S.color_allowed_on(c, background)]
        assert background not in allowed
        assert len(allowed) >= 6


@pytest.mark.parametrize("shape", S.SHAPES)
def test_unit_shapes_are_centred_bounded_and_match_their_area(shape: str) -> None:
    grid = np.linspace(-1.1, 1.1, 1501)
    x, y = np.meshgrid(grid, grid)
    hit = inside(shape, x, y)
    cell = (grid[1] - grid[0]) ** 2
    assert hit.sum() * cell == pytest.approx(UNIT_AREA[shape], rel=0.01)
    assert abs(x[hit].mean()) < 0.01 and abs(y[hit].mean()) < 0.01
    assert np.hypot(x[hit], y[hit]).max() <= 1.0 + 1e-9
    # the polar profile used by the detector describes the same set
    profile = radial_profile(shape)
    theta = np.degrees(np.arctan2(y, x)) % 360.0
    index = np.rint(theta * len(profile) / 360.0).astype(int) % len(profile)
    polar = np.hypot(x, y) <= profile[index]
    assert np.mean(polar != hit) < 0.005


# --- scenes, sampling, determinism -------------------------------------------------------


def test_same_seed_same_scenes_and_pixels() -> None:
    first, second = _scenes(3, 50), _scenes(3, 50)
    assert first == second
    batch = S.render_batch(first)
    assert batch.shape == (50, 64, 64, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch, S.render_batch(second))
    assert np.array_equal(S.render(first[0]).image, batch[0])


def test_scenes_are_inside_the_canvas_and_do_not_overlap() -> None:
    size = 64
    ratios = []
    for scene in _scenes(4, 300):
        rendered = S.render(scene, size)
        assert 1 <= len(scene.objects) <= 2
        assert len(rendered.masks) == len(scene.objects)
        for obj, mask in zip(scene.objects, rendered.masks):
            assert mask.dtype == bool and mask.shape == (size, size)
            r = obj.radius + EDGE_MARGIN
            assert r <= obj.x <= 1 - r and r <= obj.y <= 1 - r
            # no object pixel on the border, and the mask's area is the shape's area
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
            expected = UNIT_AREA[obj.shape] * (obj.radius * size) ** 2
            assert mask.sum() == pytest.approx(expected, rel=0.2)  # pixel quantisation
            ratios.append(mask.sum() / expected)
            assert S.color_allowed_on(obj.color, scene.background)
        if len(scene.objects) == 2:
            a, b = scene.objects
            gap = np.hypot(a.x - b.x, a.y - b.y) - a.radius - b.radius
            assert gap >= OBJECT_GAP - 1e-9
            assert not (rendered.masks[0] & rendered.masks[1]).any()
            assert a.spec != b.spec
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.02)


def test_scene_rejects_invalid_geometry_and_words() -> None:
    circle = S.SceneObject("large", "red", "circle", 0.5, 0.5)
    S.Scene((circle,), "gray", "plain")
    with pytest.raises(ValueError, match="inside the canvas"):
        S.Scene((dataclasses.replace(circle, x=0.1),), "gray", "plain")
    with pytest.raises(ValueError, match="overlap"):
        other = S.SceneObject("small", "blue", "star", 0.6, 0.5)
        S.Scene((circle, other), "gray", "plain")
    with pytest.raises(ValueError, match="not allowed on a blue background"):
        S.Scene((dataclasses.replace(circle, color="blue"),), "blue", "plain")
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        S.SceneObject("large", "red", "hexagon", 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown texture"):
        S.Scene((circle,), "gray", "wavy")
    with pytest.raises(ValueError, match="1 to 2 objects"):
        S.Scene((), "gray", "plain")
    with pytest.raises(TypeError, match="tuple"):
        S.Scene([circle], "gray", "plain")  # type: ignore[arg-type]


def test_sampling_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_objects"):
        S.random_scene(rng, n_objects=3)
    with pytest.raises(ValueError, match="unknown split"):
        S.random_scene(rng, split="test")
    with pytest.raises(TypeError, match="numpy Generator"):
        S.random_scene(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be an int"):
        S.render(S.random_scene(rng), size=8)


# --- captions -----------------------------------------------------------------------------


def test_caption_round_trip_and_vocabulary_closure() -> None:
    rng = np.random.default_rng(5)
    vocabulary = set(S.VOCABULARY)
    for scene in _scenes(5, 500):
        text = S.caption(scene)
        assert set(text.split()) <= vocabulary
        assert S.parse_caption(text) == scene.spec
        assert S.caption(S.scene_from_spec(scene.spec, rng)) == text
    assert {len(s.objects) for s in _scenes(6, 100)} == {1, 2}


def test_caption_lists_objects_left_to_right() -> None:
    left = S.SceneObject("small", "blue", "star", 0.2, 0.7)
    right = S.SceneObject("large", "yellow", "square", 0.7, 0.3)
    scene = S.Scene((right, left), "black", "plain")
    assert S.caption(scene) == DEMO_CAPTIONS[1]


@pytest.mark.parametrize("text", DEMO_CAPTIONS)
def test_demo_captions(text: str) -> None:
    spec = S.parse_caption(text)
    scene = S.scene_from_spec(spec, np.random.default_rng(0))
    assert S.caption(scene) == text
    assert S.detection_matches(S.detect(S.render(scene).image), text)
    assert not S.is_held_out(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "ends early"),
        ("a large red circle", "ends early"),
        ("a huge red circle on a plain gray background", "expected a size"),
        ("a large grey circle on a plain gray background", "expected an object colour"),
        ("a large red hexagon on a plain gray background", "expected a shape"),
        ("a large red circle on a wavy gray background", "expected a texture"),
        ("a large red circle on a plain red background", "expected a background colour"),
        ("a large red circle on a plain gray background please", "unexpected words"),
        ("a large red circle and a small blue star and a small green heart on a plain gray "
         "background", "expected 'on'"),
        ("a large blue circle on a plain blue background", "not a valid scene"),
        ("a small red star and a small red star on a plain gray background", "must differ"),
    ],
)
def test_parse_caption_rejects_text_outside_the_grammar(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S.parse_caption(text)


# --- held-out split -----------------------------------------------------------------------


def test_held_out_split_is_deterministic_and_about_ten_percent() -> None:
    singles = list(S.all_specs(1))
    fraction = np.mean([S.is_held_out(s) for s in singles])
    assert 0.06 <= fraction <= 0.14
    rng = np.random.default_rng(7)
    pairs = [S.random_spec(rng, n_objects=2) for _ in range(5000)]
    fraction = np.mean([S.is_held_out(S.caption(s)) for s in pairs])
    assert 0.08 <= fraction <= 0.12
    # deterministic, and the mirrored caption of the same content is in the same split
    for spec in pairs[:500]:
        mirrored = dataclasses.replace(spec, objects=spec.objects[::-1])
        assert S.is_held_out(spec) == S.is_held_out(S.caption(spec)) == S.is_held_out(mirrored)


def test_random_scene_draws_from_the_requested_split() -> None:
    assert all(S.is_held_out(s) for s in _scenes(8, 50, split="heldout"))
    assert not any(S.is_held_out(s) for s in _scenes(8, 200, split="train"))


# --- edits --------------------------------------------------------------------------------


def _full_coverage(scene: S.Scene, index: int, size: int = 64) -> np.ndarray:
    (top, left), alpha = object_coverage(scene.objects[index], size)
    out = np.zeros((size, size), dtype=bool)
    out[top : top + alpha.shape[0], left : left + alpha.shape[1]] = alpha >= 1.0
    return out


def _any_coverage(scene: S.Scene, index: int, size: int = 64) -> np.ndarray:
    (top, left), alpha = object_coverage(scene.objects[index], size)
    out = np.zeros((size, size), dtype=bool)
    out[top : top + alpha.shape[0], left : left + alpha.shape[1]] = alpha > 0.0
    return out


@pytest.mark.parametrize("kind", S.EDIT_KINDS)
def test_edit_pairs_change_exactly_the_named_thing(kind: str) -> None:
    for pair in S.random_edit_pairs(40, seed=11, kinds=(kind,)):
        source, target = pair.source.scene, pair.target.scene
        assert pair.kind == kind
        assert pair.source_caption == S.caption(source) != pair.target_caption
        assert pair.target_caption == S.caption(target)
        assert np.array_equal(pair.mask, np.any(pair.source.image != pair.target.image, axis=-1))
        assert pair.mask.any()
        if kind == "background":
            assert pair.object_index is None
            assert source.objects == target.objects
            assert (source.background != target.background) != (source.texture != target.texture)
            for i in range(len(source.objects)):
                assert not (pair.mask & _full_coverage(source, i)).any()
            continue
        i = pair.object_index
        assert i is not None
        assert (source.background, source.texture) == (target.background, target.texture)
        for j, (a, b) in enumerate(zip(source.objects, target.objects)):
            if j != i:
                assert a == b
                assert not (pair.mask & pair.source.masks[j]).any()
        a, b = source.objects[i], target.objects[i]
        assert (a.x, a.y, a.angle) == (b.x, b.y, b.angle)
        changed = {f for f in ("size", "color", "shape") if getattr(a, f) != getattr(b, f)}
        assert changed == {kind}
        footprint = _any_coverage(source, i) | _any_coverage(target, i)
        assert not (pair.mask & ~footprint).any()
        if kind == "color":
            # the changed pixels are the object's mask plus its anti-aliased rim
            assert np.array_equal(pair.source.masks[i], pair.target.masks[i])
            assert not (pair.source.masks[i] & ~pair.mask).any()
        else:
            # every pixel that enters or leaves the object's mask is in the edit mask
            assert not ((pair.source.masks[i] ^ pair.target.masks[i]) & ~pair.mask).any()


def test_random_edit_pairs_are_deterministic() -> None:
    first, second = S.random_edit_pairs(12, seed=3), S.random_edit_pairs(12, seed=3)
    assert [p.kind for p in first] == list(S.EDIT_KINDS) * 3
    for a, b in zip(first, second):
        assert (a.source_caption, a.target_caption) == (b.source_caption, b.target_caption)
        assert np.array_equal(a.target.image, b.target.image)
        assert np.array_equal(a.mask, b.mask)


def test_size_edit_that_cannot_fit_is_refused() -> None:
    big = S.SceneObject("small", "red", "circle", 0.16, 0.5)  # a large one would leave the canvas
    with pytest.raises(S.EditNotPossible, match="size edit"):
        S.make_edit_pair(S.Scene((big,), "gray", "plain"), "size", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown edit kind"):
        S.make_edit_pair(S.Scene((big,), "gray", "plain"), "move", np.random.default_rng(0))


# --- detector -----------------------------------------------------------------------------


def test_detector_accuracy_on_clean_renders() -> None:
    scenes = _scenes(2024, 1000)
    detections = [S.detect(image) for image in S.render_batch(scenes)]
    full = np.mean([S.detection_matches(d, s) for d, s in zip(detections, scenes)])
    texture = np.mean([d.texture == s.texture for d, s in zip(detections, scenes)])
    print(f"detector on 1000 clean renders: full match {full:.3f}, texture {texture:.3f}")
    assert full >= 0.99  # measured 1.000 (shapes, colours, sizes, background colour, texture)


def test_detector_recovers_the_renderers_masks() -> None:
    for scene in _scenes(31, 100):
        rendered = S.render(scene)
        found = S.detect(rendered.image).objects
        assert len(found) == len(scene.objects)
        for obj, mask in zip(scene.objects, rendered.masks):
            match = min(found, key=lambda d: np.hypot(d.x - obj.x, d.y - obj.y))
            assert np.hypot(match.x - obj.x, match.y - obj.y) < 0.02
            assert np.array_equal(match.mask, mask)


def test_detector_is_robust_to_noise_and_blur() -> None:
    scenes = _scenes(77, 300)
    rng = np.random.default_rng(78)
    images = [_degrade(image, rng) for image in S.render_batch(scenes)]
    detections = [S.detect(image) for image in images]
    full = np.mean([S.detection_matches(d, s) for d, s in zip(detections, scenes)])
    print(f"detector on 300 blurred+noisy renders: full match {full:.3f}")
    assert full >= 0.99  # measured 1.000 on 1000 such images


def test_detection_matches_compares_multisets() -> None:
    scene = S.scene_from_spec(S.parse_caption(DEMO_CAPTIONS[1]), np.random.default_rng(1))
    detection = S.detect(S.render(scene).image)
    assert S.detection_matches(detection, scene)
    assert S.detection_matches(detection, scene.spec)
    swapped = "a large yellow square and a small blue star on a plain black background"
    assert S.detection_matches(detection, swapped)
    assert not S.detection_matches(detection, "a large blue star and a large yellow square on "
                                   "a plain black background")
    assert S.detection_matches(detection, "a large blue star and a large yellow square on "
                               "a plain black background", check_size=False)
    assert not S.detection_matches(detection, DEMO_CAPTIONS[1].replace("plain", "dotted"))
    assert S.detection_matches(
        detection, DEMO_CAPTIONS[1].replace("plain", "dotted"), check_texture=False
    )
    assert not S.detection_matches(detection, "a small blue star on a plain black background")


def test_detect_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        S.detect(np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        S.detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="square"):
        S.detect(np.zeros((64, 32, 3), dtype=np.uint8))


def test_render_and_detect_are_fast_enough() -> None:
    scenes = _scenes(9, 1000)
    start = time.perf_counter()
    S.render_batch(scenes)
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0, f"rendering 1000 scenes took {elapsed:.1f} s"
