"""A closed-form denoiser: Gaussian data, for which the probability-flow ODE is exact.

If x0 ~ N(mu, s^2) independently per element, then x_t = sqrt(a) x0 + sqrt(1 - a) eps is
N(sqrt(a) mu, a s^2 + 1 - a), and the ideal denoiser is

    eps*(x_t) = E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a).

Along the ODE the standardised value z = (x_t - sqrt(a) mu) / sqrt(a s^2 + 1 - a) is
constant, which gives the exact map between any two noise levels (`exact_transport`).
The "conditioning" is the data mean, so guidance mixes two such denoisers linearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.schedule import NoiseSchedule


@dataclass(frozen=True)
class MeanConditioning:
    """Conditioning of the Gaussian model: the data mean, one row per batch element."""

    mean: torch.Tensor

    def cat(self, other: MeanConditioning) -> MeanConditioning:
        return MeanConditioning(torch.cat([self.mean, other.mean]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> MeanConditioning:
        return cls(tensors["mean"])


@dataclass(frozen=True)
class GaussianDenoiserModel:
    """``model(x, t, cond) -> eps``, exact for data N(cond.mean, std^2)."""

    schedule: NoiseSchedule
    std: float = 0.5

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: MeanConditioning) -> torch.Tensor:
        a = self.schedule.alpha_at(t).to(x.device, torch.float64).view(-1, *([1] * (x.dim() - 1)))
        mu = cond.mean.to(x.device, torch.float64).view(x.shape[0], *([1] * (x.dim() - 1)))
        xx = x.to(torch.float64)
        eps = (1 - a).sqrt() * (xx - a.sqrt() * mu) / (a * self.std**2 + 1 - a)
        return eps.to(x.dtype)


def exact_transport(x: torch.Tensor, a_from: float, a_to: float, mean: float, std: float) -> torch.Tensor:
    """The exact probability-flow ODE map for N(mean, std^2) data from alpha a_from to a_to."""
    a_from_t = torch.as_tensor(a_from, dtype=torch.float64)
    a_to_t = torch.as_tensor(a_to, dtype=torch.float64)
    z = (x.to(torch.float64) - a_from_t.sqrt() * mean) / (a_from_t * std**2 + 1 - a_from_t).sqrt()
    return a_to_t.sqrt() * mean + (a_to_t * std**2 + 1 - a_to_t).sqrt() * z
