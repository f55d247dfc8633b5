"""Convergence orders of the flow-ODE methods on velocity fields whose flow is known exactly.

``python -m unsample_lab.bench.flow_orders`` prints markdown tables for ddim (on a flow: the Euler
step), rf-solver and fireflow: for each step count N, the relative round-trip error
``||sample(invert(x0)) - x0|| / ||x0||``, the one-way sampling error from a fixed noise against the
exact flow map, and the order fitted to each (the least-squares slope of -log error on log N).
Everything runs through the registry (``Method.invert`` / ``Method.sample``) in float64.

Two velocity fields, both on `FlowSchedule` grids (shift 1 and 3):

- ``gaussian``: the closed-form velocity of N(MEAN, STD^2) data (`unsample.core.analytic.GaussianFlowModel`),
  exact map `exact_flow_transport`. Here the explicit midpoint rule (RF-Solver) *superconverges*:
  on this flow, x - m_s obeys w' = (V_s' / 2 V_s) w with V_s quadratic in s, and the h^3 term of
  the midpoint rule's local error vanishes identically, so RF-Solver is third order on it.
- ``quadratic``: v(x, s) = x^2 cos(s) (`QuadraticVelocityModel`), nonlinear and time-dependent, with
  the exact map x_to = x / (1 - x (sin s_to - sin s_from)) (`exact_quadratic_transport`); one-way,
  every method shows its nominal order here (1, 2, 2).

Round trips. Inverting with step +h and sampling back with -h over the same grid cancels the
leading local error term of a method of even order p (it is C h^(p+1) one way and C (-h)^(p+1)
the other), so the round trip of the second-order methods converges at third order on both fields;
Euler's (p = 1) does not cancel and stays first order.

The tests (tests/test_flow_methods.py) assert the fitted orders; this prints the figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from unsample.core.analytic import GaussianFlowModel, MeanConditioning, exact_flow_transport
from unsample.core.denoiser import Denoiser
from unsample.core.flow_schedule import FlowSchedule
from unsample.errors import InputError
from unsample.methods.base import MethodOutput
from unsample.methods.registry import get_method

MEAN, STD = 0.3, 0.5
METHODS = ("ddim", "rf-solver", "fireflow")
STEPS = (16, 32, 64, 128)
"""Step counts of the fits: from 16 on every method is in its asymptotic regime on both fields (at 4-8
steps FireFlow's error is not yet monotone on the Gaussian flow)."""
SHIFTS = (1.0, 3.0)
Field = Literal["gaussian", "quadratic"]
FIELDS: tuple[Field, ...] = ("gaussian", "quadratic")


@dataclass(frozen=True)
class QuadraticVelocityModel:
    """``model(x, t, cond) -> v = x^2 cos(s)``, s = t / num_train_timesteps (cond is ignored)."""

    schedule: FlowSchedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        s = (torch.as_tensor(t, dtype=torch.float64) / self.schedule.num_train_timesteps).to(x.device)
        s = s.view(-1, *([1] * (x.dim() - 1)))
        xx = x.to(torch.float64)
        return (xx**2 * torch.cos(s)).to(x.dtype)


def exact_quadratic_transport(x: torch.Tensor, s_from: float, s_to: float) -> torch.Tensor:
    """The exact flow map of dx/ds = x^2 cos(s): 1/x changes by -(sin s_to - sin s_from)."""
    xx = x.to(torch.float64)
    return xx / (1 - xx * (math.sin(s_to) - math.sin(s_from)))


def _setup(field: Field, shift: float, seed: int) -> tuple[Denoiser, torch.Tensor, torch.Tensor, Callable[..., torch.Tensor]]:
    """(denoiser, image x0, noise x1, exact map (x, s_from, s_to) -> x) for one velocity field."""
    schedule = FlowSchedule(shift=shift)
    cond = MeanConditioning(torch.full((2,), MEAN, dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    if field == "gaussian":
        den = Denoiser(GaussianFlowModel(schedule, STD), schedule, cond, dtype=torch.float64)
        x0 = MEAN + STD * torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
        x1 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
        return den, x0, x1, lambda x, a, b: exact_flow_transport(x, a, b, MEAN, STD)
    if field == "quadratic":
        den = Denoiser(QuadraticVelocityModel(schedule), schedule, cond, dtype=torch.float64)
        # |x| <= 0.8 keeps 1 - x (sin s_to - sin s_from) >= 0.3 over [0, 1]: no blow-up either way
        x0 = 1.6 * torch.rand(2, 4, 8, 8, generator=g, dtype=torch.float64) - 0.8
        x1 = 1.6 * torch.rand(2, 4, 8, 8, generator=g, dtype=torch.float64) - 0.8
        return den, x0, x1, exact_quadratic_transport
    raise InputError(f"field {field!r} is not one of {', '.join(FIELDS)}")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def flow_errors(method: str, steps: int, *, field: Field = "gaussian", shift: float = 1.0, seed: int = 0,
                **options: object) -> dict[str, float]:
    """Round-trip, one-way sampling and one-way inversion errors (relative) of ``method`` at ``steps``.

    ``sampling``: sample from a fixed noise at the grid's first position against the exact map;
    ``inversion``: the inverted noise against the exact map of the image; ``nfe``: model
    evaluations of one inversion.
    """
    den, x0, x1, exact = _setup(field, shift, seed)
    spec = get_method(method)
    config = spec.config.from_options({"precision": "float64", **options}, method)
    grid = config.make_grid(den.schedule, steps)
    s_noise, s_image = float(grid.sigma[0]), float(grid.sigma[-1])
    out = spec.invert(den, grid, x0, config, generator=torch.Generator().manual_seed(seed))
    nfe = den.counter.nfe
    rec = spec.sample(den, grid, MethodOutput(out.trajectory, out.extras), 0, config)
    from_noise = out.trajectory.clone()
    from_noise[0] = x1
    sampled = spec.sample(den, grid, MethodOutput(from_noise, out.extras), 0, config)
    return {
        "round_trip": _rel(rec, x0),
        "sampling": _rel(sampled, exact(x1, s_noise, s_image)),
        "inversion": _rel(out.trajectory[0], exact(x0, s_image, s_noise)),
        "nfe": float(nfe),
    }


def fitted_order(steps: Sequence[int], errors: Sequence[float]) -> float:
    """The least-squares slope of -log(error) against log(steps): the observed order of convergence."""
    xs = [math.log(n) for n in steps]
    ys = [-math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def order_table(*, field: Field = "gaussian", shift: float = 1.0, methods: Sequence[str] = METHODS,
                steps: Sequence[int] = STEPS) -> dict[str, dict[str, Any]]:
    """{method: {"round_trip": [errors], "sampling": [...], "inversion": [...], "nfe": [...], "order_<kind>": float}}."""
    table: dict[str, dict[str, Any]] = {}
    for method in methods:
        runs = [flow_errors(method, n, field=field, shift=shift) for n in steps]
        row: dict[str, Any] = {k: [r[k] for r in runs] for k in ("round_trip", "sampling", "inversion", "nfe")}
        for kind in ("round_trip", "sampling", "inversion"):
            row[f"order_{kind}"] = fitted_order(steps, row[kind])
        table[method] = row
    return table


def markdown(table: dict[str, dict[str, Any]], kind: str, steps: Sequence[int]) -> str:
    """One markdown table: method x steps -> error of ``kind``, the fitted order, the NFE per inversion."""
    lines = ["| method | " + " | ".join(f"N={n}" for n in steps) + " | fitted order | NFE per inversion |",
             "|---|" + "---|" * (len(steps) + 2)]
    for method, row in table.items():
        cells = " | ".join(f"{e:.2e}" for e in row[kind])
        nfe = ", ".join(str(int(x)) for x in row["nfe"])
        lines.append(f"| {method} | {cells} | {row['order_' + kind]:.2f} | {nfe} |")
    return "\n".join(lines)


def main(steps: Sequence[int] = STEPS) -> None:
    titles = {"gaussian": f"closed-form Gaussian flow, data N({MEAN}, {STD}^2)",
              "quadratic": "v(x, s) = x^2 cos(s), exact map x / (1 - x (sin s_to - sin s_from))"}
    for field in FIELDS:
        for shift in SHIFTS:
            table = order_table(field=field, shift=shift, steps=steps)
            print(f"\n### {titles[field]}; FlowSchedule(shift={shift:g}) grids, float64\n")
            for kind, what in (("round_trip", "round trip ||sample(invert(x0)) - x0|| / ||x0||"),
                               ("sampling", "sampling from noise vs the exact flow map")):
                print(f"{what}:\n")
                print(markdown(table, kind, steps))
                print()


if __name__ == "__main__":
    main()
