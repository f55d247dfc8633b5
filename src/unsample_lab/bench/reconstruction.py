"""``unsample bench reconstruction``: how well each method gives back the image it inverted.

Rows: the autoencoder floor (encode then decode, no diffusion), then every method x steps x
guidance. Columns: MSE and PSNR on [0, 1] pixels, SSIM, model evaluations (NFE) per image, wall
time per image, and two statistics of the inverted noise: its std against the schedule's
expected value and its lag-1 spatial autocorrelation (image structure left in the "noise").
Images come from the shapes world's held-out scenes (``--scenes N``) or a folder plus a JSONL
of prompts. Writes report.md, results.json, per_image.csv and plots into ``--out``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import unsample
from unsample.api import prepare_image
from unsample.errors import InputError
from unsample.images import fit_image, load_image
from unsample_lab.bench.report import report_folder, run_metadata, write_csv, write_json
from unsample_lab.bench.stats import decoded_uint8, expected_noise_std, image_metrics, lag1_autocorrelation
from unsample_lab.shapes import caption, random_scene, render


@dataclass(frozen=True)
class ReconstructionBench:
    methods: tuple[str, ...]
    steps: tuple[int, ...] = (50,)
    guidance: tuple[float, ...] = (1.0, 7.0)
    scenes: int = 20
    seed: int = 0
    images_dir: str | None = None
    prompts_file: str | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_inputs(bench: ReconstructionBench, resolution: int) -> list[tuple[str, Image.Image, str]]:
    """(name, image, prompt) triples: held-out shapes scenes, or a folder + JSONL of prompts."""
    if bench.images_dir or bench.prompts_file:
        if not (bench.images_dir and bench.prompts_file):
            raise InputError("--images and --prompts go together: a folder and a JSONL of {\"image\": ..., \"prompt\": ...} lines")

        rows = []
        for n, line in enumerate(Path(bench.prompts_file).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                rows.append((item["image"], load_image(Path(bench.images_dir) / item["image"]), item.get("prompt", "")))
            except (json.JSONDecodeError, KeyError) as err:
                raise InputError(f"{bench.prompts_file}:{n}: expected {{\"image\": ..., \"prompt\": ...}} ({err})") from None
        return rows

    rng = np.random.default_rng(bench.seed)
    out = []
    for k in range(bench.scenes):
        scene = random_scene(rng, split="heldout")
        out.append((f"scene{k:03d}", Image.fromarray(render(scene, size=resolution).image), caption(scene)))
    return out


def run(model: Any, bench: ReconstructionBench, progress: bool = True) -> dict[str, Any]:
    """Every row's per-image figures and their means."""
    inputs = load_inputs(bench, model.resolution)
    per_image: list[dict[str, Any]] = []
    for name, image, prompt in inputs:
        target = np.asarray(fit_image(image, model.resolution, model.size_multiple))
        t = time.perf_counter()
        latent = model.encode_image(prepare_image(model, image))
        floor = decoded_uint8(model, latent)
        per_image.append({"row": "autoencoder", "method": "autoencoder", "steps": 0, "guidance": 0.0, "image": name,
                          "nfe": 0, "seconds": time.perf_counter() - t, **image_metrics(floor, target)})
    configs = [(m, s, g) for m in bench.methods for s in bench.steps for g in bench.guidance]
    for method, steps, guidance in configs:
        opts = bench.options.get(method, {})
        for name, image, prompt in inputs:
            target = np.asarray(fit_image(image, model.resolution, model.size_multiple))
            t = time.perf_counter()
            inv = unsample.invert(model, image, prompt, method=method, steps=steps, guidance=guidance, seed=bench.seed, **opts)
            res = unsample.reconstruct(model, inv, output="result")
            seconds = time.perf_counter() - t
            grid = inv.grid(model)
            sigma_space = inv.stats.get("space") == "sigma"
            per_image.append({
                "row": f"{method} s={steps} g={guidance:g}", "method": method, "steps": steps, "guidance": guidance,
                "image": name, "nfe": inv.nfe + res.nfe, "seconds": seconds,
                **image_metrics(decoded_uint8(model, res.latent), target),
                "noise_std": float(inv.noise.double().std()),
                "noise_std_expected": expected_noise_std(float(grid.alphas[0]), inv.image_latent, sigma_space),
                "noise_lag1": lag1_autocorrelation(inv.noise),
            })
            if progress:
                print(f"  {method} steps={steps} g={guidance:g} {name}: mse={per_image[-1]['mse']:.2e} ({seconds:.1f} s)", flush=True)
    return {"per_image": per_image, "rows": summarise(per_image)}


def summarise(per_image: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in per_image:
        groups[r["row"]].append(r)
    floor = float(np.mean([r["mse"] for r in groups.get("autoencoder", [])])) if "autoencoder" in groups else float("nan")
    rows = []
    for key, items in groups.items():
        row = {k: items[0][k] for k in ("row", "method", "steps", "guidance")}
        for col in ("mse", "psnr", "ssim", "nfe", "seconds", "noise_std", "noise_std_expected", "noise_lag1"):
            vals = [r[col] for r in items if col in r]
            if vals:
                row[col] = float(np.mean(vals))
        row["mse_over_floor"] = row["mse"] / floor if floor == floor and floor > 0 else float("nan")
        row["images"] = len(items)
        rows.append(row)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def report_table(rows: list[dict[str, Any]]) -> str:
    head = "| row | MSE [0,1] | x floor | PSNR dB | SSIM | NFE / image | s / image | noise std (expected) | noise lag-1 |\n"
    head += "|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        std = f"{_fmt(r.get('noise_std'), '.3f')} ({_fmt(r.get('noise_std_expected'), '.3f')})" if "noise_std" in r else ""
        lines.append(
            f"| {r['row']} | {_fmt(r['mse'], '.2e')} | {_fmt(r['mse_over_floor'], '.2f')} | {_fmt(r['psnr'], '.2f')} | "
            f"{_fmt(r['ssim'], '.4f')} | {_fmt(r['nfe'], '.0f')} | {_fmt(r['seconds'], '.2f')} | {std} | {_fmt(r.get('noise_lag1'), '.3f')} |"
        )
    return head + "\n".join(lines) + "\n"


def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib  # heavy; the Agg backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = next((r["mse"] for r in rows if r["method"] == "autoencoder"), None)
    written = []
    for xkey, fname, xlabel in (("steps", "error_vs_steps.png", "steps"), ("nfe", "error_vs_nfe.png", "model evaluations (invert + reconstruct)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        series: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            if r["method"] != "autoencoder":
                series[(r["method"], r["guidance"])].append((r[xkey], r["mse"]))
        for (method, g), pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{method} g={g:g}")
        if floor:
            ax.axhline(floor, color="gray", linestyle="--", label="autoencoder floor")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("reconstruction MSE on [0, 1]")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
        written.append(out / fname)
    return written


def _write_report_files(result: dict[str, Any], bench: ReconstructionBench, out: Path, command: str, model: Any) -> None:
    rows = result["rows"]

    write_json(out / "results.json", {**run_metadata(command, bench, model), "rows": rows, "per_image": result["per_image"]})
    write_csv(out / "per_image.csv", result["per_image"])
    plots(rows, out)
    (out / "report.md").write_text(
        f"# Reconstruction benchmark\n\nCommand: `{command}`\n\nModel: {model.name} ({model.fingerprint}), "
        f"{len([r for r in result['per_image'] if r['method'] == 'autoencoder'])} images. MSE on [0, 1] pixels; "
        "NFE counts both CFG halves, inversion plus reconstruction.\n\n" + report_table(rows)
        + "\n![error vs steps](error_vs_steps.png) ![error vs NFE](error_vs_nfe.png)\n"
    )


def write_report(result: dict[str, Any], bench: ReconstructionBench, out: Path, command: str, model: Any) -> None:
    """Write the report folder ``out`` in full or not at all (`unsample_lab.bench.report.report_folder`)."""
    with report_folder(out) as tmp:
        _write_report_files(result, bench, tmp, command, model)
