"""Peak memory and time of a VAE decode (and encode) with and without tiling, per image side.

    python -m unsample_lab.bench.vae_tiling [--sides 512,768,1024,1536] [--repeats 1]

The VAE is SD 1.5's architecture (``AutoencoderKL`` from its published config: block_out_channels
[128, 256, 512, 512], layers_per_block 2, latent_channels 4, sample_size 512) with random weights
(seed 0); nothing is downloaded. Each (side, tiled) cell runs in a fresh subprocess so its peak
resident memory (``ru_maxrss``) is its own; the baseline row is the same process after building the
VAE and before the decode. It prints, per side: peak MiB and seconds of the decode untiled and
tiled, and the PSNR of the tiled decode against the untiled one (the same latent, seed 0).
``unsample.backends.diffusers_common.VAE_TILE_LATENT_SIDE`` was chosen from these figures
(docs/memory.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "act_fn": "silu", "norm_num_groups": 32, "scaling_factor": 0.18215,
}


def build_vae() -> torch.nn.Module:
    from diffusers import AutoencoderKL  # heavy: on use

    torch.manual_seed(0)
    return AutoencoderKL(**SD15_VAE).eval().requires_grad_(False)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def one_cell(side: int, tiled: bool, what: str, out: str | None) -> dict[str, float]:
    """Decode (or encode) one image of ``side`` px in this process; peak MiB, seconds, and the result saved to ``out``."""
    vae = build_vae()
    if tiled:
        vae.enable_tiling()
    gen = torch.Generator().manual_seed(0)
    before = _maxrss_mib()
    with torch.no_grad():
        if what == "decode":
            z = torch.randn(1, 4, side // 8, side // 8, generator=gen)
            begin = time.perf_counter()
            result = vae.decode(z).sample
        else:
            x = torch.rand(1, 3, side, side, generator=gen) * 2 - 1
            begin = time.perf_counter()
            result = vae.encode(x).latent_dist.mean
        seconds = time.perf_counter() - begin
    if out:
        torch.save(result, out)
    return {"side": side, "tiled": tiled, "baseline_mib": before, "peak_mib": _maxrss_mib(), "seconds": seconds}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2)."""
    a, b = ((a.clamp(-1, 1) + 1) / 2), ((b.clamp(-1, 1) + 1) / 2)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="512,768,1024,1536")
    parser.add_argument("--what", choices=("decode", "encode"), default="decode")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        side, tiled = args.cell.split(":")
        print(json.dumps(one_cell(int(side), tiled == "1", args.what, args.out)))
        return
    import tempfile

    print(f"{args.what} | side px | untiled peak MiB | untiled s | tiled peak MiB | tiled s | PSNR tiled vs untiled dB | baseline MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for side in (int(s) for s in args.sides.split(",")):
            row = {}
            for tiled in (False, True):
                out = f"{tmp}/{side}_{int(tiled)}.pt"
                done = subprocess.run([sys.executable, "-m", "unsample_lab.bench.vae_tiling", "--what", args.what,
                                       "--cell", f"{side}:{int(tiled)}", "--out", out],
                                      check=True, capture_output=True, text=True)
                row[tiled] = json.loads(done.stdout.strip().splitlines()[-1])
            quality = psnr(torch.load(f"{tmp}/{side}_0.pt"), torch.load(f"{tmp}/{side}_1.pt")) if args.what == "decode" else float("nan")
            print(f"{args.what} | {side} | {row[False]['peak_mib']:.0f} | {row[False]['seconds']:.2f} | "
                  f"{row[True]['peak_mib']:.0f} | {row[True]['seconds']:.2f} | {quality:.1f} | {row[False]['baseline_mib']:.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
