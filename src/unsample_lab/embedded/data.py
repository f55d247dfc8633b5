"""Training data for the embedded model: shapes-world scenes rendered on the fly.

A batch is a pure function of (seed, stream, step): the scenes of step ``k`` come from a numpy
generator seeded with ``[seed, stream, k]``, so a resumed run sees exactly the batches an
uninterrupted one would, and no RNG state needs to be saved. Only captions of the training
split are used; held-out captions never reach the model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from unsample.errors import InputError

# Streams keep the batches of different uses independent.
STREAM_VAE = 1
STREAM_UNET = 2
STREAM_EVAL = 3
STREAM_SCALE = 4
STREAM_DECODER = 5


class SceneSource(Protocol):
    """Where scenes come from: a word list and a sampler of (captions, uint8 images)."""

    @property
    def vocabulary(self) -> tuple[str, ...]: ...

    def sample(self, rng: np.random.Generator, n: int, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``n`` training-split captions, their renders (uint8 [n, size, size, 3]) and where their
        objects are (bool [n, size, size], the union of the object masks)."""
        ...


def _shapes_api() -> dict[str, Any]:
    """The shapes-world functions this module uses, from the package or its modules."""
    names = {
        "VOCABULARY": "vocabulary",
        "random_scene": "sampling",
        "caption": "captions",
        "render": "render",
    }
    package = importlib.import_module("unsample_lab.shapes")
    api: dict[str, Any] = {}
    for name, module in names.items():
        value = getattr(package, name, None)
        if value is None:
            value = getattr(importlib.import_module(f"unsample_lab.shapes.{module}"), name)
        api[name] = value
    return api


@dataclass(frozen=True)
class ShapesSource:
    """The shapes world (`unsample_lab.shapes`), one caption split (training by default)."""

    split: str = "train"

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return tuple(_shapes_api()["VOCABULARY"])

    def sample(self, rng: np.random.Generator, n: int, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        api = _shapes_api()
        scenes = [api["random_scene"](rng, split=self.split) for _ in range(n)]
        captions = [api["caption"](s) for s in scenes]
        renders = [api["render"](s, size=size) for s in scenes]
        images = np.stack([r.image for r in renders])
        if images.shape != (n, size, size, 3) or images.dtype != np.uint8:
            raise InputError(
                f"shapes renderer gave {images.dtype} {images.shape}, expected uint8 {(n, size, size, 3)}"
            )
        objects = np.stack([np.logical_or.reduce(r.masks, axis=0) if r.masks else np.zeros((size, size), bool)
                            for r in renders])
        return captions, images, objects


def batch_rng(seed: int, stream: int, step: int) -> np.random.Generator:
    """The generator that draws the scenes of one step of one stream."""
    return np.random.default_rng([seed, stream, step])


def images_to_tensor(images: np.ndarray):  # -> torch.Tensor [B, 3, H, W] in [-1, 1]

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def draw_batch(source: SceneSource, seed: int, stream: int, step: int, n: int, size: int):
    """(captions, images in [-1, 1], object masks as 0/1) as float tensors [B, 3 or 1, H, W], for one
    step of one stream."""
    captions, images, objects = source.sample(batch_rng(seed, stream, step), n, size)
    return captions, images_to_tensor(images), torch.from_numpy(np.asarray(objects, dtype=np.float32))[:, None]
