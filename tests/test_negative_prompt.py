"""Negative-prompt inversion: guided replay of the source is unguided replay; edits run."""

from __future__ import annotations

import pytest
import torch

import unsample
from unsample.core.analytic import GaussianDenoiserModel, MeanConditioning
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.methods import ddim, negative_prompt
from unsample.methods.base import MethodOutput
from unsample.methods.negative_prompt import NegativePromptConfig
from unsample_lab.bench.closed_form import SCHEDULER

F64 = torch.float64


def test_guided_replay_of_the_source_is_unguided_ddim(tiny_model, tiny_image) -> None:
    steps = 5
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method="negative-prompt", steps=steps, guidance=7.5)
    assert inv.nfe == steps  # the inversion itself is unguided
    plain = unsample.invert(tiny_model, tiny_image, "a red cat", method="ddim", steps=steps, guidance=1.0)
    assert torch.equal(inv.trajectory, plain.trajectory)
    assert torch.equal(inv.extras["source.embeds"], tiny_model.encode_prompt("a red cat").embeds)
    guided = unsample.reconstruct(tiny_model, inv, output="result")
    unguided = unsample.reconstruct(tiny_model, plain, output="latent")
    assert guided.nfe == 2 * steps
    # Equal up to float32 rounding: the guided replay batches the two UNet passes, the plain one
    # does not, and guidance 7.5 amplifies their last-bit differences 14-fold at every step
    # (measured max |difference| 1.0e-5 with 2 threads, 1.6e-5 with 1, on latents up to |4.5|).
    assert torch.allclose(guided.latent, unguided, atol=1e-4, rtol=0)


def test_edit_with_another_prompt_runs(tiny_model, tiny_image) -> None:
    steps = 5
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method="negative-prompt", steps=steps, guidance=7.5)
    edited = unsample.edit(tiny_model, inv, "a green dog", start_step=1, guidance=None, mask="none", output="result")
    assert edited.nfe == 2 * (steps - 1) and torch.isfinite(edited.latent).all()
    assert not torch.allclose(edited.latent, unsample.reconstruct(tiny_model, inv, output="latent"))


def test_closed_form_source_is_the_negative_prompt() -> None:
    schedule = NoiseSchedule.from_config(SCHEDULER)
    model = GaussianDenoiserModel(schedule, 0.5)
    source = MeanConditioning(torch.tensor([0.3], dtype=F64))
    null = MeanConditioning(torch.tensor([-0.4], dtype=F64))
    den = Denoiser(model, schedule, source, null, guidance=7.5, dtype=F64)
    grid = schedule.grid(10)
    x0 = 0.3 + 0.5 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    config = NegativePromptConfig(precision="float64")
    out = negative_prompt._invert(den, grid, x0, config)
    unguided = den.with_conditioning(source, guidance=1.0)
    rec = negative_prompt._sample(den, grid, out, 0, config)
    assert torch.allclose(rec, ddim.sample(unguided, grid, out.trajectory[0]), atol=1e-12)
    # with an edit prompt the guided eps is the Gaussian eps of mean 0.3 + 7.5 * (0.8 - 0.3): the null (-0.4) plays no part
    edit = den.with_conditioning(MeanConditioning(torch.tensor([0.8], dtype=F64)))
    expected = ddim.sample(
        den.with_conditioning(MeanConditioning(torch.tensor([0.3 + 7.5 * 0.5], dtype=F64)), guidance=1.0),
        grid, out.trajectory[3], start_step=3,
    )
    assert torch.allclose(negative_prompt._sample(edit, grid, out, 3, config), expected, atol=1e-10)


def test_missing_source_conditioning_is_refused() -> None:
    schedule = NoiseSchedule.from_config(SCHEDULER)
    den = Denoiser(GaussianDenoiserModel(schedule), schedule, MeanConditioning(torch.zeros(1, dtype=F64)), dtype=F64)
    with pytest.raises(ValueError, match="holds no source conditioning"):
        negative_prompt._sample(den, schedule.grid(3), MethodOutput(torch.zeros(4, 1, 2)), 0, NegativePromptConfig())
