"""The schedule and grids equal diffusers' where both compute the same thing."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from tests.conftest import SD_SCHEDULER_CONFIG
from unsample.core.schedule import NoiseSchedule, alpha_to_sigma, sigma_to_alpha


@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("leading", 0), ("trailing", 0), ("linspace", 0)])
@pytest.mark.parametrize("steps", [1, 7, 49, 50, 500])
def test_timesteps_match_diffusers(spacing: str, offset: int, steps: int) -> None:
    cfg = {**SD_SCHEDULER_CONFIG, "timestep_spacing": spacing, "steps_offset": offset}
    ours = NoiseSchedule.from_config(cfg)
    theirs = DDIMScheduler(**cfg)
    theirs.set_timesteps(steps)
    assert torch.equal(ours.timesteps(steps), theirs.timesteps)
    assert torch.equal(ours.alphas_cumprod.float(), theirs.alphas_cumprod)
    assert ours.final_alpha_cumprod == pytest.approx(float(theirs.final_alpha_cumprod), abs=0)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("set_one", [True, False])
def test_alphas_match_diffusers(schedule: str, set_one: bool) -> None:
    cfg = {**SD_SCHEDULER_CONFIG, "beta_schedule": schedule, "set_alpha_to_one": set_one}
    ours = NoiseSchedule.from_config(cfg)
    theirs = DDIMScheduler(**cfg)
    assert torch.allclose(ours.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-6, atol=0)
    assert ours.final_alpha_cumprod == pytest.approx(float(theirs.final_alpha_cumprod), rel=1e-6)


def test_grid_pairs_neighbours_and_ends_at_final_alpha() -> None:
    s = NoiseSchedule.from_config(SD_SCHEDULER_CONFIG)
    g = s.grid(50)
    assert len(g) == 50 and g.alphas.shape == (51,)
    assert g.timesteps[0] == 981 and g.timesteps[-1] == 1
    assert g.alphas[-1] == s.alphas_cumprod[0]
    assert torch.equal(g.alphas[:-1], s.alphas_cumprod[g.timesteps.long()])


def test_bad_inputs_are_refused_clearly() -> None:
    s = NoiseSchedule.from_config(SD_SCHEDULER_CONFIG)
    with pytest.raises(ValueError, match="steps=0"):
        s.grid(0)
    with pytest.raises(ValueError, match="outside 0..999"):
        s.grid(1000)  # leading spacing with steps_offset 1 would ask for t = 1000
    with pytest.raises(ValueError, match="timestep_spacing"):
        NoiseSchedule.from_config({**SD_SCHEDULER_CONFIG, "timestep_spacing": "sideways"})
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule.from_config({**SD_SCHEDULER_CONFIG, "beta_schedule": "cubic"})


def test_sigma_alpha_and_fractional_time() -> None:
    s = NoiseSchedule.from_config(SD_SCHEDULER_CONFIG)
    a = s.alphas_cumprod
    assert torch.allclose(sigma_to_alpha(alpha_to_sigma(a)), a, rtol=1e-12)
    t = torch.tensor([0.0, 10.0, 500.0, 999.0], dtype=torch.float64)
    # sigma_to_t inverts the schedule at integer labels, alpha_at reads it back
    assert torch.allclose(s.sigma_to_t(alpha_to_sigma(s.alpha_at(t))), t, atol=1e-6)
    kg = s.karras_grid(20)
    assert kg.sigmas[0] == pytest.approx(s.sigma_max) and kg.sigmas[20] == pytest.approx(s.sigma_min)
    assert torch.all(kg.sigmas[1:] < kg.sigmas[:-1])
    k0 = NoiseSchedule.from_config({**SD_SCHEDULER_CONFIG, "set_alpha_to_one": True}).karras_grid(20)
    assert k0.sigmas[19] == pytest.approx(s.sigma_min) and k0.sigmas[20] == 0


@pytest.mark.parametrize("family", ["variance_preserving", "flow"])
def test_prediction_maps_recover_x0_and_eps_from_every_output(family: str) -> None:
    from unsample.core.predictions import to_eps_from, to_x0

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, generator=g, dtype=torch.float64)
    if family == "flow":
        s_ = torch.tensor([0.9, 0.5, 0.01], dtype=torch.float64)
        alpha, sigma = 1 - s_, s_
        outputs = {"epsilon": eps, "sample": x0, "flow": eps - x0}
    else:
        a = torch.tensor([0.9, 0.5, 0.01], dtype=torch.float64)
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        outputs = {"epsilon": eps, "sample": x0, "v_prediction": alpha[:, None] * eps - sigma[:, None] * x0}
    x = alpha[:, None] * x0 + sigma[:, None] * eps
    for kind, u in outputs.items():
        assert torch.allclose(to_x0(kind, x, u, alpha, sigma), x0, atol=1e-12), kind
        assert torch.allclose(to_eps_from(kind, x, u, alpha, sigma), eps, atol=1e-12), kind
