"""``unsample bench fidelity``: how much of an image each model's autoencoder keeps, on three sets.

- ``scenes``: in-distribution shapes-world scenes (the sources of ``random_edit_pairs``);
- ``robust:<variant>``: the same scenes under each robustness variant (`unsample_lab.shapes.robustness`);
- ``photo:<name>``: the photographs and pictures shipped inside scikit-image's wheel (`PHOTOGRAPHS`,
  the ones that load without a network), read by `unsample.images.load_image` and fitted the way
  ``unsample edit`` fits an image (shorter side to the model's resolution, centre crop).

Each image is scored by `unsample.editing.fidelity.input_fidelity` (one encode and one decode), so the
table is exactly what the editor would say. With ``reconstruction`` the bench also inverts and
replays (``methods`` x ``guidance``, the edit's default steps) a few images of each set and reports
how far each method's reconstruction falls below the autoencoder's floor: the figures behind
`unsample.editing.fidelity.RECONSTRUCTION_GAP_DB`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import unsample
from unsample import defaults
from unsample.api import prepare_image
from unsample.backends.base import Model
from unsample.editing.fidelity import input_fidelity
from unsample.errors import InputError
from unsample.images import load_image
from unsample_lab.shapes import random_edit_pairs
from unsample_lab.shapes.robustness import robustness_pairs

PHOTOGRAPHS: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "brick", "grass", "gravel", "moon", "clock",
    "page", "text", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo", "checkerboard",
    "horse", "cell",
)
"""skimage.data images that ship in its wheel (no download). Grey, boolean and RGBA ones go through
`load_image`'s own conversion, as a user's file would."""


@dataclass(frozen=True)
class FidelityBench:
    scenes: int = 20
    seed: int = 0
    robustness: bool = True
    photographs: bool = True
    reconstruction: int = 0
    """Images per set (scenes, photographs) inverted and replayed; 0 = none."""
    methods: tuple[str, ...] = ("ddim", "edict")
    guidance: tuple[float, ...] = (1.0, defaults.EDIT_GUIDANCE)
    steps: int = defaults.EDIT_STEPS


def photograph(name: str) -> np.ndarray:
    """One of `PHOTOGRAPHS` as an array `load_image` reads (boolean pictures as 0 / 255)."""
    import skimage.data  # loaded by the bench only (about 0.4 s)

    image = np.asarray(getattr(skimage.data, name)())
    return image.astype(np.uint8) * 255 if image.dtype == bool else image


def images(bench: FidelityBench) -> Iterator[tuple[str, str, Any, str]]:
    """(set, name, image, prompt) for every image of the bench, scenes first."""
    pairs = random_edit_pairs(bench.scenes, bench.seed)
    for i, pair in enumerate(pairs):
        yield "scenes", f"scene {i}", pair.source.image, pair.source_caption
    if bench.robustness:
        for perturbed in robustness_pairs(pairs, bench.seed):
            yield f"robust:{perturbed.variant}", perturbed.description, perturbed.source, perturbed.pair.source_caption
    if bench.photographs:
        for name in PHOTOGRAPHS:
            yield "photo", name, photograph(name), ""


def run(model: Model, bench: FidelityBench) -> list[dict[str, Any]]:
    """One row per image: its set, name and autoencoder PSNR (inf = lossless)."""
    rows = []
    for group, name, image, prompt in images(bench):
        fid = input_fidelity(model, prepare_image(model, load_image(image)))
        rows.append({"set": group, "image": name, "prompt": prompt,
                     "autoencoder_psnr": math.inf if fid.autoencoder_psnr is None else fid.autoencoder_psnr})
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set (photographs one by one): count, min, median, max autoencoder PSNR."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        key = f"photo: {row['image']}" if row["set"] == "photo" else row["set"]
        groups.setdefault(key, []).append(row["autoencoder_psnr"])
    return [{"set": key, "images": len(v), "min": min(v), "median": float(np.median(v)), "max": max(v),
             "warned": sum(x < defaults.REPRESENTABLE_PSNR for x in v) / len(v)} for key, v in groups.items()]


def reconstruction_gaps(model: Model, bench: FidelityBench, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For the first ``bench.reconstruction`` scenes and photographs: each method's reconstruction
    (inverted and replayed at each guidance, the inversion's own) against the autoencoder's floor."""
    chosen = [r for r in rows if r["set"] == "scenes"][: bench.reconstruction]
    chosen += [r for r in rows if r["set"] == "photo"][: bench.reconstruction]
    lookup = {(g, n): img for g, n, img, _ in images(bench)}
    out = []
    for row in chosen:
        pixels = prepare_image(model, load_image(lookup[(row["set"], row["image"])]))
        prompt = row["prompt"] if _understood(model, row["prompt"]) else ""
        for method in bench.methods:
            for g in bench.guidance:
                inv = unsample.invert(model, pixels, prompt, method=method, steps=bench.steps, guidance=g,
                                      unknown_words="checked")
                recon = unsample.reconstruct(model, inv, output="latent")
                fid = input_fidelity(model, pixels, latent=inv.image_latent, reconstruction=recon, method=method)
                out.append({"set": row["set"], "image": row["image"], "method": method, "guidance": g,
                            "autoencoder_psnr": row["autoencoder_psnr"], "reconstruction_psnr": fid.reconstruction_psnr,
                            "gap": fid.reconstruction_gap, "named_exact": fid.exact_method})
    return out


def _understood(model: Model, prompt: str) -> bool:
    """The model takes ``prompt`` as it is (a class-conditional pixel model takes only its class names)."""
    try:
        model.encode_prompt(prompt)
    except InputError:
        return False
    return not model.unknown_words(prompt)


def _db(v: float | None) -> str:
    return "-" if v is None else ("lossless" if math.isinf(v) else f"{v:.1f}")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"| set | images | min dB | median dB | max dB | warned at {defaults.REPRESENTABLE_PSNR:g} dB |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['images']} | {_db(r['min'])} | {_db(r['median'])} | {_db(r['max'])} | {r['warned']:.0%} |"
              for r in summary(rows)]
    return "\n".join(lines)


def gap_table(rows: list[dict[str, Any]]) -> str:
    """Per (set, method, guidance): min / median / max of the gap below the floor."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["method"], r["guidance"]), []).append(r["gap"])
    lines = ["| set | method | guidance | images | gap below floor dB (min / median / max) |", "|---|---|---|---|---|"]
    for (group, method, g), v in groups.items():
        lines.append(f"| {group} | {method} | {g:g} | {len(v)} | {min(v):.1f} / {float(np.median(v)):.1f} / {max(v):.1f} |")
    return "\n".join(lines)

