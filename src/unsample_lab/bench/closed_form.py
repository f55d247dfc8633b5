"""Round-trip error of every first-order method on the closed-form (Gaussian-data) denoiser.

``python -m unsample_lab.bench.closed_form`` prints the table quoted in the docs: for each method
and step count, invert the data sample to noise, sample back, and report
``||x0_rec - x0|| / ||x0||`` (float64) and the inverted noise's error against the exact ODE
map. The tests assert its properties (monotone, first order); this prints the figures.
"""

from __future__ import annotations

import torch

from unsample.core.analytic import GaussianDenoiserModel, MeanConditioning, exact_transport
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.methods import ddim
from unsample.methods.base import MethodOutput
from unsample.methods.registry import get_method

SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}
MEAN, STD = 0.3, 0.5


def round_trip(method: str, steps: int, *, seed: int = 0, guidance: float = 1.0, **options: object) -> dict[str, float]:
    """Relative round-trip error and inverted-noise error for one method and step count."""
    schedule = NoiseSchedule.from_config(SCHEDULER)
    spec = get_method(method)
    config = spec.config.from_options({"precision": "float64", **options}, method)
    model = GaussianDenoiserModel(schedule, STD)
    cond = MeanConditioning(torch.full((2,), MEAN, dtype=torch.float64))
    uncond = MeanConditioning(torch.full((2,), -MEAN, dtype=torch.float64)) if guidance != 1.0 else None
    den = Denoiser(model, schedule, cond, uncond, guidance=guidance, dtype=torch.float64)
    grid = config.make_grid(schedule, steps)
    x0 = MEAN + STD * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = spec.invert(den, grid, x0, config)
    rec = spec.sample(den, grid, MethodOutput(out.trajectory, out.extras), 0, config)
    result = {"round_trip": float((rec - x0).norm() / x0.norm()), "nfe": float(den.counter.nfe)}
    if guidance == 1.0 and method == "ddim":
        exact = exact_transport(x0, float(grid.alphas[-1]), float(grid.alphas[0]), MEAN, STD)
        result["noise_vs_exact"] = float((out.trajectory[0] - exact).norm() / exact.norm())
    return result


def main(methods: tuple[str, ...] = ("ddim", "euler"), steps: tuple[int, ...] = (10, 50, 200, 1000)) -> None:
    print(f"closed-form denoiser, data N({MEAN}, {STD}^2), float64; relative round-trip error ||rec - x0|| / ||x0||")
    print("| method | " + " | ".join(f"{n} steps" for n in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for method in methods:
        cells = [f"{round_trip(method, n)['round_trip']:.2e}" for n in steps]
        print(f"| {method} | " + " | ".join(cells) + " |")


def linspace_vs_diffusers(steps: tuple[int, ...] = (10, 20, 50)) -> None:
    """Sample back from our inverted noise on a "linspace" grid: our grid pairing vs diffusers' rule."""
    from diffusers import DDIMScheduler  # heavy (diffusers' models): loaded on use

    cfg = {**SCHEDULER, "timestep_spacing": "linspace", "clip_sample": False}
    schedule = NoiseSchedule.from_config(cfg)
    model = GaussianDenoiserModel(schedule, STD)
    cond = MeanConditioning(torch.full((1,), MEAN, dtype=torch.float64))
    den = Denoiser(model, schedule, cond, dtype=torch.float64)
    x0 = MEAN + STD * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    print("\nlinspace spacing: relative error of sampling back from our inverted noise")
    print("| steps | our sampler | diffusers' DDIMScheduler (linspace) |")
    print("|---|---|---|")
    for n in steps:
        grid = schedule.grid(n)
        x_T = ddim.invert(den, grid, x0)[0]
        ours = ddim.sample(den, grid, x_T)
        sched = DDIMScheduler(**cfg)
        sched.set_timesteps(n)
        x = x_T.clone()
        for t in sched.timesteps:
            x = sched.step(model(x, t.reshape(1).double(), cond), t, x).prev_sample
        rel = lambda y: float((y - x0).norm() / x0.norm())  # noqa: E731
        print(f"| {n} | {rel(ours):.2e} | {rel(x):.2e} |")


if __name__ == "__main__":
    main()
    linspace_vs_diffusers()
