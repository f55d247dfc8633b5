"""Null-text inversion: exact checks on the closed-form denoiser, the API path on the tiny pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import unsample
from unsample.core.analytic import GaussianDenoiserModel, MeanConditioning
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.inversion import Inversion
from unsample.methods import ddim, null_text
from unsample.methods.null_text import NullTextConfig
from unsample_lab.bench.closed_form import SCHEDULER

F64 = torch.float64
SOURCE_MEAN, NULL_MEAN = 0.3, 0.0


def _closed_form(guidance: float = 7.5) -> tuple[Denoiser, NoiseSchedule]:
    schedule = NoiseSchedule.from_config(SCHEDULER)
    cond = MeanConditioning(torch.tensor([SOURCE_MEAN], dtype=F64))
    uncond = MeanConditioning(torch.tensor([NULL_MEAN], dtype=F64))
    den = Denoiser(GaussianDenoiserModel(schedule, 0.5), schedule, cond, uncond, guidance=guidance, dtype=F64)
    return den, schedule


def _image(constant: float | None = None) -> torch.Tensor:
    if constant is not None:
        return torch.full((1, 4, 8, 8), constant, dtype=F64)
    return SOURCE_MEAN + 0.5 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)


def _run(den: Denoiser, steps: int, x0: torch.Tensor, **options: object):
    grid = den.schedule.grid(steps)
    config = NullTextConfig(precision="float64", **options)  # type: ignore[arg-type]
    with torch.no_grad():  # as the API calls it: the method must turn grad back on itself
        out = null_text._invert(den, grid, x0, config)
        rec = null_text._sample(den, grid, out, 0, config)
    return out, rec, grid


def test_closed_form_beats_guided_ddim_and_the_null_mean_moves_to_the_source() -> None:
    den, _ = _closed_form()
    x0 = _image()
    out, rec, grid = _run(den, 10, x0)
    ddim_rec = ddim.sample(den, grid, ddim.invert(den, grid, x0)[0])
    err_nt = float((rec - x0).norm() / x0.norm())
    err_ddim = float((ddim_rec - x0).norm() / x0.norm())
    assert err_nt < 0.2 * err_ddim, (err_nt, err_ddim)
    # the trajectory is the guidance-1 DDIM pivot; one null embedding per step is kept
    assert torch.equal(out.trajectory, ddim.invert(den.with_conditioning(den.cond, guidance=1.0), grid, x0))
    assert out.extras["null.mean"].shape == (10, 1)
    # Miyake et al.'s observation, exact here: the optimised null embedding approaches the source prompt's
    assert abs(float(out.extras["null.mean"][-1]) - SOURCE_MEAN) < 0.05


def test_closed_form_reaches_the_pivot_when_one_scalar_can() -> None:
    # A constant latent makes every step a one-unknown problem: the null mean can put the guided
    # step exactly on the pivot, so the reconstruction is exact although DDIM's round trip is not.
    den, _ = _closed_form()
    x0 = _image(constant=0.7)
    out, rec, grid = _run(den, 10, x0, inner_steps=200, lr=0.05, early_stop_epsilon=1e-14, early_stop_slope=0.0)
    assert max(out.stats["step_error"]) < 1e-10
    assert (rec - x0).abs().max() < 1e-6
    pivot_round_trip = ddim.sample(den.with_conditioning(den.cond, guidance=1.0), grid, out.trajectory[0])
    assert (pivot_round_trip - x0).abs().max() > 1e-2


def test_early_stopping_cuts_inner_steps_and_nfe_is_counted() -> None:
    den, _ = _closed_form()
    x0 = _image()
    steps = 50
    out, rec, _ = _run(den, steps, x0)
    inner = out.stats["inner_steps"]
    assert out.stats["mean_inner_steps"] == sum(inner) / steps < 10
    # pivot (1 per step) + eps(z, C) once per step + the inner uncond calls + the guided step (2) + replay (2)
    assert den.counter.nfe == steps + steps + sum(inner) + 2 * steps + 2 * steps
    den_full, _ = _closed_form()
    full, rec_full, _ = _run(den_full, steps, x0, early_stop_epsilon=0.0, early_stop_slope=0.0)
    assert full.stats["inner_steps"] == [10] * steps
    # stopping early costs little accuracy
    assert (rec - x0).pow(2).mean() < 1.5 * (rec_full - x0).pow(2).mean()


def test_without_guidance_the_pivot_is_returned() -> None:
    den, _ = _closed_form(guidance=1.0)
    x0 = _image()
    out, rec, grid = _run(den, 8, x0)
    assert out.stats["optimised"] is False and out.extras == {}
    assert torch.equal(out.trajectory, ddim.invert(den, grid, x0))
    assert torch.equal(rec, ddim.sample(den, grid, out.trajectory[0]))


def test_replay_with_another_step_count_is_refused() -> None:
    den, _ = _closed_form()
    out, _, _ = _run(den, 4, _image(), inner_steps=1)
    with pytest.raises(ValueError, match="null embeddings 'mean' for 4 steps but the grid has 5"):
        null_text._sample(den, den.schedule.grid(5), out, 0, NullTextConfig(precision="float64"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"inner_steps": -1}, "inner_steps=-1"),
        ({"lr": 0.0}, "lr=0.0 must be > 0"),
        ({"lr_decay": 1.0}, "lr_decay=1.0 must be in"),
        ({"early_stop_epsilon": -1.0}, "early_stop_epsilon"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NullTextConfig(**options)  # type: ignore[arg-type]


def test_tiny_pipeline_reconstructs_better_than_guided_ddim_and_replays_exactly(
    tiny_model, tiny_image, tmp_path: Path
) -> None:
    steps, guidance = 4, 7.5
    ddim_inv = unsample.invert(tiny_model, tiny_image, "a red cat", method="ddim", steps=steps, guidance=guidance)
    ddim_err = (unsample.reconstruct(tiny_model, ddim_inv, output="latent") - ddim_inv.image_latent).pow(2).mean()
    inv = unsample.invert(
        tiny_model, tiny_image, "a red cat", method="null-text", steps=steps, guidance=guidance, inner_steps=10, lr=0.1
    )
    rec = unsample.reconstruct(tiny_model, inv, output="latent")
    err = torch.nn.functional.mse_loss(rec, inv.trajectory[-1])
    assert err < 0.3 * ddim_err, (float(err), float(ddim_err))
    # replay walks exactly the path the optimisation ended on
    assert float(err) == inv.stats["reconstruction_mse"]
    # the stored embeddings survive the file
    back = Inversion.load(inv.save(tmp_path / "nt.safetensors"))
    assert back.extras["null.embeds"].shape == (steps, *tiny_model.encode_prompt("").embeds.shape)
    assert torch.equal(back.extras["null.embeds"], inv.extras["null.embeds"])
    assert torch.equal(unsample.reconstruct(tiny_model, back, output="latent"), rec)
    # editing with another prompt runs from an intermediate step
    edited = unsample.edit(tiny_model, back, "a green dog", start_step=1, guidance=None, mask="none", output="result")
    assert edited.nfe == 2 * (steps - 1) and torch.isfinite(edited.latent).all()
