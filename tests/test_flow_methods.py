"""The rectified-flow methods (rf-solver, fireflow, rf-inversion) against exact flows.

The closed-form Gaussian flow (`GaussianFlowModel`, exact map `exact_flow_transport`) and the
nonlinear v = x^2 cos(s) (`unsample_lab.bench.flow_orders`) make every error an error of the solver.
``pytest -s`` prints the order tables; ``python -m unsample_lab.bench.flow_orders`` prints them all.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import torch

from unsample.core.analytic import GaussianFlowModel, MeanConditioning, exact_flow_transport
from unsample.core.denoiser import Denoiser
from unsample.core.flow_schedule import FlowSchedule
from unsample.core.schedule import NoiseSchedule
from unsample.methods import ddim, fireflow, rf_inversion, rf_solver
from unsample.methods.base import MethodOutput
from unsample.methods.registry import get_method
from unsample_lab.bench import flow_orders
from unsample_lab.bench.closed_form import SCHEDULER

MEAN, STD = flow_orders.MEAN, flow_orders.STD
FLOW_METHODS = ("rf-solver", "fireflow", "rf-inversion")


def _den(shift: float = 1.0, batch: int = 2) -> Denoiser:
    schedule = FlowSchedule(shift=shift)
    cond = MeanConditioning(torch.full((batch,), MEAN, dtype=torch.float64))
    return Denoiser(GaussianFlowModel(schedule, STD), schedule, cond, dtype=torch.float64)


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = MEAN + STD * torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    return x0, torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- the closed-form flow model


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_gaussian_velocity_is_the_derivative_of_the_exact_transport(s: float) -> None:
    schedule = FlowSchedule()
    model = GaussianFlowModel(schedule, STD)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = model(x, torch.full((3,), s * 1000, dtype=torch.float64), MeanConditioning(torch.full((3,), MEAN, dtype=torch.float64)))
    h = 1e-5

    def at(s_to: float) -> torch.Tensor:
        return exact_flow_transport(x, s, s_to, MEAN, STD)

    if 0 < s < 1:  # central difference
        fd = (at(s + h) - at(s - h)) / (2 * h)
    else:  # second-order one-sided difference into [0, 1]
        d = h if s == 0 else -h
        fd = (-3 * at(s) + 4 * at(s + d) - at(s + 2 * d)) / (2 * d)
    assert torch.allclose(v, fd, atol=1e-8), (v - fd).abs().max()


def test_gaussian_velocity_ends() -> None:
    """At the image v = E[eps] - x0 = -x; at pure noise v = x - mu (x = eps there)."""
    model = GaussianFlowModel(FlowSchedule(), STD)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cond = MeanConditioning(torch.full((2,), MEAN, dtype=torch.float64))
    assert torch.allclose(model(x, torch.zeros(2, dtype=torch.float64), cond), -x, atol=1e-15)
    assert torch.allclose(model(x, torch.full((2,), 1000.0, dtype=torch.float64), cond), x - MEAN, atol=1e-15)
    # and the exact transport maps the data distribution's standardised value through
    assert torch.allclose(exact_flow_transport(x, 0.3, 0.3, MEAN, STD), x, atol=1e-15)
    there = exact_flow_transport(x, 0.2, 0.7, MEAN, STD)
    assert torch.allclose(exact_flow_transport(there, 0.7, 0.2, MEAN, STD), x, atol=1e-14)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_sampling_on_a_flow_grid_converges_to_the_exact_map(shift: float) -> None:
    den = _den(shift)
    _, x1 = _data()
    errors = []
    for n in (10, 100, 1000):
        grid = den.schedule.grid(n)
        exact = exact_flow_transport(x1, float(grid.sigma[0]), 0.0, MEAN, STD)
        errors.append(_rel(ddim.sample(den, grid, x1), exact))
    assert errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8, errors  # first order
    assert errors[2] < 3e-3, errors


# ---------------------------------------------------------------- orders of convergence


@cache
def _table(field: str, shift: float) -> dict[str, dict[str, Any]]:
    table = flow_orders.order_table(field=field, shift=shift)  # type: ignore[arg-type]
    print(f"\n{field} flow, FlowSchedule(shift={shift:g})")
    for kind in ("round_trip", "sampling"):
        print(f"{kind}:\n" + flow_orders.markdown(table, kind, flow_orders.STEPS))
    return table


# (lo, hi) bands of the fitted order over N = 16 ... 128. One way, Euler (ddim) is first order and
# the midpoint methods second; on the Gaussian flow the midpoint rule's h^3 local error term vanishes
# (see unsample_lab.bench.flow_orders), so RF-Solver is third order there. A round trip cancels the
# leading error of an even-order method, so the second-order methods' round trips are third order.
SAMPLING_BANDS = {
    ("gaussian", "ddim"): (0.8, 1.2), ("gaussian", "rf-solver"): (2.7, 3.3), ("gaussian", "fireflow"): (1.7, 2.5),
    ("quadratic", "ddim"): (0.8, 1.2), ("quadratic", "rf-solver"): (1.75, 2.25), ("quadratic", "fireflow"): (1.65, 2.25),
}
ROUND_TRIP_BANDS = {"ddim": (0.85, 1.2), "rf-solver": (2.7, 3.3), "fireflow": (2.7, 3.3)}


@pytest.mark.parametrize("field", ["gaussian", "quadratic"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("method", ["ddim", "rf-solver", "fireflow"])
def test_errors_fall_with_steps_at_the_methods_orders(field: str, shift: float, method: str) -> None:
    row = _table(field, shift)[method]
    for kind in ("round_trip", "sampling", "inversion"):
        errors = row[kind]
        assert all(b < a for a, b in zip(errors, errors[1:])), (kind, errors)
    lo, hi = SAMPLING_BANDS[field, method]
    assert lo <= row["order_sampling"] <= hi, row["order_sampling"]
    lo, hi = ROUND_TRIP_BANDS[method]
    assert lo <= row["order_round_trip"] <= hi, row["order_round_trip"]


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_second_order_methods_beat_euler_by_far_at_equal_model_cost(shift: float) -> None:
    """RF-Solver at N steps costs 2N evaluations; compare it with ddim at 2N steps (fireflow: N + 1)."""
    table = _table("gaussian", shift)
    steps = flow_orders.STEPS
    ddim_at = dict(zip(steps, table["ddim"]["sampling"]))
    for i, n in enumerate(steps[:-1]):
        assert table["rf-solver"]["sampling"][i] < ddim_at[2 * n] / 20
        assert table["fireflow"]["sampling"][i + 1] < ddim_at[2 * n] / 20  # 2N steps of fireflow: 2N + 1 calls
    assert table["rf-solver"]["nfe"] == [2.0 * n for n in steps]
    assert table["fireflow"]["nfe"] == [n + 1.0 for n in steps]


# ---------------------------------------------------------------- the updates themselves


def test_rf_solver_step_is_the_papers_taylor_form_and_the_midpoint_rule() -> None:
    den = _den()
    grid = den.schedule.grid(5)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for i in range(len(grid)):
        s, s_next = float(grid.sigma[i]), float(grid.sigma[i + 1])
        h = s_next - s
        v1 = den.output(x, s * 1000)
        v2 = den.output(x + h / 2 * v1, (s + h / 2) * 1000)
        step = rf_solver.sample_step(den, x, grid, i)
        assert torch.allclose(step, x + h * v1 + h**2 / 2 * (v2 - v1) / (h / 2), atol=1e-15)
        assert torch.allclose(step, x + h * v2, atol=1e-14)  # the explicit midpoint rule
        back = rf_solver.invert_step(den, step, grid, i)  # the same update with -h, from the other end
        v1b = den.output(step, s_next * 1000)
        v2b = den.output(step - h / 2 * v1b, (s_next - h / 2) * 1000)
        assert torch.allclose(back, step - h * v2b, atol=1e-14)


def test_fireflow_reuses_the_midpoint_velocity() -> None:
    den = _den()
    grid = den.schedule.grid(4)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    calls = den.counter.calls
    # by hand: the first step evaluates at the start point, later steps reuse the last midpoint velocity
    y, v_hat = x, den.output(x, grid.timesteps[0])
    for i in range(len(grid)):
        s, h = float(grid.sigma[i]), float(grid.sigma[i + 1] - grid.sigma[i])
        v_mid = den.output(y + h / 2 * v_hat, (s + h / 2) * 1000)
        y, v_hat = y + h * v_mid, v_mid
    den.counter.calls = calls
    out = fireflow.sample(den, grid, x)
    assert den.counter.calls - calls == len(grid) + 1
    assert torch.allclose(out, y, atol=1e-15)


@pytest.mark.parametrize("method", ["rf-solver", "fireflow"])
@pytest.mark.parametrize("start_step", [0, 2, 5])
def test_registry_replay_is_the_methods_own_sampler(method: str, start_step: int) -> None:
    den = _den()
    grid = den.schedule.grid(5)
    x0, _ = _data()
    spec = get_method(method)
    config = spec.config(precision="float64")
    out = spec.invert(den, grid, x0, config)
    assert out.trajectory.shape == (6, *x0.shape) and torch.equal(out.trajectory[-1], x0)
    module = rf_solver if method == "rf-solver" else fireflow
    replay = spec.sample(den, grid, MethodOutput(out.trajectory, out.extras), start_step, config)
    own = module.sample(den, grid, out.trajectory[start_step], start_step=start_step)
    assert torch.equal(replay, own)


def test_float32_runs_in_float32() -> None:
    schedule = FlowSchedule(shift=3.0)
    den = Denoiser(GaussianFlowModel(schedule, STD), schedule, MeanConditioning(torch.full((2,), MEAN)), dtype=torch.float32)
    x0 = _data()[0].float()
    for method in ("rf-solver", "fireflow", "rf-inversion"):
        spec = get_method(method)
        out = spec.invert(den, schedule.grid(8), x0, spec.config(), generator=torch.Generator().manual_seed(0))
        rec = spec.sample(den, schedule.grid(8), out, 0, spec.config())
        assert out.trajectory.dtype == torch.float32 and rec.dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in out.extras.values())


# ---------------------------------------------------------------- RF-Inversion


def _rf_inversion(den: Denoiser, grid: Any, x0: torch.Tensor, seed: int = 7, **options: Any) -> MethodOutput:
    spec = get_method("rf-inversion")
    config = spec.config(precision="float64", **options)
    return spec.invert(den, grid, x0, config, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_rf_inversion_with_gamma_0_is_plain_euler_inversion(shift: float) -> None:
    """Explicit Euler on the flow ODE, the velocity at the point we have and at its own noise level."""
    den = _den(shift)
    grid = den.schedule.grid(6)
    x0, _ = _data()
    out = _rf_inversion(den, grid, x0, gamma=0.0)
    x, states = x0, [x0]
    for i in reversed(range(len(grid))):
        label = grid.sigma[i + 1] * 1000  # 0 at the image
        x = ddim.ddim_map(x, den.output(x, label), "flow", grid, i + 1, i)
        states.append(x)
    assert torch.allclose(out.trajectory, torch.stack(states[::-1]), atol=1e-13)
    # (ddim.invert differs only in the label: it borrows the destination's, DDIM inversion's approximation)


def test_rf_inversion_with_gamma_1_lands_on_its_sampled_noise() -> None:
    den = _den(3.0)
    grid = den.schedule.grid(6)
    assert float(grid.sigma[0]) == 1.0
    out = _rf_inversion(den, grid, _data()[0], gamma=1.0)
    assert torch.allclose(out.trajectory[0], out.extras["y1"], atol=1e-13)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("start_step", [0, 3])
def test_rf_inversion_with_eta_0_samples_like_euler(shift: float, start_step: int) -> None:
    den = _den(shift)
    grid = den.schedule.grid(6)
    out = _rf_inversion(den, grid, _data()[0])
    spec = get_method("rf-inversion")
    got = spec.sample(den, grid, out, start_step, spec.config(precision="float64", eta=0.0))
    assert torch.allclose(got, ddim.sample(den, grid, out.trajectory[start_step], start_step=start_step), atol=1e-13)


@pytest.mark.parametrize("start_step", [0, 4])
def test_rf_inversion_with_eta_1_throughout_reaches_the_image(start_step: int) -> None:
    den = _den(3.0)
    grid = den.schedule.grid(8)
    x0, x1 = _data()
    out = _rf_inversion(den, grid, x0)
    assert torch.equal(out.extras["y0"], x0)
    spec = get_method("rf-inversion")
    config = spec.config(precision="float64", eta=1.0, eta_start=0.0, eta_stop=1.0)
    assert torch.allclose(spec.sample(den, grid, out, start_step, config), x0, atol=1e-12)
    # from any noise: the controller alone brings it to y0
    other = MethodOutput(torch.stack([x1] * 9), out.extras)
    assert torch.allclose(spec.sample(den, grid, other, 0, config), x0, atol=1e-12)
    # and the default (eta 0.9 on the first quarter) lands nearer the image than plain Euler sampling
    plain = spec.sample(den, grid, other, 0, spec.config(precision="float64", eta=0.0))
    pulled = spec.sample(den, grid, other, 0, spec.config(precision="float64"))
    assert _rel(pulled, x0) < _rel(plain, x0)


def test_rf_inversion_is_deterministic_for_a_seed_and_stores_y0_y1() -> None:
    den = _den()
    grid = den.schedule.grid(5)
    x0, _ = _data()
    a, b = _rf_inversion(den, grid, x0, seed=5), _rf_inversion(den, grid, x0, seed=5)
    assert torch.equal(a.trajectory, b.trajectory) and torch.equal(a.extras["y1"], b.extras["y1"])
    assert torch.equal(a.extras["y1"], torch.randn(x0.shape, generator=torch.Generator().manual_seed(5)).double())
    c = _rf_inversion(den, grid, x0, seed=6)
    assert not torch.equal(a.trajectory[0], c.trajectory[0])
    assert set(a.extras) == {"y0", "y1"} and a.trajectory.shape == (6, *x0.shape)
    with pytest.raises(ValueError, match="generator"):
        get_method("rf-inversion").invert(den, grid, x0, get_method("rf-inversion").config())
    with pytest.raises(ValueError, match=r"extras\['y0'\]"):
        get_method("rf-inversion").sample(den, grid, MethodOutput(a.trajectory), 0, get_method("rf-inversion").config())


def test_rf_inversion_eta_window_is_the_community_pipelines() -> None:
    # 28 steps, stop 0.25: steps 0..6 (diffusers: start <= i < stop with int(fraction * N))
    etas = rf_inversion.controller_strengths(0.9, 0.0, 0.25, 0.0, 28)
    assert etas == [0.9] * 7 + [0.0] * 21
    etas = rf_inversion.controller_strengths(1.0, 0.1, 0.5, 2.0, 10)
    assert etas == [0.0] + [(1 - i / 10) ** 2 for i in range(1, 5)] + [0.0] * 5


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gamma": -0.1}, "gamma=-0.1"), ({"gamma": 1.5}, "gamma=1.5"), ({"eta": 2.0}, "eta=2.0"),
        ({"eta_start": -0.5}, "eta_start=-0.5"), ({"eta_start": 0.6, "eta_stop": 0.5}, "eta_stop=0.5"),
        ({"eta_stop": 1.2}, "eta_stop=1.2"), ({"eta_decay_power": -1.0}, "eta_decay_power=-1.0"),
    ],
)
def test_rf_inversion_config_checks(options: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rf_inversion.RFInversionConfig(**options)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("method", FLOW_METHODS)
@pytest.mark.parametrize(("prediction", "named"), [("epsilon", "predicts epsilon"), ("v_prediction", "predicts v = alpha eps")])
def test_flow_methods_refuse_ddpm_schedules(method: str, prediction: str, named: str) -> None:
    spec = get_method(method)
    schedule = NoiseSchedule.from_config({**SCHEDULER, "prediction_type": prediction})
    with pytest.raises(ValueError, match=rf"method '{method}' cannot run on this model: it integrates a rectified-flow velocity.*{named}"):
        spec.check_applies(schedule)
    spec.check_applies(FlowSchedule(shift=3.0))  # and accept a flow
    # a direct call with a DDPM denoiser refuses the same way
    from unsample.core.analytic import GaussianDenoiserModel

    den = Denoiser(GaussianDenoiserModel(schedule, STD), schedule, MeanConditioning(torch.zeros(1)), dtype=torch.float64)
    with pytest.raises(ValueError, match="rectified-flow velocity"):
        spec.invert(den, schedule.grid(3), torch.zeros(1, 2), spec.config(), generator=torch.Generator().manual_seed(0))
