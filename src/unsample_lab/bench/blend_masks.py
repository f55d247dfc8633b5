"""``python -m unsample_lab.bench.blend_masks``: does local blend find the edited object?

For held-out colour and shape edit pairs of the shapes world, run prompt-to-prompt with local
blend and compare the blend mask (from the blend words' cross-attention maps, at the last step)
with the exact edit region (the pair's mask, pooled to latent resolution): the share of the latent
the mask covers, and its recall and precision against the exact region. A mask that covers the
whole latent keeps nothing of the source, and local blend then changes nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import unsample
from unsample.editing.attention import AttentionControl
from unsample.editing.branches import Blend, edit_latent
from unsample_lab.bench.edit import EditBench, shapes_cases


def measure(model: object, pairs: int, steps: int, seed: int, guidance: float) -> list[dict[str, float]]:
    bench = EditBench(pairs=pairs, kinds=("color", "shape"), seed=seed, steps=steps)
    rows = []
    for case in shapes_cases(bench, model.resolution):  # type: ignore[attr-defined]
        inv = unsample.invert(model, Image.fromarray(case.source), case.source_caption, steps=steps, seed=seed)
        res = edit_latent(model, inv, case.target_caption, guidance=guidance,
                          control=AttentionControl("replace", blend_words=case.blend_words),
                          blend=Blend(mask=None, attention=True, start=0.2))
        mask = res.mask.numpy()
        h, w = mask.shape
        f = case.mask.shape[0] // h
        exact = case.mask.reshape(h, f, w, f).any(axis=(1, 3))
        hit = float((mask & exact).sum())
        rows.append({"kind": case.kind, "coverage": float(mask.mean()), "exact_area": float(exact.mean()),
                     "recall": hit / max(1.0, float(exact.sum())), "precision": hit / max(1.0, float(mask.sum()))})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m unsample_lab.bench.blend_masks", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    model = unsample.load(args.model, device="cpu")
    rows = measure(model, args.pairs, args.steps, args.seed, args.guidance)
    print("| kind | pairs | mask covers | exact region | recall | precision |\n|---|---|---|---|---|---|")
    for kind in sorted({r["kind"] for r in rows}) + ["all"]:
        sel = [r for r in rows if kind in ("all", r["kind"])]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in ("coverage", "exact_area", "recall", "precision")}
        print(f"| {kind} | {len(sel)} | {100 * mean['coverage']:.0f}% | {100 * mean['exact_area']:.0f}% | "
              f"{mean['recall']:.2f} | {mean['precision']:.2f} |")


if __name__ == "__main__":
    main()
