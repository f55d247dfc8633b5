"""A quick look at a trained embedded model: a grid of generations for a few captions.

``python -m unsample_lab.embedded.samples MODEL_DIR OUT.png`` writes one row per caption (training
and held-out captions of the shapes world), one column per seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

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
    import torch
    from diffusers import StableDiffusionPipeline

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


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(prog="python -m unsample_lab.embedded.samples", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a pipeline folder (e.g. RUN/model)")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=4.0)
    args = parser.parse_args(argv)
    grid = sample_grid(args.model, steps=args.steps, guidance=args.guidance)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
