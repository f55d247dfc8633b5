"""``python -m unsample_lab.bench.embedded_methods [--model embedded-flow]``: the figures
tests/test_embedded_methods.py (and, for the flow model, tests/test_embedded_flow_methods.py) asserts.

Two checks on an embedded model, one held-out one-object scene each, pixel MSE on [0, 1]
against the source render (the VAE floor is the MSE of decoding the image's own latent):

- ``fixed_point_vs_ddim``: DDIM and fixed-point inversion at guidance 7, 20 steps;
- ``null_text_vs_ddim``: null-text and DDIM inversion at guidance 7.5, 50 steps, and null-text's
  mean number of inner optimisation steps; the command also runs null-text at learning rates
  0.03 (the flow model's test) and 0.1 beside the paper's 1e-2, and prints the RMS of the
  unconditional text embedding that null-text optimises;
- ``exact_vs_ddim_latent``: the latent round trip (invert, then sample back; mean squared error
  against the image's own latent, so no autoencoder in it) of DDIM, EDICT and BDIA at guidance 5,
  10 steps: the exact methods invert their own sampler algebraically, DDIM only approximately.

The tests call these same functions and assert on what they return; this command prints it.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from PIL import Image

import unsample
from unsample_lab.bench.stats import decoded_uint8
from unsample_lab.shapes import caption, random_scene, render

NULL_TEXT_LR = 0.03
"""The null-text learning rate the flow model's test uses (the paper's 1e-2 is too small for it)."""


def held_out_scene(seed: int) -> tuple[Any, str]:
    """(PIL image, caption) of a held-out one-object shapes-world scene."""
    scene = random_scene(np.random.default_rng(seed), n_objects=1, split="heldout")
    return Image.fromarray(render(scene).image), caption(scene)


def pixel_mse(model: Any, latent: Any, image: Any) -> float:
    """MSE on [0, 1] between the decoded ``latent`` and ``image``."""
    out = decoded_uint8(model, latent).astype(np.float64) / 255
    return float(np.mean((out - np.asarray(image, dtype=np.float64) / 255) ** 2))


def _reconstruction_mse(model: Any, image: Any, cap: str, method: str, steps: int, guidance: float,
                        **options: Any) -> tuple[float, Any]:
    inv = unsample.invert(model, image, cap, method=method, steps=steps, guidance=guidance, **options)
    return pixel_mse(model, unsample.reconstruct(model, inv, output="latent"), image), inv


def fixed_point_vs_ddim(model: Any, seed: int = 0) -> dict[str, float]:
    """Reconstruction MSE of DDIM and fixed-point inversion at guidance 7 (20 steps), and the floor."""
    image, cap = held_out_scene(seed)
    ddim, _ = _reconstruction_mse(model, image, cap, "ddim", 20, 7.0)
    fixed, inv = _reconstruction_mse(model, image, cap, "fixed-point", 20, 7.0)
    return {"ddim": ddim, "fixed-point": fixed, "floor": pixel_mse(model, inv.image_latent, image)}


def _null_text(model: Any, image: Any, cap: str, lr: float | None) -> dict[str, float]:
    """Null-text at guidance 7.5 (50 steps) with learning rate ``lr`` (None: the method's default):
    its reconstruction MSE, the VAE floor, the mean inner steps and the range of each step's last
    inner loss."""
    options = {} if lr is None else {"lr": lr}
    null, inv = _reconstruction_mse(model, image, cap, "null-text", 50, 7.5, **options)
    losses = [v for v in inv.stats["last_inner_loss"] if v is not None]
    return {"null-text": null, "floor": pixel_mse(model, inv.image_latent, image),
            "mean_inner_steps": float(inv.stats["mean_inner_steps"]),
            "inner_loss_min": min(losses), "inner_loss_max": max(losses)}


def null_text_vs_ddim(model: Any, seed: int = 1, lr: float | None = None) -> dict[str, float]:
    """Reconstruction MSE of null-text (its learning rate ``lr``, default the method's) and DDIM
    inversion at guidance 7.5 (50 steps), floor, inner steps."""
    image, cap = held_out_scene(seed)
    ddim, _ = _reconstruction_mse(model, image, cap, "ddim", 50, 7.5)
    return {**_null_text(model, image, cap, lr), "ddim": ddim}


def text_embedding_rms(model: Any) -> dict[str, float]:
    """RMS of each floating tensor of the model's unconditional ("") conditioning: the scale an
    optimiser of the null embedding (null-text) moves in."""
    uncond = model.denoiser("", guidance=7.5).uncond
    return {k: float(v.float().pow(2).mean().sqrt()) for k, v in uncond.tensors().items() if v.is_floating_point()}


def exact_vs_ddim_latent(model: Any, seed: int = 2) -> dict[str, float]:
    """Latent MSE of invert-then-sample for DDIM, EDICT and BDIA at guidance 5 (10 steps)."""
    image, cap = held_out_scene(seed)
    errors: dict[str, float] = {}
    for method in ("ddim", "edict", "bdia"):
        inv = unsample.invert(model, image, cap, method=method, steps=10, guidance=5.0)
        back = unsample.reconstruct(model, inv, output="latent")
        errors[method] = float((back.float() - inv.image_latent.float()).pow(2).mean())
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unsample_lab.bench.embedded_methods", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded", choices=("embedded", "embedded-flow"),
                        help="the embedded UNet model (default) or the embedded flow model")
    args = parser.parse_args(argv)
    model = unsample.load(args.model, device="cpu")
    print(f"model {model.fingerprint}")
    fp = fixed_point_vs_ddim(model)
    print(f"guidance 7, 20 steps: DDIM {fp['ddim']:.2e}, fixed-point {fp['fixed-point']:.2e}, "
          f"VAE floor {fp['floor']:.2e} (pixel MSE)")
    default = null_text_vs_ddim(model)
    print(f"guidance 7.5, 50 steps: DDIM {default['ddim'] / default['floor']:.2f}x the VAE floor")
    image, cap = held_out_scene(1)
    for lr in (None, NULL_TEXT_LR, 0.1):
        nt = default if lr is None else _null_text(model, image, cap, lr)
        print(f"  null-text ({'the default learning rate' if lr is None else f'lr {lr:g}'}) "
              f"{nt['null-text'] / nt['floor']:.3f}x, {nt['mean_inner_steps']:.2f} inner steps on average, "
              f"last inner loss {nt['inner_loss_min']:.1e} to {nt['inner_loss_max']:.1e}")
    print("unconditional text embedding RMS: " + ", ".join(f"{k} {v:.2f}" for k, v in text_embedding_rms(model).items()))
    ex = exact_vs_ddim_latent(model)
    print("guidance 5, 10 steps, latent round trip (MSE): " + ", ".join(f"{k} {v:.2e}" for k, v in ex.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
