"""``python -m unsample_lab.bench.diffusers_parity``: our DDIM against diffusers' schedulers.

On a tiny random SD pipeline built from configs: DDIM sampling against a loop of
``DDIMScheduler.step`` (guidance 1 and 7.5), and DDIM inversion against a loop of
``DDIMInverseScheduler.step`` ("leading" and "trailing" spacing), 50 steps each. Prints the
max absolute difference and the latents' scale (the random UNet swells them).
"""

from __future__ import annotations

import logging
import tempfile

import torch

import unsample
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.methods import ddim
from unsample_lab.testing.tiny_pipeline import build_tiny_pipeline


def main() -> None:
    from diffusers import DDIMInverseScheduler, DDIMScheduler  # heavy (diffusers' models): loaded on use

    logging.getLogger("transformers").setLevel(logging.ERROR)
    m = unsample.load(str(build_tiny_pipeline(tempfile.mkdtemp() + "/p")), device="cpu")

    def eps(x: torch.Tensor, t: torch.Tensor, c: object, u: object, g: float) -> torch.Tensor:
        if g == 1:
            return m.pipe.unet(x, t, encoder_hidden_states=c.embeds).sample  # type: ignore[attr-defined]
        out = m.pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([u.embeds, c.embeds])).sample  # type: ignore[attr-defined]
        e_u, e_c = out.chunk(2)
        return e_u + g * (e_c - e_u)

    side = m.resolution // m.vae_factor
    with torch.no_grad():
        for g in (1.0, 7.5):
            x_T = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
            den = m.denoiser("a red cat", guidance=g)
            ours = ddim.sample(den, m.schedule.grid(50), x_T)
            sched = DDIMScheduler.from_config(m.pipe.scheduler.config)
            sched.set_timesteps(50)
            x = x_T.clone()
            for t in sched.timesteps:
                x = sched.step(eps(x, t, den.cond, den.uncond, g), t, x).prev_sample
            print(f"sample, 50 steps, guidance {g:g}: max |ours - diffusers| = {(ours - x).abs().max().item():.2e} "
                  f"(max |latent| = {x.abs().max().item():.1f})")
        for spacing in ("leading", "trailing"):
            cfg = {**dict(m.pipe.scheduler.config), "timestep_spacing": spacing, "steps_offset": int(spacing == "leading")}
            schedule = NoiseSchedule.from_config(cfg)
            latent = 0.5 * torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1))
            den = Denoiser(m.model_fn, schedule, m.encode_prompt("a cat"))
            ours = ddim.invert(den, schedule.grid(50), latent)[0]
            inv = DDIMInverseScheduler.from_config(cfg)
            inv.set_timesteps(50)
            x = latent.clone()
            for t in inv.timesteps:
                x = inv.step(eps(x, t, den.cond, None, 1.0), t, x).prev_sample
            print(f"invert, 50 steps, {spacing}: max |ours - diffusers| = {(ours - x).abs().max().item():.2e} "
                  f"(max |latent| = {x.abs().max().item():.1f})")


if __name__ == "__main__":
    main()
