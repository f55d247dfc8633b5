"""Peak memory and time of default edits through `unsample batch`, by batch size and row cap.

    python -m unsample_lab.bench.batch_memory [--cells 1:0,8:16,...] [--model embedded|sd15] [--side 64] [--steps 36]
    python -m unsample_lab.bench.batch_memory --probe 1,2,4 --side 256

The model is the embedded default, or (``--model sd15``) SD 1.5's UNet and VAE at full size (built
from their published configs, random weights, seed 0; nothing downloaded) with a small CLIP text
encoder of SD's width (768, 2 layers) over a word-level tokenizer; images of ``--side`` px. Each cell BATCH:MAX_ROWS (0: no cap) runs
BATCH default edit jobs (`unsample.defaults`, but ``--steps`` steps: the calls' sizes, which set
the peak, do not depend on the step count) as one batch in a fresh subprocess, and prints the
peak resident memory (``ru_maxrss``), the same after the model was built (the baseline), the
peak above it, and the seconds per job. ``--probe`` instead times single calls of the SD 1.5-size
UNet, one subprocess per row count, for the memory one row of a call costs. `unsample.defaults.MAX_ROWS` was chosen from these
figures (docs/memory.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unsample.backends.diffusers_sd import StableDiffusionModel
from unsample.backends.tokenizer import build_word_tokenizer
from unsample.batch import run_batch
from unsample.outputs import write_png
from unsample_lab.bench.batch_throughput import write_manifest
from unsample_lab.bench.vae_tiling import SD15_VAE
from unsample_lab.testing.tiny_pipeline import TINY_WORDS

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}


def build_model() -> StableDiffusionModel:
    """SD 1.5's UNet and VAE at full size with random weights, a 2-layer CLIP of width 768."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(TINY_WORDS, max_length=77)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=2, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD15_VAE), text_encoder=text, tokenizer=tokenizer,
                                   unet=UNet2DConditionModel(**SD15_UNET), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.requires_grad_(False).eval()
    return StableDiffusionModel(pipe, "sd15-random")


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def one_cell(batch: int, max_rows: int | None, side: int, steps: int, which: str) -> dict[str, float | int | None]:
    import unsample

    model = build_model() if which == "sd15" else unsample.load(None, device="cpu")
    baseline = _maxrss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if which == "embedded":  # held-out shapes-world edit pairs, as the throughput bench
            manifest = write_manifest(folder, batch, "edit", model.resolution)
            jobs = [json.loads(line) | {"steps": steps} for line in manifest.read_text().splitlines()]
        else:
            rng = np.random.default_rng(0)
            Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8)).save(folder / "a.png")
            jobs = [{"id": f"e{i}", "job": "edit", "image": "a.png", "prompt": "a red cat on a blue background",
                     "target_prompt": "a green dog on a blue background", "steps": steps, "seed": i} for i in range(batch)]
        (folder / "m.jsonl").write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
        begin = time.perf_counter()
        res = run_batch(model, folder / "m.jsonl", folder / "out", progress=False, write_png=write_png,
                        batch_size=batch, max_rows=max_rows)
        seconds = time.perf_counter() - begin
    peak = _maxrss_mib()
    return {"batch": batch, "max_rows": max_rows, "done": res.done, "failed": res.failed, "baseline_mib": baseline,
            "peak_mib": peak, "above_mib": peak - baseline, "seconds_per_job": seconds / batch}


def probe(rows: int, side: int) -> dict[str, float]:
    """One UNet call of ``rows`` rows on the SD 1.5-size model: peak MiB above the built model, seconds."""
    model = build_model()
    cond = model.encode_prompt("a red cat")
    x = torch.randn(rows, 4, side // 8, side // 8, generator=torch.Generator().manual_seed(0))
    baseline = _maxrss_mib()
    begin = time.perf_counter()
    with torch.no_grad():
        model.model_fn(x, torch.full((rows,), 500.0), type(cond)(cond.embeds.expand(rows, -1, -1)))
    return {"rows": rows, "above_mib": _maxrss_mib() - baseline, "seconds": time.perf_counter() - begin}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="1:0,8:0,8:16")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--steps", type=int, default=36)
    parser.add_argument("--model", choices=("embedded", "sd15"), default="embedded")
    parser.add_argument("--probe", default=None, help="rows,rows,...: single UNet calls of the SD 1.5-size model instead")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        if args.cell.startswith("probe:"):
            print(json.dumps(probe(int(args.cell[6:]), args.side)))
            return
        b, r = (int(v) for v in args.cell.split(":"))
        print(json.dumps(one_cell(b, r or None, args.side, args.steps, args.model)))
        return
    if args.probe:
        print(f"SD 1.5-size UNet, one call at {args.side} px | rows | peak above the built model MiB | seconds")
        for rows in args.probe.split(","):
            done = subprocess.run([sys.executable, "-m", "unsample_lab.bench.batch_memory", "--cell", f"probe:{rows}",
                                   "--side", str(args.side)], check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {row['rows']} | {row['above_mib']:.0f} | {row['seconds']:.1f} |", flush=True)
        return
    print(f"side {args.side} px, {args.steps} steps | batch | max rows | peak MiB | baseline MiB | above baseline MiB | s/job")
    for cell in args.cells.split(","):
        done = subprocess.run([sys.executable, "-m", "unsample_lab.bench.batch_memory", "--cell", cell,
                               "--side", str(args.side), "--steps", str(args.steps), "--model", args.model], check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        cap = row["max_rows"] or "none"
        print(f"| {row['batch']} | {cap} | {row['peak_mib']:.0f} | {row['baseline_mib']:.0f} | {row['above_mib']:.0f} | "
              f"{row['seconds_per_job']:.1f} | done {row['done']}, failed {row['failed']}", flush=True)


if __name__ == "__main__":
    main()
