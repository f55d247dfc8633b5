"""Batched throughput of ``unsample batch``: images per second at several batch sizes, and how
far each job's outputs move from its one-at-a-time run.

    python -m unsample_lab.bench.batch_throughput [--jobs 16] [--sizes 1,4,8] [--kind edit] [--repeats 1]

Builds a manifest of held-out shapes-world edit pairs (the default edit: `unsample.defaults`),
runs it at every batch size into a fresh folder, and prints per size: wall seconds, images per
second, and against batch size 1 the largest difference of an output (inverted latents for
``--kind invert``, 8-bit pixels for PNGs) and the share of PNG pixels that differ at all.
Keep the machine quiet while it runs: it times whole batches.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file

import unsample
from unsample.batch import run_batch
from unsample.errors import InputError
from unsample.outputs import write_png
from unsample_lab.shapes import random_edit_pairs


def write_manifest(folder: Path, jobs: int, kind: str, resolution: int, seed: int = 0) -> Path:
    """``jobs`` held-out edit pairs as a manifest of ``kind`` jobs (source images saved beside it)."""
    lines = []
    for i, pair in enumerate(random_edit_pairs(jobs, seed, size=resolution, split="heldout")):
        Image.fromarray(pair.source.image).save(folder / f"src{i:03d}.png")
        job = {"id": f"job{i:03d}", "job": kind, "image": f"src{i:03d}.png", "prompt": pair.source_caption, "seed": i}
        if kind == "edit":
            job["target_prompt"] = pair.target_caption
        lines.append(json.dumps(job))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix == ".png":
            found[p.name] = np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
        elif p.suffix == ".safetensors":
            tensors = load_file(str(p))
            found[p.name] = tensors["trajectory"].double().numpy()
    return found


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest |difference| of the tensors and of the PNG pixels, and the share of PNG pixels that differ."""
    if sorted(reference) != sorted(other):
        raise InputError("the two runs wrote different files")
    tensor_diff, pixel_diff, changed, pixels = 0.0, 0, 0, 0
    for name, ref in reference.items():
        d = np.abs(other[name] - ref)
        if name.endswith(".png"):
            pixel_diff = max(pixel_diff, int(d.max()))
            changed += int(np.any(d > 0, axis=-1).sum())
            pixels += d.shape[0] * d.shape[1]
        else:
            tensor_diff = max(tensor_diff, float(d.max()))
    return {"max_tensor_diff": tensor_diff, "max_pixel_diff": float(pixel_diff),
            "changed_pixel_share": changed / pixels if pixels else 0.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--sizes", default="1,4,8")
    parser.add_argument("--kind", choices=("invert", "reconstruct", "edit"), default="edit")
    parser.add_argument("--repeats", type=int, default=1, help="Timed runs per size (the fastest is reported).")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.jobs < 1 or args.repeats < 1 or any(s < 1 for s in sizes):
        parser.error("--jobs, --repeats and every size must be >= 1")

    model = unsample.load(args.model, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        manifest = write_manifest(base, args.jobs, args.kind, model.resolution)
        reference = None
        for size in sizes:
            best = float("inf")
            for r in range(args.repeats):
                out = base / f"out-{size}-{r}"
                begin = time.perf_counter()
                res = run_batch(model, manifest, out, progress=False, write_png=write_png, batch_size=size)
                best = min(best, time.perf_counter() - begin)
                if res.failed:
                    raise SystemExit(f"{res.failed} jobs failed at batch size {size}: {res.errors}")
            outputs = _outputs(base / f"out-{size}-0")
            reference = outputs if reference is None else reference
            rows.append({"batch_size": size, "seconds": best, "images_per_second": args.jobs / best,
                         **compare(reference, outputs)})
    print(f"{args.jobs} {args.kind} jobs on {model.name} ({model.resolution} px), defaults of unsample.defaults; "
          f"differences against batch size {sizes[0]}")
    print("| batch size | seconds | images/s | speed-up | max |Δ| tensors | max |Δ| pixels | pixels changed |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['batch_size']} | {row['seconds']:.1f} | {row['images_per_second']:.2f} | "
              f"{rows[0]['seconds'] / row['seconds']:.2f}x | {row['max_tensor_diff']:.2e} | "
              f"{row['max_pixel_diff']:.0f} | {100 * row['changed_pixel_share']:.3f}% |")


if __name__ == "__main__":
    main()
