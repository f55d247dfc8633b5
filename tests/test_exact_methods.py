"""EDICT and BDIA invert exactly; fixed-point inversion converges to the exact inverse."""

from __future__ import annotations

import warnings

import pytest
import torch

import unsample
from unsample_lab.bench.closed_form import round_trip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("method", ["edict", "bdia"])
@pytest.mark.parametrize("steps", [49, 50])
def test_exact_in_float64_at_guidance_7(tiny_model, tiny_image, method: str, steps: int) -> None:
    # EDICT at the paper's p = 0.93: its inverted states grow slowly enough for float64 at 50 steps
    # even on the random tiny UNet (the default p = 0.8 is checked at fewer steps below)
    opts = {"p": 0.93} if method == "edict" else {}
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method=method, steps=steps, guidance=7.0,
                          precision="float64", **opts)
    rec = unsample.reconstruct(tiny_model, inv, output="latent")
    assert _rel(rec, inv.image_latent) <= 1e-8


@pytest.mark.parametrize("steps", [19, 20])
def test_edict_default_is_exact_at_guidance_7(tiny_model, tiny_image, steps: int) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method="edict", steps=steps, guidance=7.0)
    assert inv.options["p"] == 0.8 and inv.options["precision"] == "float64"
    rec = unsample.reconstruct(tiny_model, inv, output="latent")
    assert _rel(rec, inv.image_latent) <= 1e-8


def test_float32_round_trip_beats_ddim_by_far(tiny_model, tiny_image) -> None:
    """In float32 the exact methods keep rounding error only; on the random tiny UNet at guidance 7
    the chains swell to ~100x the image latent, so that rounding is visible, but DDIM is far worse."""
    errors = {}
    for method in ("ddim", "edict", "bdia"):
        opts = {"p": 0.93, "precision": "float32"} if method == "edict" else {}
        inv = unsample.invert(tiny_model, tiny_image, "a red cat", method=method, steps=50, guidance=7.0, **opts)
        errors[method] = _rel(unsample.reconstruct(tiny_model, inv, output="latent"), inv.image_latent)
    assert errors["edict"] < errors["ddim"] / 5 and errors["bdia"] < errors["ddim"] / 5, errors


@pytest.mark.parametrize("start_step", [0, 4, 9])
@pytest.mark.parametrize("leapfrog", [True, False])
def test_edict_exact_from_every_start_step(tiny_model, tiny_image, start_step: int, leapfrog: bool) -> None:
    """Replaying from any intermediate state of the inversion lands on the image latent exactly."""
    inv = unsample.invert(tiny_model, tiny_image, "a cat", method="edict", steps=9, guidance=3.0,
                          precision="float64", leapfrog=leapfrog)
    rec = unsample.edit(tiny_model, inv, "a cat", start_step=start_step, guidance=None, mask="none", check=False, output="latent")
    assert _rel(rec, inv.image_latent) <= 1e-8


def test_bdia_exact_from_a_start_step(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a cat", method="bdia", steps=9, guidance=3.0, precision="float64")
    for k in (0, 1, 4, 9):
        rec = unsample.edit(tiny_model, inv, "a cat", start_step=k, guidance=None, mask="none", check=False, output="latent")
        assert _rel(rec, inv.image_latent) <= 1e-8


def test_ddim_at_guidance_7_is_not_exact(tiny_model, tiny_image) -> None:
    """The control: the approximation the exact methods remove is visible on the same model."""
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method="ddim", steps=50, guidance=7.0, precision="float64")
    assert _rel(unsample.reconstruct(tiny_model, inv, output="latent"), inv.image_latent) > 1e-2


def test_fixed_point_error_falls_monotonically_with_the_iteration_cap() -> None:
    errors = [round_trip("fixed-point", 10, guidance=3.0, max_iter=k, tol=0.0)["round_trip"] for k in (0, 1, 2, 4, 8)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 * errors[0], errors


def test_fixed_point_anderson_converges_in_fewer_iterations() -> None:
    plain = round_trip("fixed-point", 10, guidance=3.0, max_iter=3, tol=0.0)["round_trip"]
    anderson = round_trip("fixed-point", 10, guidance=3.0, max_iter=3, tol=0.0, anderson_m=2)["round_trip"]
    assert anderson < plain, (anderson, plain)


def test_fixed_point_reports_residuals_and_skips(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a cat", method="fixed-point", steps=10, guidance=3.0,
                          max_iter=3, skip_fraction=0.3)
    assert len(inv.stats["residuals"]) == 10
    assert inv.stats["iterations"][-3:] == [0, 0, 0]  # the three noisiest steps are not refined
    assert all(k >= 1 for k in inv.stats["iterations"][:7])
    assert inv.nfe == 2 * (10 + sum(inv.stats["iterations"]))


def test_edict_warns_when_its_dtype_cannot_hold_its_inverted_chains(tiny_model, tiny_image) -> None:
    """Undoing the mixing layers grows the chains faster than (1/p) per step: at 200 float32 steps
    with the paper's p = 0.93, or 200 float64 steps with the default p = 0.8, the image is lost in
    rounding, so EDICT says so and names the remedy that applies."""
    with pytest.warns(RuntimeWarning, match="precision='float64'"):
        inv = unsample.invert(tiny_model, tiny_image, "a cat", method="edict", steps=200, guidance=1.0,
                              p=0.93, precision="float32")
    assert float(inv.trajectory[0].abs().max()) * torch.finfo(torch.float32).eps > 1e-3
    # at the default p = 0.8 the float64 states overflow outright: an error at the step, with the remedy
    with pytest.raises(ValueError, match=r"overflowed at step \d+ of 200 .*p closer to 1 than 0.8"):
        unsample.invert(tiny_model, tiny_image, "a cat", method="edict", steps=200, guidance=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unsample.invert(tiny_model, tiny_image, "a cat", method="edict", steps=200, guidance=1.0, p=0.93)
        unsample.invert(tiny_model, tiny_image, "a cat", method="edict", steps=50, guidance=1.0)


def _linear_step_slope(a_s: torch.Tensor, a_t: torch.Tensor) -> float:
    """B in invert_step(x_s, eps) = sqrt(a_t / a_s) x_s + B eps (the DDIM map is affine in eps)."""
    return float((1 - a_t).sqrt() - (a_t / a_s).sqrt() * (1 - a_s).sqrt())


class _LinearEps:
    """A denoiser whose eps prediction is c x (what fixed-point inversion sees of it)."""

    prediction_type = "epsilon"

    def __init__(self, c: float) -> None:
        self.c = c

    def output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.c * x


def _one_step_grid(a_s: torch.Tensor, a_t: torch.Tensor):  # noqa: ANN202
    from unsample.core.schedule import TimestepGrid

    return TimestepGrid.variance_preserving(torch.tensor([500.0]), torch.stack([a_t, a_s]))


def test_fixed_point_keeps_the_best_iterate_when_the_iteration_diverges() -> None:
    """eps(x) = c x makes g affine with slope B c; at |B c| = 3 every iterate fits worse than the
    DDIM guess, so the step returns that guess (and its residual) instead of the last iterate."""
    from unsample.methods import fixed_point

    a_s, a_t = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    c = 3.0 / _linear_step_slope(a_s, a_t)
    x_s = torch.linspace(-1, 1, 16, dtype=torch.float64)
    config = fixed_point.FixedPointConfig(max_iter=4, tol=0.0)
    x, residual, iterations = fixed_point.invert_step(_LinearEps(c), x_s, _one_step_grid(a_s, a_t), 0, config)
    # the DDIM guess, by the paper's formula: sqrt(a_t / a_s) x_s + B eps(x_s)
    guess = (a_t / a_s).sqrt() * x_s + _linear_step_slope(a_s, a_t) * c * x_s
    assert torch.allclose(x, guess, rtol=1e-14, atol=1e-14)
    g = (a_t / a_s).sqrt() * x_s + _linear_step_slope(a_s, a_t) * c * guess
    assert residual == pytest.approx(float((g - guess).norm() * (a_s / a_t).sqrt() / x_s.norm()), rel=1e-10)
    assert iterations == 4


@pytest.mark.parametrize(("slope_times_c", "anderson_m", "max_iter"), [(0.5, 0, 60), (3.0, 2, 3)])
def test_fixed_point_reaches_the_exact_fixed_point(slope_times_c: float, anderson_m: int, max_iter: int) -> None:
    """The affine map's fixed point is x* = A x_s / (1 - B c): plain iteration reaches it when it
    contracts (|B c| = 0.5); Anderson mixing, a secant method, solves the affine case in two iterates
    even where plain iteration diverges (|B c| = 3)."""
    from unsample.methods import fixed_point

    a_s, a_t = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    slope = _linear_step_slope(a_s, a_t)
    c = slope_times_c / slope
    x_s = torch.linspace(-1, 1, 16, dtype=torch.float64)
    config = fixed_point.FixedPointConfig(max_iter=max_iter, tol=0.0, anderson_m=anderson_m)
    x, _, _ = fixed_point.invert_step(_LinearEps(c), x_s, _one_step_grid(a_s, a_t), 0, config)
    exact = (a_t / a_s).sqrt() * x_s / (1 - slope * c)
    assert torch.allclose(x, exact, rtol=1e-12, atol=1e-12)
