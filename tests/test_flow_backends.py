"""SD3 and Flux through `unsample.load`: the backend chosen from model_index.json, our flow sampling
equal to diffusers' own pipelines on the same model, latents and grid, the exact methods exact,
and editing (masks, blending) on flows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unsample
from unsample.methods import ddim

PIXELS = 32
T5_TOKENS = 16


def _load(folder: Path, **kwargs: object):
    model = unsample.load(str(folder), device="cpu", **kwargs)
    model.max_sequence_length = T5_TOKENS  # the tiny T5 reads 16 tokens; the pipelines are called likewise
    return model


@pytest.fixture(scope="module")
def sd3(tiny_sd3_pipeline_dir: Path):
    return _load(tiny_sd3_pipeline_dir)


@pytest.fixture(scope="module")
def flux(tiny_flux_pipeline_dir: Path):
    return _load(tiny_flux_pipeline_dir)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((PIXELS, PIXELS, 3)) * 255).astype(np.uint8))


def test_load_picks_the_backend_from_model_index(tiny_pipeline_dir: Path, tiny_sd3_pipeline_dir: Path,
                                                 tiny_sd3_no_t5_pipeline_dir: Path, tiny_flux_pipeline_dir: Path,
                                                 tmp_path: Path) -> None:
    from unsample.backends.diffusers_flux import FluxModel
    from unsample.backends.diffusers_sd import StableDiffusionModel
    from unsample.backends.diffusers_sd3 import StableDiffusion3Model

    assert type(unsample.load(str(tiny_pipeline_dir), device="cpu")) is StableDiffusionModel
    assert type(unsample.load(str(tiny_sd3_pipeline_dir), device="cpu")) is StableDiffusion3Model
    no_t5 = unsample.load(str(tiny_sd3_no_t5_pipeline_dir), device="cpu")
    assert type(no_t5) is StableDiffusion3Model and no_t5.pipe.text_encoder_3 is None
    assert type(unsample.load(str(tiny_flux_pipeline_dir), device="cpu")) is FluxModel
    other = tmp_path / "kandinsky"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ValueError, match=r"'KandinskyV22Pipeline' is not supported; unsample loads .*FluxPipeline.*StableDiffusion3Pipeline"):
        unsample.load(str(other), device="cpu")
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="without model_index.json"):
        unsample.load(str(tmp_path / "bare"), device="cpu")


def _noise(model, seed: int = 0) -> torch.Tensor:
    side = PIXELS // model.vae_factor
    channels = int(model.pipe.vae.config.latent_channels)
    return torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("guidance, steps", [(1.0, 4), (4.0, 5)])
def test_sd3_sampling_equals_the_diffusers_pipeline(sd3, guidance: float, steps: int) -> None:
    x_T = _noise(sd3)
    theirs = sd3.pipe(prompt="a red circle", negative_prompt="", latents=x_T.clone(), num_inference_steps=steps,
                      guidance_scale=guidance, output_type="latent", height=PIXELS, width=PIXELS,
                      max_sequence_length=T5_TOKENS).images
    den = sd3.denoiser("a red circle", guidance=guidance)
    grid = sd3.schedule_for(tuple(x_T.shape[-2:])).grid(steps)
    # the grid is the scheduler's, time label for time label
    sd3.pipe.scheduler.set_timesteps(steps)
    assert torch.equal(grid.timesteps.float(), sd3.pipe.scheduler.timesteps)
    ours = ddim.sample(den, grid, x_T)
    assert float((ours - theirs).abs().max()) <= 1e-5 * max(1.0, float(theirs.abs().max()))


@pytest.mark.parametrize("steps", [3, 6])
def test_flux_sampling_equals_the_diffusers_pipeline(flux, steps: int) -> None:
    from diffusers import FluxPipeline

    x_T = _noise(flux, seed=1)
    b, c, h, w = x_T.shape
    packed = FluxPipeline._pack_latents(x_T.clone(), b, c, h, w)
    theirs = flux.pipe(prompt="a red circle", latents=packed, num_inference_steps=steps, guidance_scale=flux.distilled_guidance,
                       output_type="latent", height=PIXELS, width=PIXELS, max_sequence_length=T5_TOKENS).images
    theirs = FluxPipeline._unpack_latents(theirs, PIXELS, PIXELS, flux.vae_factor)
    den = flux.denoiser("a red circle")
    ours = ddim.sample(den, flux.schedule_for((h, w)).grid(steps), x_T)
    assert float((ours - theirs).abs().max()) <= 1e-5 * max(1.0, float(theirs.abs().max()))


@pytest.mark.parametrize("method", ["edict", "bdia"])
@pytest.mark.parametrize("steps", [5, 6])
@pytest.mark.parametrize("family, guidance", [("sd3", 7.0), ("flux", 1.0), ("flux", 3.0)])
def test_exact_methods_are_exact_on_flow_models(request, image, method: str, steps: int, family: str, guidance: float) -> None:
    model = request.getfixturevalue(family)
    inv = unsample.invert(model, image, "a red circle", method=method, steps=steps, guidance=guidance, fit="multiple",
                          precision="float64")
    rec = unsample.reconstruct(model, inv, output="latent").double()
    target = inv.image_latent.double()
    assert float((rec - target).abs().max() / target.abs().max()) <= 1e-8


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_editing_with_a_noise_mask_runs_on_flow_models(request, image, family: str) -> None:
    model = request.getfixturevalue(family)
    inv = unsample.invert(model, image, "a red circle", method="edict", steps=6, fit="multiple")
    res = unsample.edit(model, inv, "a blue circle", guidance=3.0, output="result")
    assert res.mask_source == "noise" and res.mask is not None and res.mask.shape == inv.image_latent.shape[-2:]
    assert torch.isfinite(res.latent).all()
    # outside the mask the edit ends on the image latent itself
    keep = ~res.mask
    if keep.any():
        diff = (res.latent.double() - inv.image_latent.double()).abs()[..., keep]
        assert float(diff.max()) <= 1e-5


def test_euler_names_why_it_cannot_run_on_a_flow(sd3, image) -> None:
    with pytest.raises(ValueError, match="method 'euler' cannot run on this model: .*infinite at a flow's pure-noise end"):
        unsample.invert(sd3, image, "a red circle", method="euler", steps=4, fit="multiple")


@pytest.mark.parametrize("options", [{"control": "replace"}, {"mask": "attention"}, {"mask": "intersect"}])
def test_attention_control_is_refused_where_the_network_has_no_hook(sd3, image, options: dict) -> None:
    inv = unsample.invert(sd3, image, "a red circle", steps=3, fit="multiple")
    with pytest.raises(ValueError, match="need a UNet's cross-attention; StableDiffusion3Model has none"):
        unsample.edit(sd3, inv, "a blue circle", **options)
