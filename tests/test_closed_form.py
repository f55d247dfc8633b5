"""Round trips on the closed-form denoiser, whose probability-flow ODE is exact."""

from __future__ import annotations

import pytest
import torch

from unsample.core.analytic import GaussianDenoiserModel, MeanConditioning
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.methods import ddim, euler
from unsample_lab.bench.closed_form import SCHEDULER, round_trip

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
    from unsample.core.schedule import TimestepGrid

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, generator=g, dtype=torch.float64)
    grid = TimestepGrid.variance_preserving(torch.tensor([700.0]), torch.tensor([0.2, 0.9], dtype=torch.float64))
    assert torch.allclose(ddim.sample_step(ddim.invert_step(x, eps, "epsilon", grid, 0), eps, "epsilon", grid, 0), x, atol=1e-14)
    # the DDIM paper's coefficients, sqrt(a_s / a_t) and sqrt(1 - a_s) - sqrt(a_s (1 - a_t) / a_t)
    c_x, c_u = ddim.coefficients("epsilon", grid, 0, 1)
    assert float(c_x) == pytest.approx((0.9 / 0.2) ** 0.5, rel=1e-15)
    assert float(c_u) == pytest.approx(0.1**0.5 - (0.9 * 0.8 / 0.2) ** 0.5, rel=1e-14)
    s, s_next = torch.tensor(0.3, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    assert torch.allclose(euler.sample_step(euler.invert_step(x, eps, s, s_next), eps, s_next, s), x, atol=1e-14)


def test_the_ddim_map_on_a_flow_is_the_euler_step_of_the_flow_ode() -> None:
    """x = (1 - s) x0 + s eps, v = eps - x0: alpha_to x0_hat + sigma_to eps_hat = x + (s_to - s) v."""
    from unsample.core.predictions import ddim_coefficients, to_eps_from, to_x0
    from unsample.core.schedule import TimestepGrid

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, generator=g, dtype=torch.float64)
    sigmas = torch.tensor([1.0, 0.75, 0.3, 0.0], dtype=torch.float64)
    grid = TimestepGrid.flow(sigmas[:-1] * 1000, sigmas)
    for frm, to in ((0, 1), (1, 2), (2, 3), (3, 2), (1, 0)):
        s, s_to = float(sigmas[frm]), float(sigmas[to])
        # the one line of algebra, spelled out: x0 = x - s v, eps = x + (1 - s) v
        ddim_step = (1 - s_to) * (x - s * v) + s_to * (x + (1 - s) * v)
        assert torch.allclose(ddim_step, x + (s_to - s) * v, atol=1e-15)
        # and what the methods compute, even from the pure-noise end (alpha = 0)
        assert torch.allclose(ddim.ddim_map(x, v, "flow", grid, frm, to), x + (s_to - s) * v, atol=1e-15)
        assert ddim_coefficients("flow", 1 - s, s, 1 - s_to, s_to) == pytest.approx((1.0, s_to - s), abs=1e-15)
        # x0 and eps read from (x, v) without dividing by anything
        x0, e = to_x0("flow", x, v, 1 - s, s), to_eps_from("flow", x, v, 1 - s, s)
        assert torch.allclose((1 - s) * x0 + s * e, x, atol=1e-15) and torch.allclose(e - x0, v, atol=1e-15)


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
