"""A closed-form denoiser: Gaussian data, for which the probability-flow ODE is exact.

If x0 ~ N(mu, s^2) independently per element, then x_t = sqrt(a) x0 + sqrt(1 - a) eps is
N(sqrt(a) mu, a s^2 + 1 - a), and the ideal denoiser is

    eps*(x_t) = E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a).

Along the ODE the standardised value z = (x_t - sqrt(a) mu) / sqrt(a s^2 + 1 - a) is
constant, which gives the exact map between any two noise levels (`exact_transport`).
The "conditioning" is the data mean, so guidance mixes two such denoisers linearly.

The same data (std is the s above) under a rectified flow, x_s = (1 - s) x0 + s eps with s now
the noise level (`GaussianFlowModel`): x_s is N(m_s, V_s) with m_s = (1 - s) mu and
V_s = (1 - s)^2 std^2 + s^2, and the regressions of x0 and eps on x_s are linear,

    E[x0 | x_s]  = mu + (1 - s) std^2 (x_s - m_s) / V_s,
    E[eps | x_s] = s (x_s - m_s) / V_s,

so the exact velocity is

    v*(x, s) = E[eps - x0 | x_s = x] = (s - (1 - s) std^2) (x - m_s) / V_s - mu.

Along the flow ODE dx/ds = v* the standardised value z = (x - m_s) / sqrt(V_s) is again constant
(d/ds of m_s + sqrt(V_s) z is -mu + V_s' / (2 V_s) (x - m_s), which is v*), which gives the
exact map between two noise levels (`exact_flow_transport`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from unsample.core.schedule import NoiseSchedule


class _AlphaSigmaSchedule(Protocol):
    def alpha_sigma_at(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


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


@dataclass(frozen=True)
class GaussianFlowModel:
    """``model(x, t, cond) -> v``, the exact rectified-flow velocity E[eps - x0 | x_s = x] for data
    N(cond.mean, std^2), with x_s = alpha x0 + sigma eps from ``schedule.alpha_sigma_at(t)``
    (alpha = 1 - s, sigma = s for a `FlowSchedule`, s = t / num_train_timesteps)."""

    schedule: _AlphaSigmaSchedule
    std: float = 0.5

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: MeanConditioning) -> torch.Tensor:
        shape = (-1, *([1] * (x.dim() - 1)))
        alpha, sigma = self.schedule.alpha_sigma_at(torch.as_tensor(t, dtype=torch.float64))
        alpha = alpha.to(x.device, torch.float64).view(shape)
        sigma = sigma.to(x.device, torch.float64).view(shape)
        mu = cond.mean.to(x.device, torch.float64).view(x.shape[0], *([1] * (x.dim() - 1)))
        centred = x.to(torch.float64) - alpha * mu
        variance = alpha**2 * self.std**2 + sigma**2
        x0 = mu + alpha * self.std**2 * centred / variance
        eps = sigma * centred / variance
        return (eps - x0).to(x.dtype)


def exact_flow_transport(x: torch.Tensor, s_from: float, s_to: float, mean: float, std: float) -> torch.Tensor:
    """The exact flow-ODE map for N(mean, std^2) data under x_s = (1 - s) x0 + s eps, from s_from to s_to."""
    s_from_t = torch.as_tensor(s_from, dtype=torch.float64)
    s_to_t = torch.as_tensor(s_to, dtype=torch.float64)
    z = (x.to(torch.float64) - (1 - s_from_t) * mean) / ((1 - s_from_t) ** 2 * std**2 + s_from_t**2).sqrt()
    return (1 - s_to_t) * mean + ((1 - s_to_t) ** 2 * std**2 + s_to_t**2).sqrt() * z
