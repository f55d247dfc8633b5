"""``python -m unsample_lab.bench.edict_chains``: do EDICT's two chains stay together when sampling?

EDICT samples two chains x, y that its mixing layers pull together by p^2 per step. With the
inverted prompt, replay is exact whatever the chains do; with another prompt, or from fresh noise,
nothing cancels, and if the gap |x - y| (RMS over the latent) grows, the two chains are two
different images and the result dissolves. Two measurements on the embedded model:

1. generation from fresh noise (x = y = the same Gaussian draw) for each mixing p, guidance and
   step count: the final gap and how often the detector reads the caption in the x chain;
2. colour edits (held-out pairs): EDICT inversion with the source caption, then sampling with the
   source caption (exact replay) and with the target caption, the gap after every step.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from PIL import Image

import unsample
from unsample.methods.edict import sample_step
from unsample_lab.bench.edit import EditBench, shapes_cases
from unsample_lab.bench.stats import decoded_uint8
from unsample_lab.shapes import detect, detection_matches


def chain_gap(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).double().pow(2).mean().sqrt())


def run_chains(denoiser: Any, grid: Any, x: torch.Tensor, y: torch.Tensor, start: int, p: float) -> tuple[torch.Tensor, list[float]]:
    """EDICT sampling from (x, y) at ``start``; the x chain's latent and the gap after each step."""
    gaps = []
    for i in range(start, len(grid)):
        x, y = sample_step(denoiser, x, y, i, grid, p, True)
        gaps.append(chain_gap(x, y))
    return x, gaps


def generation(model: Any, ps: list[float], guidances: list[float], steps: list[int], samples: int) -> list[dict[str, Any]]:
    caption = "a large red circle on a plain blue background"
    shape = (1, model.pipe.unet.config.in_channels, model.resolution // model.vae_factor, model.resolution // model.vae_factor)
    rows = []
    for n in steps:
        grid = model.schedule.grid(n)
        for g in guidances:
            den = model.denoiser(caption, guidance=g, dtype=torch.float64)
            for p in ps:
                gaps, ok = [], 0
                for s in range(samples):
                    noise = torch.randn(shape, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                    x, g_ = run_chains(den, grid, noise.clone(), noise.clone(), 0, p)
                    gaps.append(g_[-1])
                    ok += bool(detection_matches(detect(decoded_uint8(model, x)), caption))
                rows.append({"steps": n, "guidance": g, "p": p, "gap": sum(gaps) / len(gaps), "correct": ok / samples})
    return rows


def edits(model: Any, ps: list[float], steps: int, guidance: float, pairs: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for case in shapes_cases(EditBench(pairs=pairs, kinds=("color",), seed=seed), model.resolution):
        for p in ps:
            inv = unsample.invert(model, Image.fromarray(case.source), case.source_caption, method="edict",
                                  steps=steps, guidance=guidance, p=p, precision="float64")
            grid = model.schedule.grid(steps)
            for which, prompt in (("same", case.source_caption), ("edit", case.target_caption)):
                den = model.denoiser(prompt, guidance=guidance, dtype=torch.float64)
                x, gaps = run_chains(den, grid, inv.trajectory[0].clone(), inv.extras["y"][0].clone(), 0, p)
                ok = case.judge(decoded_uint8(model, x)) if which == "edit" else None
                rows.append({"pair": case.name, "p": p, "prompt": which, "gaps": gaps, "correct": ok})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m unsample_lab.bench.edict_chains", description=__doc__.split("\n")[0])
    parser.add_argument("--p", default="0.93,0.8", help="mixing weights to compare")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    ps = [float(v) for v in args.p.split(",")]
    model = unsample.load(args.model, device="cpu")
    print("Generation from fresh noise (x = y), float64 state arithmetic:\n")
    print("| steps | guidance | p | final gap RMS |x - y| | caption read right |\n|---|---|---|---|---|")
    for r in generation(model, ps, [1.0, 3.0, 5.0], [20, 50], args.samples):
        print(f"| {r['steps']} | {r['guidance']:g} | {r['p']:g} | {r['gap']:.3f} | {100 * r['correct']:.0f}% |")
    print("\nColour edits, inversion and sampling at guidance 5, 20 steps: gap after steps 1, 5, 10, 15, 20\n")
    print("| pair | p | prompt | gaps | edit right |\n|---|---|---|---|---|")
    for r in edits(model, ps, 20, 5.0, args.pairs, args.seed):
        picked = " / ".join(f"{r['gaps'][k]:.2f}" for k in (0, 4, 9, 14, 19))
        right = "" if r["correct"] is None else ("yes" if r["correct"] else "no")
        print(f"| {r['pair']} | {r['p']:g} | {r['prompt']} | {picked} | {right} |")


if __name__ == "__main__":
    main()
