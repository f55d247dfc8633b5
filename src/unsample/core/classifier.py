"""Classifier guidance (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", 2021).

A noise-aware classifier p_phi(y | x_t) steers the noise prediction toward class y:
    eps_hat(x_t) = eps(x_t) - s * sigma_t * grad_x log p_phi(y | x_t)

with s the guidance scale and sigma_t the noise coefficient of x_t = alpha_t x0 + sigma_t eps
(sqrt(1 - alpha_bar_t) for the DDPM family, the guided-diffusion form). At s = 1 with the exact
classifier of the data this is Bayes' rule on the score, eps(x | y) = -sigma grad log p(x | y) =
eps(x) - sigma grad log p(y | x): an unconditional model becomes the class-conditional one
(`tests/test_classifier_guidance.py` checks it on closed-form Gaussian classes, DDPM and flow).

The gradient is taken in float32 at least, whatever the network's dtype, and with gradients on
even inside the methods' ``torch.no_grad``. The Denoiser applies it in the model's own
parametrisation: a shift d_eps of the noise prediction is a shift d_eps / w of the output u
(eps = r x + w u, `unsample.core.predictions.linear_maps`).

Symbols -> names: p_phi -> ``classifier`` (``(x, t) -> logits [B, K]``), y -> ``labels``,
s -> ``scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unsample.errors import InputError

ClassifierFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ClassifierGuidance:
    """A noise-aware classifier, the class each batch row is steered to, and the scale."""

    classifier: ClassifierFn
    labels: torch.Tensor
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.scale)) or self.scale < 0:
            raise InputError(f"classifier guidance scale={self.scale} must be a finite number >= 0")

    def log_prob_gradient(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_x log p_phi(labels | x_t), per batch row, in float32 at least."""
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        labels = self.labels.to(x.device).long().expand(x.shape[0]) if self.labels.numel() == 1 else self.labels.to(x.device).long()
        if labels.shape[0] != x.shape[0]:
            raise InputError(f"classifier guidance has {labels.shape[0]} labels for a batch of {x.shape[0]}")
        with torch.enable_grad():
            xx = x.detach().to(work).requires_grad_(True)
            logits = self.classifier(xx, t).to(work)
            chosen = torch.log_softmax(logits, dim=-1).gather(1, labels.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(chosen, xx)
        return grad
