"""A deterministic robustness set: edit pairs under variations the training set never had.

Each variant perturbs an `EditPair`'s source and target the same way, so an exact target still
exists; the mask is recomputed as the pixels where the perturbed source and target differ.

Re-render variants (both scenes rendered again with one drawn `BackgroundStyle`):

- "stripe-angle": stripes at an angle drawn uniformly from [10, 35] or [55, 80] degrees (the
  renderer always draws 45); checkered and dotted grids and the gradient rotated by the same
  ``angle - 45``; plain backgrounds are unchanged.
- "stripe-width": pattern period (stripes, checks, dot grid and dot radius) scaled by a factor
  drawn uniformly from [0.55, 0.75] or [1.35, 1.7].
- "off-palette": background base and shade colours shifted by one per-channel offset, magnitude
  drawn from 18..30 with a random sign per channel, clipped to [0, 255]; objects unchanged.

Image-space variants (the same operation on both uint8 images):

- "noise": one Gaussian field, sigma `NOISE_SIGMA` grey levels, added to both, rounded, clipped.
- "blur": Gaussian blur, sigma `BLUR_SIGMA` px (scipy.ndimage, reflecting edges), rounded.
- "jpeg": JPEG encode and decode with PIL at quality `JPEG_QUALITY`.

Everything is fixed by (seed, variant) and the pair; `robustness_pairs` derives one seed per
(pair index, variant) from its own seed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from unsample.errors import InputError
from unsample_lab.shapes.edits import EditPair
from unsample_lab.shapes.render import BackgroundStyle, render

ROBUSTNESS_VARIANTS: tuple[str, ...] = (
    "stripe-angle",
    "stripe-width",
    "off-palette",
    "noise",
    "blur",
    "jpeg",
)
ANGLE_RANGES: tuple[tuple[float, float], ...] = ((10.0, 35.0), (55.0, 80.0))
SCALE_RANGES: tuple[tuple[float, float], ...] = ((0.55, 0.75), (1.35, 1.7))
OFFSET_MAGNITUDE: tuple[int, int] = (18, 30)  # inclusive range of |offset| per channel
NOISE_SIGMA = 4.0  # grey levels out of 255
BLUR_SIGMA = 0.6  # pixels
JPEG_QUALITY = 60


@dataclass(frozen=True, eq=False)
class PerturbedPair:
    """A perturbed edit pair: source and target uint8 (H, W, 3), mask bool (H, W) where they differ.

    `description` names the drawn parameters; `style` is the drawn background style of the
    re-render variants (None for image-space ones); `pair` is the clean pair. Arrays are read-only.
    """

    variant: str
    source: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    description: str
    style: BackgroundStyle | None
    pair: EditPair


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")


def _check_variant(variant: str) -> int:
    if variant not in ROBUSTNESS_VARIANTS:
        raise InputError(
            f"unknown robustness variant {variant!r}; "
            f"expected one of: {', '.join(ROBUSTNESS_VARIANTS)}"
        )
    return ROBUSTNESS_VARIANTS.index(variant)


def _uniform_from(rng: np.random.Generator, ranges: Sequence[tuple[float, float]]) -> float:
    """One value uniform on a randomly chosen interval of `ranges` (each equally likely)."""
    low, high = ranges[int(rng.integers(len(ranges)))]
    return float(rng.uniform(low, high))


def _draw_style(variant: str, rng: np.random.Generator) -> tuple[BackgroundStyle, str]:
    if variant == "stripe-angle":
        angle = _uniform_from(rng, ANGLE_RANGES)
        return BackgroundStyle(angle_deg=angle), f"stripes at {angle:.1f} deg"
    if variant == "stripe-width":
        scale = _uniform_from(rng, SCALE_RANGES)
        return BackgroundStyle(period_scale=scale), f"pattern period x{scale:.2f}"
    low, high = OFFSET_MAGNITUDE
    magnitude = rng.integers(low, high + 1, size=3)
    sign = rng.choice(np.array([-1, 1]), size=3)
    red, green, blue = (int(m * s) for m, s in zip(magnitude, sign))
    text = f"{red:+d}, {green:+d}, {blue:+d}"
    return BackgroundStyle(colour_offset=(red, green, blue)), f"background offset ({text})"


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _blur(image: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter  # heavy (scipy): loaded on use

    smooth = gaussian_filter(image.astype(np.float64), sigma=(BLUR_SIGMA, BLUR_SIGMA, 0.0))
    return _to_uint8(smooth)


def _jpeg(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(
        buffer, format="JPEG", quality=JPEG_QUALITY
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def perturb_pair(pair: EditPair, variant: str, seed: int) -> PerturbedPair:
    """Apply one robustness `variant`, drawn from `seed`, identically to both sides of `pair`."""
    index = _check_variant(variant)
    _check_seed(seed)
    if not isinstance(pair, EditPair):
        raise TypeError(f"perturb_pair() takes an EditPair, got {type(pair).__name__}")
    rng = np.random.default_rng([int(seed), index])
    clean_source, clean_target = pair.source.image, pair.target.image
    style: BackgroundStyle | None = None
    if variant in ("stripe-angle", "stripe-width", "off-palette"):
        # re-render both scenes with one drawn background style
        style, description = _draw_style(variant, rng)
        size = clean_source.shape[0]
        source = np.array(render(pair.source.scene, size, style=style).image)
        target = np.array(render(pair.target.scene, size, style=style).image)
    elif variant == "noise":
        # one noise field, added to both sides
        field = rng.normal(0.0, NOISE_SIGMA, size=clean_source.shape)
        source = _to_uint8(clean_source + field)
        target = _to_uint8(clean_target + field)
        description = f"gaussian noise, sigma {NOISE_SIGMA:g} grey levels"
    elif variant == "blur":
        source, target = _blur(clean_source), _blur(clean_target)
        description = f"gaussian blur, sigma {BLUR_SIGMA:g} px"
    else:  # jpeg
        source, target = _jpeg(clean_source), _jpeg(clean_target)
        description = f"jpeg, quality {JPEG_QUALITY}"
    mask = np.any(source != target, axis=-1)
    return PerturbedPair(
        variant=variant,
        source=_read_only(source),
        target=_read_only(target),
        mask=_read_only(mask),
        description=description,
        style=style,
        pair=pair,
    )


def pair_seed(seed: int, pair_index: int, variant: str) -> int:
    """The seed `robustness_pairs` passes to `perturb_pair` for one (pair index, variant)."""
    _check_seed(seed)
    state = np.random.SeedSequence([int(seed), int(pair_index), _check_variant(variant)])
    return int(state.generate_state(1, dtype=np.uint32)[0])


def robustness_pairs(
    pairs: Sequence[EditPair],
    seed: int,
    variants: Sequence[str] = ROBUSTNESS_VARIANTS,
) -> list[PerturbedPair]:
    """Every pair under every variant, variant-major: all pairs under ``variants[0]`` first."""
    _check_seed(seed)
    if len(variants) == 0:
        raise InputError(f"variants must be a non-empty subset of {ROBUSTNESS_VARIANTS}")
    for variant in variants:
        _check_variant(variant)
    return [
        perturb_pair(pair, variant, pair_seed(seed, i, variant))
        for variant in variants
        for i, pair in enumerate(pairs)
    ]
