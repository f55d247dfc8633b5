"""``unsample demo``: invert a built-in shapes-world scene, reconstruct it and edit it.

On the embedded model (the default) the whole run takes seconds on a CPU. The source is
inverted and edited with `unsample edit`'s defaults (`unsample.defaults`: method, inversion and
edit guidance, the noise mask; 50 steps): the edit swaps "red" for "green" and keeps the inverted
trajectory outside the mask, which the sheet shows as an overlay. If the embedded
weights are not installed yet, the demo says so and runs the same code path on a tiny
randomly initialised SD-architecture pipeline built from configs (its pictures are noise:
it shows the plumbing, not the quality).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

import unsample
from unsample import defaults, images
from unsample.editing.masks import overlay
from unsample.embedded import embedded_model_path
from unsample.images import tensor_to_pil
from unsample_lab.shapes import parse_caption, render, scene_from_spec
from unsample_lab.testing.tiny_pipeline import build_tiny_pipeline

SOURCE_CAPTION = "a large red circle on a striped blue background"
TARGET_CAPTION = "a large green circle on a striped blue background"


@dataclass
class DemoResult:
    folder: Path
    files: dict[str, Path]
    psnr_reconstruction: float
    psnr_vae_floor: float
    seconds: float
    model: str


def side_by_side(images: list[tuple[str, Image.Image]], min_width: int = 192) -> Image.Image:
    """Images upscaled (nearest, to at least ``min_width`` pixels) in a row, each labelled above."""
    w, h = images[0][1].size
    scale = max(1, -(-min_width // w))
    cell_w, cell_h, label_h, pad = w * scale, h * scale, 18, 6
    sheet = Image.new("RGB", (len(images) * (cell_w + pad) + pad, cell_h + label_h + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(images):
        x = pad + i * (cell_w + pad)
        draw.text((x, pad // 2), label, fill="black")
        sheet.paste(img.resize((cell_w, cell_h), Image.Resampling.NEAREST), (x, pad + label_h))
    return sheet


def write_demo_files(out: Path, shown: dict[str, Image.Image], record: dict[str, Any]) -> dict[str, Path]:
    """Save each image as ``<name>.png`` and ``record`` as demo.json in ``out``; returns the paths
    by role: the image's name, except "sheet" (side_by_side), "mask" (edit.mask), "record" (JSON)."""
    roles = {"side_by_side": "sheet", "edit.mask": "mask"}
    files: dict[str, Path] = {}
    for name, image in shown.items():
        path = files[roles.get(name, name)] = out / f"{name}.png"
        image.save(path)
    files["record"] = out / "demo.json"
    files["record"].write_text(json.dumps(record, indent=2) + "\n")
    return files


def _model(model: str | None, device: str) -> tuple[Any, str]:
    if model is not None:
        return unsample.load(model, device=device), model
    if (embedded_model_path() / "model_index.json").is_file():
        return unsample.load(None, device=device), "embedded"

    folder = build_tiny_pipeline(Path(tempfile.mkdtemp(prefix="unsample-demo-")) / "tiny")
    print("note: the embedded model is not installed; running on a tiny random pipeline built from configs")
    return unsample.load(str(folder), device=device), "tiny-random (built from configs)"


def run_demo(
    out: Path,
    *,
    model: str | None = None,
    device: str = "auto",
    method: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    edit_guidance: float | None = None,
    start_step: int = 0,
    control: str = "none",
    mask: str | None = None,
    seed: int = 0,
) -> DemoResult:
    """Render, invert, reconstruct and edit the demo scene; write PNGs, a sheet and a JSON record.

    ``method``, ``steps``, ``guidance`` (inversion), ``edit_guidance`` and ``mask`` default to `unsample.defaults`.
    """
    method = defaults.EDIT_METHOD if method is None else method
    steps = defaults.EDIT_STEPS if steps is None else steps
    guidance = defaults.INVERSION_GUIDANCE if guidance is None else guidance
    edit_guidance = defaults.EDIT_GUIDANCE if edit_guidance is None else edit_guidance
    mask = defaults.EDIT_MASK if mask is None else mask

    begin = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    m, label = _model(model, device)
    scene = scene_from_spec(parse_caption(SOURCE_CAPTION), np.random.default_rng(seed))
    source = Image.fromarray(render(scene, size=m.resolution).image)
    inv = unsample.invert(m, source, SOURCE_CAPTION, method=method, steps=steps, guidance=guidance, seed=seed)
    recon = unsample.reconstruct(m, inv, output="result")
    edit = unsample.edit(m, inv, TARGET_CAPTION, start_step=start_step, guidance=edit_guidance, control=control,
                         mask=mask, output="result")
    floor = tensor_to_pil(m.decode_latent(inv.image_latent))
    recon_img, edit_img = recon.image, edit.image
    psnr = images.psnr(source, recon_img)
    floor_psnr = images.psnr(source, floor)
    shown = {"source": source, "reconstruction": recon_img, "edit": edit_img}
    panels = [("source", source), (f"reconstruction {psnr:.1f} dB", recon_img), ("edit: green circle", edit_img)]
    if edit.mask is not None:
        shown["edit.mask"] = overlay(floor, edit.mask, min_side=1)
        panels.append((f"mask ({edit.mask_source})", shown["edit.mask"]))
    shown["side_by_side"] = side_by_side(panels)
    seconds = time.perf_counter() - begin
    record = {
        "model": label,
        "source_caption": SOURCE_CAPTION,
        "target_caption": TARGET_CAPTION,
        "method": method,
        "steps": steps,
        "guidance": guidance,
        "edit_guidance": edit.guidance,
        "start_step": start_step,
        "control": control,
        "mask": edit.mask_source,
        "mask_area": None if edit.mask is None else round(float(edit.mask.float().mean()), 4),
        "psnr_reconstruction_db": round(psnr, 3),
        "psnr_vae_floor_db": round(floor_psnr, 3),
        "nfe": {"invert": inv.nfe, "reconstruct": recon.nfe, "edit": edit.network_evaluations},
        "seconds": {"invert": round(inv.seconds, 3), "reconstruct": round(recon.seconds, 3),
                    "edit": round(edit.seconds, 3), "total": round(seconds, 3)},
    }
    files = write_demo_files(out, shown, record)
    return DemoResult(out, files, psnr, floor_psnr, seconds, label)
