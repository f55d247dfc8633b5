"""``python -m unsample_lab.bench.flow_parity``: our flow sampling against diffusers, and the exact
methods on flow models.

On tiny random SD3 and Flux pipelines built from configs (no download), from the same noise:
our DDIM sampling (the flow's Euler step) against (a) a plain loop of
``FlowMatchEulerDiscreteScheduler.step`` on our model function and (b) the diffusers pipeline's
own ``__call__`` (``output_type="latent"``), at 28 and 50 steps, with and without CFG (SD3
guidance; Flux true CFG with a negative prompt, next to its distilled guidance). Then the
round-trip error of EDICT and BDIA (float64) at guidance 1 and 7, odd and even steps. Prints
markdown tables: max |ours - theirs| and the latents' scale.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

import unsample
from unsample.methods import ddim
from unsample_lab.testing.tiny_pipeline import build_tiny_flux_pipeline, build_tiny_sd3_pipeline

PIXELS = 32
T5_TOKENS = 16


def _scheduler_loop(model, x: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:  # noqa: ANN001
    """A plain FlowMatchEulerDiscreteScheduler loop over our model function (CFG as the pipelines do it)."""
    sched = copy.deepcopy(model.pipe.scheduler)
    schedule = model.schedule_for(tuple(x.shape[-2:]))
    if schedule.pipeline_sigmas == "linspace":
        mu = schedule.mu_for(schedule.image_seq_len) if schedule.use_dynamic_shifting else None
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    else:
        sched.set_timesteps(steps)
    cond, uncond = model.encode_prompt("a red circle"), model.encode_prompt("")
    for t in sched.timesteps:
        tt = t.expand(x.shape[0]).double()
        v = model.model_fn(x, tt, cond).float()
        if guidance != 1:
            v_u = model.model_fn(x, tt, uncond).float()
            v = v_u + guidance * (v - v_u)
        x = sched.step(v, t, x).prev_sample
    return x


def _pipeline(model, x: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:  # noqa: ANN001
    from diffusers import FluxPipeline  # heavy (diffusers' models): loaded on use

    common = {"prompt": "a red circle", "num_inference_steps": steps, "output_type": "latent", "height": PIXELS,
              "width": PIXELS, "max_sequence_length": T5_TOKENS}
    if isinstance(model.pipe, FluxPipeline):
        b, c, h, w = x.shape
        out = model.pipe(latents=FluxPipeline._pack_latents(x.clone(), b, c, h, w), guidance_scale=model.distilled_guidance,
                         negative_prompt="" if guidance != 1 else None, true_cfg_scale=guidance, **common).images
        return FluxPipeline._unpack_latents(out, PIXELS, PIXELS, model.vae_factor)
    return model.pipe(latents=x.clone(), guidance_scale=guidance, negative_prompt="", **common).images


def main() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp())
    models = {}
    for family, build in (("SD3", build_tiny_sd3_pipeline), ("Flux", build_tiny_flux_pipeline)):
        models[family] = unsample.load(str(build(tmp / family)), device="cpu")
        models[family].max_sequence_length = T5_TOKENS
    print("| family | steps | guidance | max abs diff vs scheduler loop | max abs diff vs pipeline | latent scale |")
    print("|---|---|---|---|---|---|")
    for family, model in models.items():
        side = PIXELS // model.vae_factor
        x_T = torch.randn(1, int(model.pipe.vae.config.latent_channels), side, side, generator=torch.Generator().manual_seed(0))
        for steps in (28, 50):
            for guidance in (1.0, 7.0):
                den = model.denoiser("a red circle", guidance=guidance)
                ours = ddim.sample(den, model.schedule_for((side, side)).grid(steps), x_T)
                loop = _scheduler_loop(model, x_T, steps, guidance)
                pipe = _pipeline(model, x_T, steps, guidance)
                print(f"| {family} | {steps} | {guidance:g} | {float((ours - loop).abs().max()):.1e} | "
                      f"{float((ours - pipe).abs().max()):.1e} | {float(pipe.abs().max()):.2f} |")
    image = np.random.default_rng(0).random((PIXELS, PIXELS, 3))
    print()
    print("| family | method | steps | guidance | round-trip max rel error (float64) |")
    print("|---|---|---|---|---|")
    for family, model in models.items():
        for method in ("edict", "bdia"):
            for steps in (25, 50):
                for guidance in (1.0, 7.0):
                    inv = unsample.invert(model, image, "a red circle", method=method, steps=steps, guidance=guidance,
                                          fit="multiple", precision="float64")
                    rec = unsample.reconstruct(model, inv, output="latent").double()
                    target = inv.image_latent.double()
                    err = float((rec - target).abs().max() / target.abs().max())
                    print(f"| {family} | {method} | {steps} | {guidance:g} | {err:.1e} |")


if __name__ == "__main__":
    main()
