"""A quick look at a trained embedded model: a grid of generations for a few captions.

``unsample sample-embedded MODEL_DIR OUT.png`` writes one row per caption (training and held-out
captions of the shapes world), one column per seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DEFAULT_PROMPTS: tuple[str, ...] = (
    "a large red circle on a plain black background",
    "a small yellow star on a striped blue background",
    "a large white square and a small green triangle on a checkered gray background",
    "a large pink heart on a dotted brown background",
    "a small cyan triangle and a large orange circle on a gradient black background",
)


def sample_grid(
    model_dir: Path,
    prompts: tuple[str, ...] = DEFAULT_PROMPTS,
    *,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    steps: int = 30,
    guidance: float = 4.0,
) -> np.ndarray:
    """Generate ``len(prompts) x len(seeds)`` images and tile them into one uint8 array."""
    from diffusers import StableDiffusionPipeline  # a pipeline class loads much of diffusers: only a call pays

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows = []
    for prompt in prompts:
        images = pipe(
            [prompt] * len(seeds), num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
            generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np",
        ).images
        rows.append(np.concatenate(list(images), axis=1))
    return (np.concatenate(rows, axis=0) * 255).round().clip(0, 255).astype(np.uint8)
