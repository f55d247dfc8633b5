"""Tests for the robustness set: styled rendering, each variant's exact effect, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from unsample_lab.shapes.edits import EditPair, make_edit_pair, random_edit_pairs
from unsample_lab.shapes.render import BackgroundStyle, background_image, render
from unsample_lab.shapes.robustness import (
    ANGLE_RANGES,
    ROBUSTNESS_VARIANTS,
    SCALE_RANGES,
    PerturbedPair,
    pair_seed,
    perturb_pair,
    robustness_pairs,
)
from unsample_lab.shapes.sampling import random_scene
from unsample_lab.shapes.scene import Scene, SceneObject
from unsample_lab.shapes.vocabulary import BACKGROUND_COLORS, BACKGROUND_RGB, OBJECT_RGB, TEXTURES


def _pair(texture: str, background: str = "gray", kind: str = "color", seed: int = 0) -> EditPair:
    obj = SceneObject("large", "red", "circle", 0.35, 0.4, 10.0)
    scene = Scene(objects=(obj,), background=background, texture=texture)
    return make_edit_pair(scene, kind, np.random.default_rng(seed))


def _style(perturbed: PerturbedPair) -> BackgroundStyle:
    assert perturbed.style is not None
    return perturbed.style


@pytest.fixture(scope="module")
def pairs() -> list[EditPair]:
    return random_edit_pairs(4, seed=11)


def test_variant_names() -> None:
    assert ROBUSTNESS_VARIANTS == (
        "stripe-angle", "stripe-width", "off-palette", "noise", "blur", "jpeg"
    )


def test_identity_style_reproduces_default_render() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene = random_scene(rng)
        for size in (64, 37):
            default = render(scene, size).image
            assert np.array_equal(render(scene, size, style=BackgroundStyle()).image, default)
    for background in BACKGROUND_COLORS:
        for texture in TEXTURES:
            assert np.array_equal(
                background_image(background, texture, 53, style=BackgroundStyle()),
                background_image(background, texture, 53),
            )


@pytest.mark.parametrize("texture", TEXTURES)
def test_stripes_at_45_degrees_scale_1_are_the_default(texture: str) -> None:
    style = BackgroundStyle(angle_deg=45.0, period_scale=1.0, colour_offset=(0, 0, 0))
    for background in BACKGROUND_COLORS:
        for size in (64, 41):
            assert np.array_equal(
                background_image(background, texture, size, style=style),
                background_image(background, texture, size),
            )
    scene = _pair(texture).source.scene
    assert np.array_equal(render(scene, style=style).image, render(scene).image)


@pytest.mark.parametrize("background", BACKGROUND_COLORS)
def test_quarter_turn_of_the_grids_is_exact(background: str) -> None:
    # at 64 px no sample lies on a cell edge: a quarter turn keeps the dot lattice and
    # swaps the checkerboard's two colours
    base, shade = (np.asarray(c, dtype=np.float64) for c in BACKGROUND_RGB[background])
    quarter = BackgroundStyle(angle_deg=135.0)
    dotted = background_image(background, "dotted", 64)
    assert np.array_equal(background_image(background, "dotted", 64, style=quarter), dotted)
    checks = background_image(background, "checkered", 64)
    turned = background_image(background, "checkered", 64, style=quarter)
    t = np.mod(np.arange(64)[:, None] // 8 + np.arange(64)[None, :] // 8, 2)[..., None]
    assert np.array_equal(checks, base + t * (shade - base))
    assert np.array_equal(turned, base + (1 - t) * (shade - base))


def test_period_scale_two_doubles_the_checks() -> None:
    base, shade = (np.asarray(c, dtype=np.float64) for c in BACKGROUND_RGB["brown"])
    image = background_image("brown", "checkered", 64, style=BackgroundStyle(period_scale=2.0))
    t = np.mod(np.arange(64)[:, None] // 16 + np.arange(64)[None, :] // 16, 2)[..., None]
    assert np.array_equal(image, base + t * (shade - base))


def test_background_style_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="period_scale"):
        BackgroundStyle(period_scale=0.0)
    with pytest.raises(ValueError, match="colour_offset"):
        BackgroundStyle(colour_offset=(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="angle_deg"):
        BackgroundStyle(angle_deg=float("nan"))


@pytest.mark.parametrize("variant", ROBUSTNESS_VARIANTS)
def test_same_seed_same_bytes_and_mask_is_the_difference(variant: str) -> None:
    pair = _pair("striped")
    first, second = perturb_pair(pair, variant, 7), perturb_pair(pair, variant, 7)
    assert first.source.tobytes() == second.source.tobytes()
    assert first.target.tobytes() == second.target.tobytes()
    assert first.description == second.description and first.variant == variant
    for image in (first.source, first.target):
        assert image.shape == pair.source.image.shape and image.dtype == np.uint8
        assert not image.flags.writeable
    assert first.mask.dtype == bool and not first.mask.flags.writeable
    assert np.array_equal(first.mask, np.any(first.source != first.target, axis=-1))
    assert first.mask.any()


@pytest.mark.parametrize("variant", ["stripe-angle", "stripe-width", "off-palette", "noise"])
def test_other_seed_draws_other_parameters(variant: str) -> None:
    pair = _pair("striped")
    first, other = perturb_pair(pair, variant, 7), perturb_pair(pair, variant, 8)
    assert first.source.tobytes() != other.source.tobytes()
    if variant != "noise":
        assert first.style != other.style and first.description != other.description


def test_drawn_angles_and_scales_stay_off_the_training_distribution() -> None:
    pair = _pair("plain")
    angles = [_style(perturb_pair(pair, "stripe-angle", s)).angle_deg for s in range(40)]
    scales = [_style(perturb_pair(pair, "stripe-width", s)).period_scale for s in range(40)]
    for values, ranges in ((angles, ANGLE_RANGES), (scales, SCALE_RANGES)):
        hits = [[lo <= x <= hi for lo, hi in ranges] for x in values]
        assert all(any(h) for h in hits)
        assert all(any(h[i] for h in hits) for i in range(len(ranges)))  # both ranges drawn


def test_stripe_angle_leaves_plain_backgrounds_unchanged() -> None:
    pair = _pair("plain")
    perturbed = perturb_pair(pair, "stripe-angle", 3)
    assert np.array_equal(perturbed.source, pair.source.image)
    assert np.array_equal(perturbed.target, pair.target.image)


@pytest.mark.parametrize("background", BACKGROUND_COLORS)
def test_off_palette_shifts_plain_background_by_the_offset(background: str) -> None:
    pair = _pair("plain", background=background)
    base = np.asarray(BACKGROUND_RGB[background][0])
    for seed in range(5):
        perturbed = perturb_pair(pair, "off-palette", seed)
        offset = np.asarray(_style(perturbed).colour_offset)
        assert np.all((np.abs(offset) >= 18) & (np.abs(offset) <= 30))
        assert np.array_equal(pair.source.image[0, 0], base)  # the corner is background
        expected = np.clip(base + offset, 0, 255)
        assert np.array_equal(perturbed.source[0, 0], expected)
        assert np.array_equal(perturbed.target[0, 0], expected)
        # fully covered object pixels keep the object's colour
        sides = ((pair.source.image, perturbed.source), (pair.target.image, perturbed.target))
        for clean, new in sides:
            for color in OBJECT_RGB.values():
                solid = np.all(clean == np.asarray(color), axis=-1)
                assert np.array_equal(new[solid], clean[solid])
    unclipped = perturb_pair(_pair("plain", background="gray"), "off-palette", 0)
    shift = unclipped.source[0, 0].astype(int) - 128
    assert np.array_equal(shift, _style(unclipped).colour_offset)


def test_off_palette_offsets_the_new_background_of_a_background_edit() -> None:
    pair = next(
        p for p in random_edit_pairs(12, seed=2, kinds=("background",))
        if p.source.scene.background != p.target.scene.background
    )
    perturbed = perturb_pair(pair, "off-palette", 4)
    style = BackgroundStyle(colour_offset=_style(perturbed).colour_offset)
    offset = np.asarray(style.colour_offset)
    sides = ((pair.source.scene, perturbed.source), (pair.target.scene, perturbed.target))
    for scene, image in sides:
        assert np.array_equal(image, render(scene, style=style).image)
        corner = background_image(scene.background, scene.texture)[0, 0]
        shifted = background_image(scene.background, scene.texture, style=style)[0, 0]
        if scene.texture == "plain":
            assert np.array_equal(shifted, np.clip(corner + offset, 0, 255))


def test_noise_is_one_field_added_to_both(pairs: list[EditPair]) -> None:
    for pair in pairs:
        perturbed = perturb_pair(pair, "noise", 5)
        d_source = perturbed.source.astype(int) - pair.source.image
        d_target = perturbed.target.astype(int) - pair.target.image
        outside = ~pair.mask
        assert np.array_equal(d_source[outside], d_target[outside])
        # away from clipping the rounded field is identical everywhere, inside the mask too
        free = (perturbed.source > 0) & (perturbed.source < 255)
        free &= (perturbed.target > 0) & (perturbed.target < 255)
        assert np.array_equal(d_source[free], d_target[free])
        assert 3.8 < d_source[free].std() < 4.2
        assert np.array_equal(perturbed.mask[outside], np.zeros(outside.sum(), dtype=bool))


@pytest.mark.parametrize("variant", ["blur", "jpeg"])
def test_blur_and_jpeg_change_the_pixels_but_not_the_format(
    variant: str, pairs: list[EditPair]
) -> None:
    for pair in pairs:
        perturbed = perturb_pair(pair, variant, 0)
        sides = ((pair.source.image, perturbed.source), (pair.target.image, perturbed.target))
        for clean, new in sides:
            assert new.shape == clean.shape and new.dtype == np.uint8
            assert not np.array_equal(new, clean)
            assert np.abs(new.astype(int) - clean).mean() < 12


def test_blur_keeps_flat_regions_exactly() -> None:
    pair = _pair("plain")
    clean, blurred = pair.source.image, perturb_pair(pair, "blur", 0).source
    edges = np.any(clean != clean[0, 0], axis=-1)
    near = binary_dilation(edges, structure=np.ones((5, 5), dtype=bool))  # kernel radius 2 px
    assert np.array_equal(blurred[~near], clean[~near])
    assert not np.array_equal(blurred[near], clean[near])


def test_robustness_pairs_order_and_seeds(pairs: list[EditPair]) -> None:
    variants = ("noise", "stripe-angle")
    out = robustness_pairs(pairs, seed=3, variants=variants)
    assert [p.variant for p in out] == [v for v in variants for _ in pairs]
    for k, perturbed in enumerate(out):
        i = k % len(pairs)
        assert perturbed.pair is pairs[i]
        again = perturb_pair(pairs[i], perturbed.variant, pair_seed(3, i, perturbed.variant))
        assert again.source.tobytes() == perturbed.source.tobytes()
    assert len(robustness_pairs(pairs[:1], seed=0)) == len(ROBUSTNESS_VARIANTS)
    seeds = {pair_seed(3, i, v) for i in range(len(pairs)) for v in ROBUSTNESS_VARIANTS}
    assert len(seeds) == len(pairs) * len(ROBUSTNESS_VARIANTS)


def test_unknown_variant_lists_the_variants(pairs: list[EditPair]) -> None:
    with pytest.raises(ValueError) as info:
        perturb_pair(pairs[0], "rotate", 0)
    assert all(v in str(info.value) for v in ROBUSTNESS_VARIANTS)
    with pytest.raises(ValueError, match="stripe-angle"):
        robustness_pairs(pairs, seed=0, variants=("noise", "sharpen"))
    with pytest.raises(ValueError, match="seed"):
        perturb_pair(pairs[0], "noise", -1)
