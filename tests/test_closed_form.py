"""Round trips on the closed-form denoiser, whose probability-flow ODE is exact."""

from __future__ import annotations

import pytest
import torch

from unsample.bench.closed_form import round_trip
from unsample.core.analytic import GaussianDenoiserModel, MeanConditioning
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.bench.closed_form import SCHEDULER
from unsample.methods import ddim, euler

STEPS = (10, 50, 200, 1000)


@pytest.mark.parametrize("method", ["ddim", "euler"])
def test_round_trip_error_falls_with_steps_at_first_order(method: str) -> None:
    errors = [round_trip(method, n)["round_trip"] for n in STEPS]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    # first order: 5x the steps gives at least ~4x less error, 1000 steps is within 0.3%
    assert errors[2] / errors[3] > 4.0, errors
    assert errors[3] <= 3.5e-3, errors


def test_ddim_inverted_noise_approaches_the_exact_ode_map() -> None:
    errors = [round_trip("ddim", n)["noise_vs_exact"] for n in STEPS]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 2e-3


def test_steps_are_exact_inverses_for_a_fixed_eps() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, generator=g, dtype=torch.float64)
    a_s, a_t = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    assert torch.allclose(ddim.sample_step(ddim.invert_step(x, eps, a_s, a_t), eps, a_t, a_s), x, atol=1e-14)
    s, s_next = torch.tensor(0.3, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    assert torch.allclose(euler.sample_step(euler.invert_step(x, eps, s, s_next), eps, s_next, s), x, atol=1e-14)


def test_euler_inverted_latent_std_is_about_sigma_max() -> None:
    schedule = NoiseSchedule.from_config(SCHEDULER)
    den = Denoiser(GaussianDenoiserModel(schedule, 0.5), schedule, MeanConditioning(torch.zeros(1, dtype=torch.float64)), dtype=torch.float64)
    x0 = 0.5 * torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = euler.invert(den, schedule.karras_grid(100), x0)[0]
    assert noise.std().item() == pytest.approx(schedule.sigma_max, rel=0.05)


def test_euler_sampling_on_the_ddim_grid_is_ddim() -> None:
    schedule = NoiseSchedule.from_config(SCHEDULER)
    den = Denoiser(GaussianDenoiserModel(schedule, 0.5), schedule, MeanConditioning(torch.zeros(1, dtype=torch.float64)), dtype=torch.float64)
    grid = schedule.grid(20)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    via_ddim = ddim.sample(den, grid, x_T)
    via_euler = euler.sample(den, grid, euler.to_sigma_space(x_T, grid.sigmas[0]))
    assert torch.allclose(via_ddim, via_euler, atol=1e-12)
