"""The Denoiser: one batched call per guided step, exact NFE counts, CFG algebra."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SD_SCHEDULER_CONFIG
from unsample.core.analytic import GaussianDenoiserModel, MeanConditioning
from unsample.core.denoiser import CFG_LAYOUT, Denoiser
from unsample.core.schedule import NoiseSchedule


class Recorder:
    def __init__(self, inner):
        self.inner = inner
        self.batches: list[int] = []

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        return self.inner(x, t, cond)


def _setup(guidance: float):
    s = NoiseSchedule.from_config(SD_SCHEDULER_CONFIG)
    rec = Recorder(GaussianDenoiserModel(s, 0.5))
    cond = MeanConditioning(torch.full((3,), 0.4, dtype=torch.float64))
    uncond = MeanConditioning(torch.zeros(3, dtype=torch.float64))
    return s, rec, Denoiser(rec, s, cond, uncond, guidance=guidance, dtype=torch.float64)


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_one_model_call_per_step(guidance: float) -> None:
    from unsample.methods import ddim

    s, rec, den = _setup(guidance)
    ddim.sample(den, s.grid(12), torch.randn(3, 4, 4, 4, dtype=torch.float64))
    assert len(rec.batches) == 12 and den.counter.calls == 12
    assert rec.batches == [6 if guidance != 1.0 else 3] * 12
    assert den.counter.nfe == 12 * (2 if guidance != 1.0 else 1)


def test_cfg_combines_the_halves_in_the_documented_layout() -> None:
    s, rec, den = _setup(3.0)
    assert CFG_LAYOUT == ("uncond", "cond")
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    t = torch.tensor(400.0, dtype=torch.float64)
    plain = GaussianDenoiserModel(s, 0.5)
    e_c = plain(x, t.expand(3), den.cond)
    e_u = plain(x, t.expand(3), den.uncond)
    assert torch.allclose(den(x, t), e_u + 3.0 * (e_c - e_u))


def test_guidance_without_uncond_and_coarse_dtype_are_refused() -> None:
    s = NoiseSchedule.from_config(SD_SCHEDULER_CONFIG)
    cond = MeanConditioning(torch.zeros(1))
    with pytest.raises(ValueError, match="unconditional"):
        Denoiser(GaussianDenoiserModel(s), s, cond, guidance=5.0)
    with pytest.raises(ValueError, match="float32 or float64"):
        Denoiser(GaussianDenoiserModel(s), s, cond, dtype=torch.float16)


def test_x0_prediction_is_exact_for_the_gaussian_model() -> None:
    s, _, den = _setup(1.0)
    den = den.with_conditioning(MeanConditioning(torch.zeros(3, dtype=torch.float64)), guidance=1.0)
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    a = float(s.alphas_cumprod[300])
    # E[x0 | x_t] for N(0, 0.25) data: sqrt(a) * 0.25 / (a * 0.25 + 1 - a) * x_t
    expected = a**0.5 * 0.25 / (a * 0.25 + 1 - a) * x
    assert torch.allclose(den.x0(x, 300.0), expected, atol=1e-12)


def test_non_finite_model_output_is_reported_at_its_step() -> None:
    import pytest
    import torch

    from unsample.core.denoiser import Denoiser, NonFiniteError
    from unsample.core.schedule import NoiseSchedule

    schedule = NoiseSchedule.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})

    def overflowing(x: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        out = torch.zeros_like(x, dtype=torch.float16)
        if float(t[0]) < 500:
            out[0, 0, 0, 0] = float("inf")
        return out

    den = Denoiser(overflowing, schedule, cond=None)
    den(torch.zeros(1, 1, 2, 2), 700)
    with pytest.raises(NonFiniteError, match="model.s output holds 1 NaN or infinite values at time label 400"):
        den(torch.zeros(1, 1, 2, 2), 400)
    with pytest.raises(NonFiniteError, match="latent going into the model"):
        den(torch.full((1, 1, 2, 2), float("nan")), 700)
