"""``python -m unsample_lab.bench.families``: which methods run on which model family, and how exact
the exact methods are on each.

On the tiny random pipelines of `unsample_lab.testing.tiny_pipeline` (built from configs, no
download): the registry's answer for every method x family (`Method.refuses`), then the
round-trip error of EDICT and BDIA in float64 at 25 and 50 steps, guidance 1 and 7 (1 only for
the pixel model, which has no unconditional branch). Prints markdown tables.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

import unsample
from unsample.methods.registry import available_methods, get_method
from unsample_lab.testing import tiny_pipeline as tiny


def main() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp())
    builds = {
        "SD 1.x (eps)": (lambda f: tiny.build_tiny_pipeline(f), "a red cat", 16),
        "SD 2.x (v)": (lambda f: tiny.build_tiny_pipeline(f, prediction_type="v_prediction", timestep_spacing="trailing"),
                       "a red cat", 16),
        "SDXL": (lambda f: tiny.build_tiny_sdxl_pipeline(f), "a red cat", 32),
        "SD3": (lambda f: tiny.build_tiny_sd3_pipeline(f), "a red cat", 32),
        "Flux": (lambda f: tiny.build_tiny_flux_pipeline(f), "a red cat", 32),
        "pixel (class)": (lambda f: tiny.build_tiny_ddpm_pipeline(f, scheduler="ddim", num_class_embeds=4,
                                                                  learned_variance=True), "1", 16),
    }
    models = {}
    for k, (name, (build, prompt, side)) in enumerate(builds.items()):
        model = unsample.load(str(build(tmp / f"m{k}")), device="cpu")
        model.max_sequence_length = 16
        models[name] = (model, prompt, side)
    print("| method | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for method in available_methods():
        spec = get_method(method)
        cells = ["refused" if spec.refuses is not None and spec.refuses(m.schedule) else "yes" for m, _, _ in models.values()]
        print(f"| `{method}` | " + " | ".join(cells) + " |")
    print()
    print("| family | method | steps | guidance | round-trip max rel error (float64 states) |")
    print("|---|---|---|---|---|")
    for name, (model, prompt, side) in models.items():
        image = np.random.default_rng(0).random((side, side, 3))
        for method in ("edict", "bdia"):
            for steps in (25, 50):
                for guidance in ((1.0,) if name.startswith("pixel") else (1.0, 7.0)):
                    inv = unsample.invert(model, image, prompt, method=method, steps=steps, guidance=guidance,
                                          fit="multiple", precision="float64")
                    rec = unsample.reconstruct(model, inv, output="latent").double()
                    target = inv.image_latent.double()
                    err = float((rec - target).abs().max() / target.abs().max())
                    print(f"| {name} | {method} | {steps} | {guidance:g} | {err:.1e} |")


if __name__ == "__main__":
    main()
