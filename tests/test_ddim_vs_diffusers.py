"""Our DDIM equals diffusers' DDIMScheduler / DDIMInverseScheduler where both compute the same thing."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from tests.conftest import SD_SCHEDULER_CONFIG
from unsample.core.analytic import GaussianDenoiserModel, MeanConditioning
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.methods import ddim


def _latents(model, seed: int = 0) -> torch.Tensor:
    side = model.resolution // 2  # the tiny pipeline's VAE downsamples by 2
    return torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(seed))


def _diffusers_eps(model, x: torch.Tensor, t: torch.Tensor, cond, uncond, guidance: float) -> torch.Tensor:
    if guidance == 1.0:
        return model.pipe.unet(x, t, encoder_hidden_states=cond.embeds).sample
    out = model.pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond.embeds, cond.embeds])).sample
    e_u, e_c = out.chunk(2)
    return e_u + guidance * (e_c - e_u)


@pytest.mark.parametrize("steps,guidance", [(50, 1.0), (10, 4.0), (49, 4.0)])
def test_sample_equals_diffusers_ddim_loop(tiny_model, steps: int, guidance: float) -> None:
    x_T = _latents(tiny_model)
    den = tiny_model.denoiser("a red circle", guidance=guidance, negative_prompt="")
    ours = ddim.sample(den, tiny_model.schedule.grid(steps), x_T)

    sched = DDIMScheduler.from_config(tiny_model.pipe.scheduler.config)
    sched.set_timesteps(steps)
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            eps = _diffusers_eps(tiny_model, x, t, den.cond, den.uncond, guidance)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
    # float32 rounding scales with the latents' size; the random tiny UNet under CFG drives them to ~20
    assert (ours - x).abs().max().item() <= 1e-5 * max(1.0, x.abs().max().item())


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_invert_equals_diffusers_inverse_scheduler(tiny_model, spacing: str) -> None:
    cfg = {**dict(tiny_model.pipe.scheduler.config), "timestep_spacing": spacing,
           "steps_offset": 1 if spacing == "leading" else 0}
    schedule = NoiseSchedule.from_config(cfg)
    latent = _latents(tiny_model, seed=1) * 0.5
    den = Denoiser(tiny_model.model_fn, schedule, tiny_model.encode_prompt("a cat"))
    ours = ddim.invert(den, schedule.grid(25), latent)[0]

    inv = DDIMInverseScheduler.from_config(cfg)
    inv.set_timesteps(25)
    x = latent.clone()
    with torch.no_grad():
        for t in inv.timesteps:
            eps = _diffusers_eps(tiny_model, x, t, den.cond, None, 1.0)
            x = inv.step(eps, t, x).prev_sample
    assert (ours - x).abs().max().item() <= 1e-5


def test_linspace_pairs_grid_neighbours_where_diffusers_does_not() -> None:
    """With "linspace" spacing diffusers' DDIMScheduler steps from t to t - T//N, which is not the
    next grid point (diffusers issue #11347); we pair neighbouring grid points, so inversion and
    sampling mirror each other on every spacing. This is a choice of consistency, not of accuracy:
    on the closed-form denoiser diffusers' off-grid rule happens to land closer (docs/figures.md)."""
    cfg = {**SD_SCHEDULER_CONFIG, "timestep_spacing": "linspace", "steps_offset": 0}
    schedule = NoiseSchedule.from_config(cfg)
    grid = schedule.grid(20)
    sched = DDIMScheduler(**cfg)
    sched.set_timesteps(20)
    diffusers_prev = sched.timesteps[:-1] - cfg["num_train_timesteps"] // 20
    assert torch.equal(grid.timesteps.long(), sched.timesteps)
    assert not torch.equal(diffusers_prev, sched.timesteps[1:])  # diffusers leaves the grid
    assert torch.equal(grid.alphas[1:-1], schedule.alphas_cumprod[grid.timesteps[1:].long()])  # we stay on it
    # our linspace round trip converges like the other spacings (first order)
    mean, std = 0.3, 0.5
    model = GaussianDenoiserModel(schedule, std)
    den = Denoiser(model, schedule, MeanConditioning(torch.full((1,), mean, dtype=torch.float64)), dtype=torch.float64)
    x0 = mean + std * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for steps in (10, 40, 160):
        g = schedule.grid(steps)
        errors.append(((ddim.sample(den, g, ddim.invert(den, g, x0)[0]) - x0).norm() / x0.norm()).item())
    assert errors[0] / errors[1] > 3.0 and errors[1] / errors[2] > 3.0, errors


def test_v_prediction_sample_equals_diffusers(tiny_v_pipeline_dir) -> None:
    import unsample

    model = unsample.load(str(tiny_v_pipeline_dir), device="cpu")
    assert model.schedule.prediction_type == "v_prediction"
    x_T = _latents(model, seed=3)
    den = model.denoiser("a dog", guidance=3.0)
    ours = ddim.sample(den, model.schedule.grid(20), x_T)
    sched = DDIMScheduler.from_config(model.pipe.scheduler.config)
    sched.set_timesteps(20)
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(_diffusers_eps(model, x, t, den.cond, den.uncond, 3.0), t, x).prev_sample
    assert (ours - x).abs().max().item() <= 1e-5
