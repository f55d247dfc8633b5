"""``unsample bench edit``: edits with exact right answers, from the shapes world's edit pairs.

Each pair changes one thing (an object's colour, shape or size, or the background) and carries
the exact target render and the edit mask. For every method x control we invert the source with
the source caption, edit with the target caption, and measure: edit success (the analytic
detector reads the target caption's objects and background in the edited image), MSE / PSNR /
SSIM of the background outside the edit mask (against the source), PSNR to the exact target
render, model evaluations and wall time. Results are grouped by edit kind.
"""

from __future__ import annotations

import csv
import json
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

CONTROLS: dict[str, dict[str, Any]] = {
    "swap": {"control": "none"},
    "p2p": {"control": "replace"},
    "p2p+blend": {"control": "replace", "blend": True},
    "direct+p2p": {"control": "replace", "direct": True},
}


@dataclass(frozen=True)
class EditBench:
    methods: tuple[str, ...] = ("ddim", "null-text", "edict")
    controls: tuple[str, ...] = tuple(CONTROLS)
    pairs: int = 50
    kinds: tuple[str, ...] = ("color", "shape", "size", "background")
    steps: int = 50
    inversion_guidance: float = 1.0
    edit_guidance: float = 5.0
    start_step: int = 0
    cross_steps: float = 0.8
    self_steps: float = 0.4
    seed: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


def changed_words(source: str, target: str) -> tuple[list[str], list[str]]:
    import difflib

    a, b = source.split(), target.split()
    removed, added = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b).get_opcodes():
        if op != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added


def blend_words_for(pair: Any) -> tuple[str, ...]:
    """The words whose attention marks the region an edit may change."""
    from unsample.shapes import SHAPES

    removed, added = changed_words(pair.source_caption, pair.target_caption)
    words = set(removed + added)
    if pair.object_index is not None:
        words.add(pair.source.scene.objects[pair.object_index].shape)
        words.add(pair.target.scene.objects[pair.object_index].shape)
    else:
        words.add("background")
    return tuple(sorted(w for w in words if w in SHAPES or w in removed + added or w == "background"))


def _uint8(model: Any, latent: torch.Tensor) -> np.ndarray:
    from unsample.images import tensor_to_pil

    return np.asarray(tensor_to_pil(model.decode_latent(latent.float())))


def run(model: Any, bench: EditBench, progress: bool = True, gallery: int = 4) -> dict[str, Any]:
    import unsample
    from unsample.bench.stats import image_metrics
    from unsample.shapes import detect, detection_matches, random_edit_pairs

    pairs = random_edit_pairs(bench.pairs, bench.seed, kinds=bench.kinds, size=model.resolution, split="heldout")
    rows: list[dict[str, Any]] = []
    shown: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = defaultdict(list)
    for method in bench.methods:
        opts = bench.options.get(method, {})
        for k, pair in enumerate(pairs):
            src = pair.source.image
            t0 = time.perf_counter()
            inv = unsample.invert(model, Image.fromarray(src), pair.source_caption, method=method, steps=bench.steps,
                                  guidance=bench.inversion_guidance, seed=bench.seed, **opts)
            t_inv = time.perf_counter() - t0
            for control in bench.controls:
                c = CONTROLS[control]
                if c.get("direct") and method in ("edict", "bdia"):
                    continue  # exact methods need no Direct Inversion
                t = time.perf_counter()
                res = unsample.edit(
                    model, inv, pair.target_caption, start_step=bench.start_step, guidance=bench.edit_guidance,
                    control=c["control"], blend_words=blend_words_for(pair) if c.get("blend") else (),
                    cross_steps=bench.cross_steps, self_steps=bench.self_steps, direct=bool(c.get("direct")),
                    output="result",
                )
                seconds = time.perf_counter() - t
                edited = _uint8(model, res.latent)
                keep = ~pair.mask
                bg = image_metrics(edited, src, keep)
                to_target = image_metrics(edited, pair.target.image)
                rows.append({
                    "method": method, "control": control, "kind": pair.kind, "pair": k,
                    "success": bool(detection_matches(detect(edited), pair.target_caption, check_size=pair.kind == "size",
                                                      check_texture=pair.kind == "background")),
                    "bg_mse": bg["mse"], "bg_psnr": bg["psnr"], "bg_ssim": bg["ssim"],
                    "target_psnr": to_target["psnr"], "nfe": inv.nfe + res.nfe,
                    "seconds": t_inv + seconds, "edit_seconds": seconds,
                })
                key = f"{method} / {control}"
                if len(shown[key]) < gallery:
                    shown[key].append((src, edited, pair.target.image))
                if progress:
                    r = rows[-1]
                    print(f"  {method:>12} {control:<11} {pair.kind:<10} ok={r['success']!s:<5} bg_psnr={r['bg_psnr']:.1f} "
                          f"({seconds:.1f} s)", flush=True)
    return {"per_pair": rows, "summary": summarise(rows), "gallery": shown}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["control"], r["kind"])].append(r)
        groups[(r["method"], r["control"], "all")].append(r)
    out = []
    for (method, control, kind), items in groups.items():
        finite = [x["bg_psnr"] for x in items if np.isfinite(x["bg_psnr"])]
        out.append({
            "method": method, "control": control, "kind": kind, "pairs": len(items),
            "success": float(np.mean([x["success"] for x in items])),
            "bg_psnr": float(np.mean(finite)) if finite else float("nan"),
            "bg_ssim": float(np.nanmean([x["bg_ssim"] for x in items])),
            "bg_mse": float(np.nanmean([x["bg_mse"] for x in items])),
            "target_psnr": float(np.mean([x["target_psnr"] for x in items])),
            "nfe": float(np.mean([x["nfe"] for x in items])),
            "seconds": float(np.mean([x["seconds"] for x in items])),
        })
    return sorted(out, key=lambda r: (r["kind"] != "all", r["kind"], r["method"], r["control"]))


def report_table(summary: list[dict[str, Any]], kind: str = "all") -> str:
    lines = ["| method | control | pairs | edit success | background PSNR dB | background SSIM | PSNR to exact target dB | NFE / pair | s / pair |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        if r["kind"] == kind:
            lines.append(f"| {r['method']} | {r['control']} | {r['pairs']} | {100 * r['success']:.0f}% | {r['bg_psnr']:.2f} | "
                         f"{r['bg_ssim']:.4f} | {r['target_psnr']:.2f} | {r['nfe']:.0f} | {r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def write_gallery(shown: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]], path: Path, scale: int = 2) -> None:
    from PIL import ImageDraw

    if not shown:
        return
    side = next(iter(shown.values()))[0][0].shape[0] * scale
    per = max(len(v) for v in shown.values())
    sheet = Image.new("RGB", (170 + per * (3 * side + 12), len(shown) * (side + 6) + 16), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((170, 2), "each triple: source | edited | exact target", fill="black")
    for r, (key, items) in enumerate(shown.items()):
        y = 16 + r * (side + 6)
        draw.text((4, y + side // 2 - 6), key, fill="black")
        for c, triple in enumerate(items):
            for j, arr in enumerate(triple):
                img = Image.fromarray(arr).resize((side, side), Image.Resampling.NEAREST)
                sheet.paste(img, (170 + c * (3 * side + 12) + j * side, y))
    sheet.save(path)


def write_report(result: dict[str, Any], bench: EditBench, out: Path, command: str, model: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "bench": asdict(bench), "model": model.name, "model_fingerprint": model.fingerprint,
            "device": str(model.device), "versions": {"python": platform.python_version(), "torch": torch.__version__}}
    (out / "results.json").write_text(json.dumps({**meta, "summary": result["summary"], "per_pair": result["per_pair"]}, indent=2) + "\n")
    with open(out / "per_pair.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["per_pair"][0]))
        w.writeheader()
        w.writerows(result["per_pair"])
    write_gallery(result["gallery"], out / "gallery.png")
    kinds = sorted({r["kind"] for r in result["summary"] if r["kind"] != "all"})
    body = f"# Edit benchmark\n\nCommand: `{command}`\n\nModel: {model.name} ({model.fingerprint}); {bench.pairs} held-out edit pairs; " \
           f"inversion guidance {bench.inversion_guidance:g}, edit guidance {bench.edit_guidance:g}, {bench.steps} steps.\n\n" \
           "## All kinds\n\n" + report_table(result["summary"])
    for kind in kinds:
        body += f"\n## {kind}\n\n" + report_table(result["summary"], kind)
    body += "\n![gallery](gallery.png)\n"
    (out / "report.md").write_text(body)
