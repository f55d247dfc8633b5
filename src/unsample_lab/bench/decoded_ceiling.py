"""The judge's ceiling through a model's autoencoder: each exact target encoded, decoded, judged.

An edit's result is a decoded latent, so no edit can do better than the autoencoder's own copy of
the exact target. Run ``python -m unsample_lab.bench.decoded_ceiling [MODEL] [PAIRS]`` (default:
the embedded model, 20 pairs) for the clean object edits and every new background
(`unsample_lab.shapes.backgrounds`): the share of decoded exact targets the set's judge calls
right, and the autoencoder's PSNR on them.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from unsample_lab.bench.edit import EditBench, EditCase, load_cases
from unsample_lab.bench.stats import decoded_uint8, image_metrics


def decoded_ceiling(model: Any, pairs: int = 20, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per set: the object edits, the share of decoded exact targets judged right, the mean PSNR."""
    clean = [c for c in load_cases(EditBench(pairs=pairs, seed=seed), model.resolution) if c.kind != "background"]
    cases: list[EditCase] = clean + load_cases(EditBench(pairs=pairs, seed=seed, backgrounds=True), model.resolution)
    judged: dict[str, list[bool]] = defaultdict(list)
    psnr: dict[str, list[float]] = defaultdict(list)
    for case in cases:
        assert case.target is not None and case.judge is not None
        pixels = torch.from_numpy(case.target.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        copy = decoded_uint8(model, model.encode_image(pixels.to(model.device)))
        judged[case.variant].append(bool(case.judge(copy)))
        psnr[case.variant].append(image_metrics(copy, case.target)["psnr"])
    return {
        v: {"edits": len(judged[v]), "judged_right": float(np.mean(judged[v])), "psnr": float(np.mean(psnr[v]))}
        for v in judged
    }


def main(argv: list[str]) -> None:
    import unsample  # loads torch and diffusers: on use

    model = unsample.load(argv[0] if argv else None, device="cpu")
    pairs = int(argv[1]) if len(argv) > 1 else 20
    print("| set | object edits | decoded exact target judged right | autoencoder PSNR dB |\n|---|---|---|---|")
    for name, row in decoded_ceiling(model, pairs).items():
        print(f"| {name} | {row['edits']} | {row['judged_right']:.0%} | {row['psnr']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
