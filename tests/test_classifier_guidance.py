"""Classifier guidance against exact answers: Gaussian classes x0 | k ~ N(mu_k, s^2 I), where the
unconditional noise prediction, the noise-aware classifier and the class-conditional prediction
are all closed-form. At scale 1, eps(x) - sigma grad log p(y | x) is eps(x | y) (Bayes on the
score), for a DDPM eps model and for a flow velocity model alike."""

from __future__ import annotations

import pytest
import torch

from unsample.core.analytic import MeanConditioning
from unsample.core.classifier import ClassifierGuidance
from unsample.core.denoiser import CallCounter, Denoiser
from unsample.core.flow_schedule import FlowSchedule
from unsample.core.schedule import NoiseSchedule

MEANS = torch.tensor([-0.6, 0.1, 0.8], dtype=torch.float64)
STD = 0.4


def _stats(schedule, x: torch.Tensor, t: torch.Tensor):  # noqa: ANN001, ANN202
    alpha, sigma = (c.to(torch.float64).view(-1, 1, 1, 1) for c in schedule.alpha_sigma_at(t))
    var = alpha**2 * STD**2 + sigma**2
    logits = torch.stack([-((x - alpha * m) ** 2).sum(dim=(1, 2, 3)) / (2 * var.flatten()) for m in MEANS], dim=1)
    eps_k = torch.stack([sigma * (x - alpha * m) / var for m in MEANS], dim=1)  # [B, K, ...]
    return alpha, sigma, logits, eps_k


def _model(schedule):  # noqa: ANN001, ANN202
    """The unconditional mixture's exact output: eps for a DDPM model, the velocity for a flow."""

    def fn(x: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        x = x.to(torch.float64)
        alpha, sigma, logits, eps_k = _stats(schedule, x, t)
        eps = (torch.softmax(logits, dim=1).view(*logits.shape, 1, 1, 1) * eps_k).sum(dim=1)
        if schedule.prediction_type == "flow":
            return eps - (x - sigma * eps) / alpha
        return eps

    return fn


SCHEDULES = {
    "ddpm": NoiseSchedule.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
    "flow": FlowSchedule(shift=3.0),
}


@pytest.mark.parametrize("family", SCHEDULES)
@pytest.mark.parametrize("label", [0, 2])
def test_scale_one_turns_the_unconditional_model_into_the_class_model(family: str, label: int) -> None:
    schedule = SCHEDULES[family]
    g = torch.Generator().manual_seed(label)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([700.0, 250.0], dtype=torch.float64)
    classifier = ClassifierGuidance(lambda xx, tt: _stats(schedule, xx, tt)[2], torch.tensor([label]), scale=1.0)
    counter = CallCounter()
    den = Denoiser(_model(schedule), schedule, MeanConditioning(torch.zeros(2, dtype=torch.float64)),
                   dtype=torch.float64, classifier=classifier, counter=counter)
    guided = den.eps(x, t)
    exact = _stats(schedule, x, t)[3][:, label]
    assert torch.allclose(guided, exact, atol=1e-10, rtol=0)
    assert counter.classifier_calls == 1 and counter.nfe == 1
    # scale 0 is the unconditional model; a scale s moves eps by s times the scale-1 shift
    unguided = Denoiser(_model(schedule), schedule, den.cond, dtype=torch.float64).eps(x, t)
    half = Denoiser(_model(schedule), schedule, den.cond, dtype=torch.float64,
                    classifier=ClassifierGuidance(classifier.classifier, classifier.labels, scale=0.5)).eps(x, t)
    assert torch.allclose(half - unguided, 0.5 * (exact - unguided), atol=1e-10, rtol=0)


def test_the_gradient_is_taken_inside_no_grad_and_in_float32_at_least() -> None:
    schedule = SCHEDULES["ddpm"]
    classifier = ClassifierGuidance(lambda xx, tt: _stats(schedule, xx, tt)[2], torch.tensor([1]), scale=2.0)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float32)
    with torch.no_grad():
        grad = classifier.log_prob_gradient(x, torch.tensor([500.0], dtype=torch.float64))
    assert grad.dtype == torch.float32 and grad.shape == x.shape and bool(torch.isfinite(grad).all())
    with pytest.raises(ValueError, match="scale=nan must be a finite number >= 0"):
        ClassifierGuidance(classifier.classifier, torch.tensor([1]), scale=float("nan"))
    with pytest.raises(ValueError, match="2 labels for a batch of 1"):
        ClassifierGuidance(classifier.classifier, torch.tensor([1, 2])).log_prob_gradient(x, torch.tensor([500.0]))


def _mean_classifier(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Two classes: "bright" (0) more likely the larger the mean value, "dark" (1) the smaller."""
    m = x.mean(dim=(1, 2, 3))
    return torch.stack([4 * m, -4 * m], dim=1)


def test_api_inverts_replays_and_edits_with_classifier_guidance(tiny_ddpm_pipeline_dir, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    import unsample
    from unsample.inversion import Inversion

    model = unsample.load(str(tiny_ddpm_pipeline_dir), device="cpu", dtype="float64")
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    bright = ClassifierGuidance(_mean_classifier, torch.tensor([0]), scale=3.0)
    dark = ClassifierGuidance(_mean_classifier, torch.tensor([1]), scale=3.0)
    inv = unsample.invert(model, image, "", method="edict", steps=6, precision="float64", classifier_guidance=bright)
    assert inv.stats["classifier_guidance"] == {"scale": 3.0, "labels": [0]}
    back = Inversion.load(inv.save(tmp_path / "inv.safetensors"))
    # EDICT stays exact with the guided sampler, given the same classifier
    rec = unsample.reconstruct(model, back, output="latent", classifier_guidance=bright).double()
    assert float((rec - inv.image_latent.double()).abs().max()) <= 1e-8
    with pytest.raises(ValueError, match=r"made with classifier guidance \(scale 3, labels \[0\]\); pass classifier_guidance"):
        unsample.reconstruct(model, back)
    # an edit toward "dark" ends darker than one toward "bright" (the mask defaults to none)
    to_dark = unsample.edit(model, back, "", guidance=1.0, output="result", classifier_guidance=dark)
    to_bright = unsample.edit(model, back, "", guidance=1.0, output="result", classifier_guidance=bright)
    assert to_dark.mask_source == "none"
    assert float(to_dark.latent.mean()) < float(to_bright.latent.mean())
