"""The model card's failure anatomy: which parts of a caption a detection gets right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from unsample_lab.embedded.evaluate import PARTS, caption_parts
from unsample_lab.shapes import caption, detect, random_scene, render


@pytest.fixture(scope="module")
def scene():
    return random_scene(np.random.default_rng(3), n_objects=1, split="heldout")


def test_an_exact_render_is_right_on_every_part(scene) -> None:
    parts = caption_parts(detect(render(scene).image), caption(scene))
    assert tuple(parts) == PARTS and all(parts.values()), parts


@pytest.mark.parametrize("part", ["background", "colors", "shapes"])
def test_one_wrong_word_fails_that_part_only(scene, part: str) -> None:
    from unsample_lab.shapes.vocabulary import BACKGROUND_COLORS, OBJECT_COLORS, SHAPES

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
    from unsample_lab.shapes.detect import Detection

    empty = Detection(background=scene.background, texture=scene.texture, objects=())
    parts = caption_parts(empty, caption(scene))
    assert not parts["count"] and parts["background"], parts


class _PixelModel:
    """A stand-in for a loaded model whose autoencoder is ``pool`` x ``pool`` average pooling
    (1 = the identity), upsampled back by repetition."""

    resolution = 64
    device = torch.device("cpu")

    def __init__(self, pool: int) -> None:
        self.pool = pool

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, self.pool)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        return z.repeat_interleave(self.pool, dim=2).repeat_interleave(self.pool, dim=3)


def test_the_vae_ceiling_is_one_for_a_lossless_autoencoder_and_drops_for_a_blurring_one() -> None:
    from unsample_lab.embedded.evaluate import EvalConfig, vae_ceiling

    cfg = dataclasses.replace(EvalConfig.quick(), t2i_samples=20)
    assert vae_ceiling(_PixelModel(1), cfg, 1) == 1.0
    assert vae_ceiling(_PixelModel(8), cfg, 1) <= 0.5


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # PSNR of identical images
def test_vae_psnr_is_infinite_for_a_lossless_autoencoder_and_falls_with_blur() -> None:
    from unsample_lab.embedded.evaluate import EvalConfig, vae_psnr

    cfg = dataclasses.replace(EvalConfig.quick(), vae_scenes=12)
    assert vae_psnr(_PixelModel(1), cfg) == float("inf")
    assert 0 < vae_psnr(_PixelModel(8), cfg) < vae_psnr(_PixelModel(2), cfg) < float("inf")


def test_the_card_says_when_the_autoencoder_came_from_another_model() -> None:
    from unsample_lab.embedded.evaluate import _training_line

    training = {"command": "unsample train-embedded", "config": {"threads": 2, "unet_batch": 32},
                "vae_steps": 3928, "vae_minutes": 45.0, "decoder_steps": 1560, "decoder_minutes": 12.0,
                "unet_steps": 100, "unet_minutes": 1.5}
    line = _training_line(training)
    assert "58 min of stage time" in line and "not re-run" not in line
    reused = _training_line({**training, "autoencoder_from": "old/model"})
    assert reused.startswith(line) and "not re-run" in reused and "`old/model`" in reused
