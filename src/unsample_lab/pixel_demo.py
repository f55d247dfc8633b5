"""``unsample demo --model embedded-pixel``: classifier guidance turns an inverted circle into a star.

The classic guided-diffusion inversion demo on the embedded pixel model (32 px, no autoencoder):

1. render a one-object scene with a circle and DDIM-invert it (``source_prompt``: its class);
2. replay the inversion (the round trip, exact up to float error) as the reconstruction;
3. sample again from the inverted noise with the target class and classifier guidance toward
   "star", eps_hat = eps - s sqrt(1 - a_t) grad log p_phi(star | x_t), inside DiffEdit's noise
   mask of the two classes (outside it the edit follows the inverted trajectory);
4. write the "jumping prediction" grids: x_t, x0_hat and their difference along the inversion
   and along the guided edit, and ask the analytic detector what the edit shows.

Everything runs offline from the package's own weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import unsample
from unsample import trajectory as tv
from unsample.backends.noisy_classifier import NoisyClassifier
from unsample.images import psnr as image_psnr
from unsample_lab.demo import side_by_side, write_demo_files
from unsample_lab.embedded import model_classifier_file
from unsample_lab.shapes import detect, parse_caption, render, scene_from_spec

PIXEL_SOURCE_CAPTION = "a large yellow circle on a plain gray background"
SOURCE_CLASS = "circle"
TARGET_CLASS = "star"
CLASSIFIER_SCALE = 2.0
"""The demo's classifier guidance scale: with `EDIT_MASK` grown by `EDIT_MASK_DILATE`, the most
stars on held-out circles (docs/pixel.md, `python -m unsample_lab.bench.pixel_edit`)."""
EDIT_MASK = "noise"
"""The edit changes only inside DiffEdit's mask of the two labels (circle vs star); outside it the
edit takes the inverted trajectory, so the background is the source's (docs/pixel.md)."""
EDIT_MASK_DILATE = 1
"""The mask grown by 1 pixel: the star's points reach past the cells where the labels' noise
predictions differ most."""


def is_pixel_demo_model(model: str) -> bool:
    """The embedded pixel model, or a folder that holds a pixel pipeline and its classifier."""
    try:
        model_classifier_file(model)
    except ValueError:
        return False
    return True


@dataclass
class PixelDemoResult:
    folder: Path
    files: dict[str, Path]
    psnr_reconstruction: float
    seconds: float
    model: str
    edit_shapes: list[str]
    edit_correct: bool


def edit_verdict(source_scene: Any, edited: np.ndarray, target_shape: str) -> dict[str, Any]:
    """What the detector reads in ``edited``: shapes, and whether it is the source scene with its
    object's shape changed to ``target_shape`` (colour, size, background and texture kept)."""
    found = detect(edited)
    obj = source_scene.objects[0]
    shapes = [o.shape for o in found.objects]
    right = (len(found.objects) == 1 and found.objects[0].shape == target_shape
             and found.objects[0].color == obj.color and found.background == source_scene.background
             and found.texture == source_scene.texture)
    return {"shapes": shapes, "colors": [o.color for o in found.objects], "background": found.background,
            "texture": found.texture, "correct": bool(right)}


def background_psnr(source: np.ndarray, edited: np.ndarray, source_mask: np.ndarray) -> float:
    """PSNR (dB) of the edit against the source away from both objects (each grown by 2 px)."""
    from scipy.ndimage import binary_dilation  # heavy (scipy): loaded on use

    found = detect(edited)
    union = source_mask.copy()
    for o in found.objects:
        union |= o.mask
    keep = ~binary_dilation(union, iterations=2)
    err = (source.astype(np.float64) - edited.astype(np.float64))[keep]
    mse = float(np.mean(err**2)) if err.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _grid(m: Any, den: Any, grid: Any, states: torch.Tensor, title: str) -> Image.Image:
    return tv.render(m, tv.panels(den, grid, states, tv.default_steps(len(states) - 1)), title)


def run_pixel_demo(
    out: Path,
    *,
    model: str = "embedded-pixel",
    device: str = "auto",
    steps: int = 50,
    scale: float = CLASSIFIER_SCALE,
    source_prompt: str = SOURCE_CLASS,
    target_prompt: str = TARGET_CLASS,
    seed: int = 0,
) -> PixelDemoResult:
    """Invert the demo scene, reconstruct it, edit its circle into a star by classifier guidance;
    write PNGs, the two trajectory grids and ``demo.json``."""
    begin = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    classifier_file = model_classifier_file(model)
    m = unsample.load(model, device=device)
    classifier = NoisyClassifier.load(classifier_file, device=m.device)
    steer = classifier.guidance(target_prompt if target_prompt else TARGET_CLASS, scale)
    scene = scene_from_spec(parse_caption(PIXEL_SOURCE_CAPTION), np.random.default_rng(seed))
    rendered = render(scene, size=m.resolution)
    source = Image.fromarray(rendered.image)

    inv = unsample.invert(m, source, source_prompt, method="ddim", steps=steps, guidance=1.0, seed=seed)
    recon = unsample.reconstruct(m, inv, output="result")
    # the guided edit, its states collected for the jumping-prediction grid
    edit_states = [inv.trajectory[0].clone()]
    edit = unsample.edit(m, inv, target_prompt, guidance=1.0, classifier_guidance=steer, output="result",
                         mask=EDIT_MASK if target_prompt != source_prompt else "none", mask_dilate=EDIT_MASK_DILATE,
                         on_step=lambda i, x: edit_states.append(x.detach().cpu().clone()))
    recon_img, edit_img = recon.image, edit.image
    rungs = len(edit.ladder.attempts) if edit.ladder is not None else 1  # recipes tried (one: classifier-guided)

    grid = inv.grid(m)
    inversion_grid = _grid(m, m.denoiser(source_prompt), grid, inv.trajectory,
                           f"DDIM inversion, {steps} steps, class {source_prompt or 'none'}")
    edit_grid = _grid(m, m.denoiser(target_prompt, classifier=steer), grid, torch.stack(edit_states),
                      f"edit: class {target_prompt or 'none'} + classifier guidance to {TARGET_CLASS} (s={scale:g})")

    psnr = image_psnr(source, recon_img)
    edited = np.asarray(edit_img)
    verdict = edit_verdict(scene, edited, TARGET_CLASS)
    shown = {"source": source, "reconstruction": recon_img, "edit": edit_img,
             "inversion_trajectory": inversion_grid, "edit_trajectory": edit_grid,
             "side_by_side": side_by_side([("source", source), (f"round trip {psnr:.1f} dB", recon_img),
                                           (f"edit: {', '.join(verdict['shapes']) or 'nothing'}", edit_img)])}
    seconds = time.perf_counter() - begin
    record = {
        "model": model,
        "source_caption": PIXEL_SOURCE_CAPTION,
        "source_prompt": source_prompt,
        "target_prompt": target_prompt,
        "classifier": {"file": str(classifier_file), "target": TARGET_CLASS, "scale": scale},
        "mask": edit.mask_source,
        "mask_dilate": EDIT_MASK_DILATE,
        "mask_area": None if edit.mask is None else round(float(edit.mask.float().mean()), 4),
        "steps": steps,
        "psnr_reconstruction_db": round(psnr, 3),
        # pixels in [0, 1]; the "latent" is 2 x - 1
        "round_trip_max_abs_error": float((recon.latent.float() - inv.image_latent.float()).abs().max()) / 2,
        "edit_detected": verdict,
        "edit_background_psnr_db": round(background_psnr(rendered.image, edited, rendered.masks[0]), 3),
        "nfe": {"invert": inv.nfe, "reconstruct": recon.nfe, "edit": edit.network_evaluations, "of_it_mask": edit.mask_nfe,
                "of_it_checks": rungs * (edit.check.evaluations if edit.check is not None else 0), "rungs": rungs},
        "seconds": {"invert": round(inv.seconds, 3), "reconstruct": round(recon.seconds, 3),
                    "edit": round(edit.seconds, 3), "total": round(seconds, 3)},
    }
    files = write_demo_files(out, shown, record)
    return PixelDemoResult(out, files, psnr, seconds, model, verdict["shapes"], verdict["correct"])
