"""Circle -> star by classifier guidance on the embedded pixel model: which recipe, at which scale.

For N held-out-split one-object scenes with a circle (random colour, background and texture),
invert (``--method``, default DDIM; 50 steps, guidance 1) and sample again from the inverted
noise with that method's sampler and:
- ``swap``: the class label swapped (circle -> star), no classifier;
- ``classifier``: the unconditional class both ways, classifier guidance toward star at scale s;
- ``swap+classifier``: the label swapped and classifier guidance at s.
``--mask noise`` confines the swap recipes' change to DiffEdit's mask of the two labels (outside
it the edit takes the inverted trajectory). The analytic detector judges each edit: "star" = one object, a star; "correct" = also the
source's colour, background and texture. "bg PSNR" compares the edit with the source away from
both objects. Run ``python -m unsample_lab.bench.pixel_edit [--scenes 40] [--scales 1,2,4,8] [--method bdia]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import unsample
from unsample.backends.noisy_classifier import NoisyClassifier
from unsample.images import tensor_to_pil
from unsample_lab.embedded import model_classifier_file
from unsample_lab.pixel_demo import background_psnr, edit_verdict
from unsample_lab.shapes import random_scene, render


def circle_scenes(n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        scene = random_scene(rng, n_objects=1, split="heldout")
        if scene.objects[0].shape == "circle":
            out.append(scene)
    return out


def run(scenes: int, scales: list[float], steps: int, seed: int, model_name: str,
        method: str = "ddim", mask: str = "none", mask_dilate: int = 0) -> list[dict[str, Any]]:
    m = unsample.load(model_name, device="cpu")
    clf = NoisyClassifier.load(model_classifier_file(model_name))
    recipes: list[tuple[str, str, str, float]] = [("swap", "circle", "star", 0.0)]
    recipes += [("classifier", "", "", s) for s in scales]
    recipes += [("swap+classifier", "circle", "star", s) for s in scales]
    rows: dict[tuple[str, float], dict[str, list[float]]] = {(r, s): {"star": [], "correct": [], "bg": [], "sec": []}
                                                             for r, _, _, s in recipes}
    inversions: dict[str, Any] = {}
    for scene in circle_scenes(scenes, seed):
        rendered = render(scene, size=m.resolution)
        for prompt in {"circle", ""}:
            inversions[prompt] = unsample.invert(m, rendered.image, prompt, method=method, steps=steps)
        for recipe, source, target, scale in recipes:
            begin = time.perf_counter()
            steer = clf.guidance("star", scale) if scale > 0 else None
            # the noise mask compares the two class labels: the classifier-only recipe has one, so no mask
            result = unsample.edit(m, inversions[source], target, guidance=1.0, classifier_guidance=steer,
                                   mask=mask if source != target else "none", mask_dilate=mask_dilate,
                                   output="result")
            seconds = time.perf_counter() - begin
            edited = np.asarray(tensor_to_pil(m.decode_latent(result.latent.float())))
            verdict = edit_verdict(scene, edited, "star")
            row = rows[(recipe, scale)]
            row["star"].append(verdict["shapes"] == ["star"])
            row["correct"].append(verdict["correct"])
            row["bg"].append(min(background_psnr(rendered.image, edited, rendered.masks[0]), 60.0))
            row["sec"].append(seconds)
    return [{"recipe": r, "scale": s, "star": float(np.mean(v["star"])), "correct": float(np.mean(v["correct"])),
             "bg_psnr": float(np.mean(v["bg"])), "seconds": float(np.mean(v["sec"]))} for (r, s), v in rows.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unsample_lab.bench.pixel_edit", description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--scales", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--model", default="embedded-pixel")
    parser.add_argument("--method", default="ddim", help="the inversion method (ddim, bdia, edict, ...)")
    parser.add_argument("--mask", default="none", help="the edit mask of the label-swap recipes (none, noise)")
    parser.add_argument("--mask-dilate", type=int, default=0, help="grow the mask by this many pixels")
    args = parser.parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    begin = time.perf_counter()
    results = run(args.scenes, scales, args.steps, args.seed, args.model, args.method, args.mask, args.mask_dilate)
    print(f"circle -> star, {args.scenes} held-out scenes, {args.method} {args.steps} steps, guidance 1, "
          f"mask {args.mask} grown by {args.mask_dilate} (swap recipes)")
    print("| recipe | classifier scale | star | correct (colour, background kept) | bg PSNR dB | s / edit |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['recipe']} | {r['scale']:g} | {100 * r['star']:.0f}% | {100 * r['correct']:.0f}% | "
              f"{r['bg_psnr']:.1f} | {r['seconds']:.2f} |")
    print(f"({time.perf_counter() - begin:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
