"""SDXL and pixel-space UNet2DModel backends through `unsample.load`: sampling equal to diffusers'
own pipelines, exact methods exact, SDXL's zero unconditional branch, the flat hub layout, class
labels as prompts, and the refusals that name why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unsample
from unsample.methods import ddim


def _image(side: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((side, side, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_pipeline_dir: Path):
    return unsample.load(str(tiny_sdxl_pipeline_dir), device="cpu")


def test_load_picks_sdxl_and_pixel_backends(tiny_sdxl_pipeline_dir: Path, tiny_ddpm_pipeline_dir: Path,
                                            tiny_ddpm_flat_dir: Path) -> None:
    from unsample.backends.diffusers_pixel import PixelDiffusionModel
    from unsample.backends.diffusers_sdxl import StableDiffusionXLModel

    assert type(unsample.load(str(tiny_sdxl_pipeline_dir), device="cpu")) is StableDiffusionXLModel
    pipe_layout = unsample.load(str(tiny_ddpm_pipeline_dir), device="cpu")
    flat = unsample.load(str(tiny_ddpm_flat_dir), device="cpu")
    assert type(pipe_layout) is PixelDiffusionModel and pipe_layout.pipe.layout == "pipeline"
    assert type(flat) is PixelDiffusionModel and flat.pipe.layout == "flat"


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sdxl_ddim_sampling_equals_the_diffusers_pipeline_with_a_ddim_scheduler(sdxl, guidance: float) -> None:
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    side = sdxl.resolution // sdxl.vae_factor
    x_T = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    pipe = StableDiffusionXLPipeline(**sdxl.pipe.components)
    # the Euler config has no DDIM keys: say what SDXL means (no clipping, final alpha = alphas_cumprod[0])
    pipe.scheduler = DDIMScheduler.from_config(sdxl.pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    pipe.set_progress_bar_config(disable=True)
    steps = 5
    theirs = pipe(prompt="a red circle", latents=x_T.clone(), num_inference_steps=steps, guidance_scale=guidance,
                  output_type="latent", height=sdxl.resolution, width=sdxl.resolution).images
    # the pipeline's negative branch for no negative prompt is zeros (force_zeros_for_empty_prompt)
    den = sdxl.denoiser("a red circle", guidance=guidance)
    if guidance != 1.0:
        assert float(den.uncond.embeds.abs().max()) == 0.0 and float(den.uncond.pooled.abs().max()) == 0.0
    ours = ddim.sample(den, sdxl.schedule.grid(steps), x_T)
    assert float((ours - theirs).abs().max()) <= 1e-5 * max(1.0, float(theirs.abs().max()))


@pytest.mark.parametrize("method", ["edict", "bdia"])
@pytest.mark.parametrize("steps", [5, 6])
def test_exact_methods_are_exact_on_sdxl_at_guidance_7(sdxl, method: str, steps: int) -> None:
    inv = unsample.invert(sdxl, _image(sdxl.resolution), "a red circle", method=method, steps=steps, guidance=7.0,
                          precision="float64")
    rec = unsample.reconstruct(sdxl, inv, output="latent").double()
    target = inv.image_latent.double()
    assert float((rec - target).abs().max() / target.abs().max()) <= 1e-8


def test_prompt_to_prompt_and_attention_masks_run_on_sdxl(sdxl) -> None:
    inv = unsample.invert(sdxl, _image(sdxl.resolution), "a red circle", steps=4)
    for options in ({"control": "replace"}, {"mask": "attention"}, {"mask": "noise"}):
        res = unsample.edit(sdxl, inv, "a green circle", output="result", **options)
        assert torch.isfinite(res.latent).all()


def test_pixel_sampling_equals_the_ddim_pipeline(tiny_ddpm_pipeline_dir: Path) -> None:
    from diffusers import DDIMPipeline, DDIMScheduler

    model = unsample.load(str(tiny_ddpm_pipeline_dir), device="cpu")
    side = model.resolution
    x_T = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    # deterministic DDIM without x0 clipping (clipping would make the sampler non-invertible; inversion never clips)
    sched = DDIMScheduler.from_config(model.pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    steps = 6
    sched.set_timesteps(steps)
    x = x_T.clone()
    for t in sched.timesteps:
        x = sched.step(model.pipe.unet(x, t).sample[:, :3], t, x).prev_sample
    ours = ddim.sample(model.denoiser(""), model.schedule.grid(steps), x_T)
    assert float((ours - x).abs().max()) <= 1e-5 * max(1.0, float(x.abs().max()))
    assert DDIMPipeline  # the scheduler the DDIM pipeline runs is the one compared here


@pytest.mark.parametrize("folder", ["tiny_ddpm_pipeline_dir", "tiny_ddpm_flat_dir", "tiny_ddpm_class_dir"])
@pytest.mark.parametrize("method", ["edict", "bdia"])
def test_exact_methods_are_exact_in_pixel_space(request, folder: str, method: str) -> None:
    """Algebraically exact: with the network in float64 too. (With a float32 network the states are
    rounded to float32 at its input, and near the linear schedule's noisy end, alpha_bar = 0.0015
    at t = 800, that rounding grows to ~1e-5 over 5 steps; the SD families' latents keep it ~1e-15.)"""
    model = unsample.load(str(request.getfixturevalue(folder)), device="cpu", dtype="float64")
    prompt = "" if model.num_classes is None else "1"
    inv = unsample.invert(model, _image(model.resolution), prompt, method=method, steps=5, precision="float64")
    rec = unsample.reconstruct(model, inv, output="latent").double()
    target = inv.image_latent.double()
    assert float((rec - target).abs().max() / target.abs().max()) <= 1e-8
    # the "latent" is the image itself in [-1, 1]
    assert inv.image_latent.shape == (1, 3, model.resolution, model.resolution)


def test_class_labels_are_the_prompts_of_a_class_model(tiny_ddpm_class_dir: Path, tiny_ddpm_pipeline_dir: Path) -> None:
    model = unsample.load(str(tiny_ddpm_class_dir), device="cpu")
    inv = unsample.invert(model, _image(model.resolution), "1", steps=4)
    edited = unsample.edit(model, inv, "2", guidance=1.0, mask="none", output="latent")
    assert torch.isfinite(edited).all() and not torch.equal(edited, inv.image_latent)
    with pytest.raises(ValueError, match=r"give its index 0\.\.3 as the prompt, not 'a cat'"):
        unsample.invert(model, _image(model.resolution), "a cat", steps=2)
    with pytest.raises(ValueError, match="no unconditional branch, so classifier-free guidance cannot run"):
        unsample.invert(model, _image(model.resolution), "1", steps=2, guidance=3.0)
    plain = unsample.load(str(tiny_ddpm_pipeline_dir), device="cpu")
    with pytest.raises(ValueError, match="unconditional: give the empty prompt"):
        unsample.invert(plain, _image(plain.resolution), "1", steps=2)
