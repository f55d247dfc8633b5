"""The Denoiser adapter: one callable over any model family, prediction type and CFG.

A backend supplies ``model(x, t, cond) -> output`` (eps, v, x0 or a flow velocity by its
schedule's ``prediction_type``) and conditionings (opaque objects with ``cat``). The Denoiser
gives that output (``output``), the noise prediction (``eps``) and the clean-latent prediction
(``x0``) in the working precision of the methods (float32 or float64), whatever dtype the model
runs in. The schedule is any object with ``prediction_type`` and ``alpha_sigma_at(t)``: the
DDPM family's `NoiseSchedule` or a flow's `FlowSchedule`, so one Denoiser serves every family.

Classifier-free guidance with scale g: ``u = u(x, uncond) + g * (u(x, cond) - u(x, uncond))``,
computed in ONE model call on a batch of 2B laid out as ``CFG_LAYOUT`` (unconditional half
first); with g == 1 only the conditional half is evaluated, in one call of B.

Cost is counted two ways: ``calls`` (batched forward passes) and ``nfe`` (network function
evaluations per sample: 2 per guided call, 1 per unguided call), the figure papers report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import torch

from unsample.core.classifier import ClassifierGuidance
from unsample.core.predictions import linear_maps, to_eps_from, to_x0
from unsample.core.schedule import Schedule
from unsample.errors import InputError, NonFiniteError

CFG_LAYOUT: tuple[str, str] = ("uncond", "cond")


class Conditioning(Protocol):
    """What a backend's text encoder produces. The Denoiser only batches it (``cat``); methods
    that store or optimise a conditioning (null-text, negative-prompt) go through its tensors:
    ``type(c).from_tensors(c.tensors())`` rebuilds ``c``."""

    def cat(self, other: Self) -> Self: ...

    def tensors(self) -> dict[str, torch.Tensor]: ...

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Self: ...


ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


def broadcast_conditioning(cond: Any, like: Any) -> Any:
    """``cond`` with every batch-1 tensor repeated to the batch of ``like`` (a conditioning).

    Methods that store one unconditional conditioning (null-text, negative-prompt) use it when
    the editing loop runs several branches (source and target) in one batch.
    """
    batch = next(iter(like.tensors().values())).shape[0]
    tensors = {k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in cond.tensors().items()}
    return type(cond).from_tensors(tensors)


def _check_finite(tensor: torch.Tensor, what: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        label = float(t.flatten()[0])
        raise NonFiniteError(
            f"{what} holds {bad} NaN or infinite values at time label {label:g} "
            f"(dtype {tensor.dtype}): an fp16/bf16 model overflowed (load it with --dtype float32) or the states grew "
            "past what the method's precision holds (fewer steps)",
            time_label=label,
        )


@dataclass
class CallCounter:
    """Model cost of a run; shared by the Denoisers a method derives from one another."""

    calls: int = 0
    nfe: int = 0
    classifier_calls: int = 0
    """Forward-and-backward passes of a guidance classifier (not counted in ``nfe``)."""


@dataclass
class Denoiser:
    """eps(x, t) for fixed conditioning, guidance and working precision."""

    model: ModelFn
    schedule: Schedule
    cond: Any
    uncond: Any | None = None
    guidance: float = 1.0
    dtype: torch.dtype = torch.float32
    counter: CallCounter = field(default_factory=CallCounter)
    classifier: ClassifierGuidance | None = None
    """Classifier guidance on top of (or instead of) classifier-free guidance (`unsample.core.classifier`)."""

    def __post_init__(self) -> None:
        if self.guidance != 1.0 and self.uncond is None:
            raise InputError(f"guidance={self.guidance} needs an unconditional conditioning; pass uncond")
        if self.dtype not in (torch.float32, torch.float64):
            raise InputError(f"working dtype {self.dtype} is too coarse for inversion; use float32 or float64")

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    def with_conditioning(self, cond: Any, uncond: Any | None = None, guidance: float | None = None) -> Denoiser:
        """The same model and cost counter with other conditioning (null-text, editing)."""
        return Denoiser(
            model=self.model,
            schedule=self.schedule,
            cond=cond,
            uncond=self.uncond if uncond is None else uncond,
            guidance=self.guidance if guidance is None else guidance,
            dtype=self.dtype,
            counter=self.counter,
            classifier=self.classifier,
        )

    def _time(self, t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=device)
        return t.expand(batch) if t.dim() == 0 else t

    @property
    def prediction_type(self) -> str:
        """What ``output`` is: epsilon, v_prediction, sample or flow (see `unsample.core.predictions`)."""
        return self.schedule.prediction_type

    def coefficients(self, t: torch.Tensor | float, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) of the model's schedule at time label(s) ``t`` (float64)."""
        alpha, sigma = self.schedule.alpha_sigma_at(torch.as_tensor(t, dtype=torch.float64))
        return alpha.to(device), sigma.to(device)

    def output(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The (guided) model output u at ``x``, time label ``t``, in the working dtype.

        u is in the model's own parametrisation (`prediction_type`); guidance combines the two
        halves there, which equals guiding eps or x0 since both are linear in u. A non-finite
        input state or model output raises `NonFiniteError` naming the time label, so an fp16
        overflow stops at the step where it happens instead of ending as a black image.
        """
        batch = x.shape[0]
        tt = self._time(t, batch, x.device)
        _check_finite(x, "the latent going into the model", tt)
        if self.guided:
            out = self.model(torch.cat([x, x]), torch.cat([tt, tt]), self.uncond.cat(self.cond))
            self.counter.calls += 1
            self.counter.nfe += 2
            _check_finite(out, "the model's output", tt)
            u_u, u_c = out.to(self.dtype).chunk(2)
            return self._classifier_guided(x, tt, u_u + self.guidance * (u_c - u_u))
        out = self.model(x, tt, self.cond)
        self.counter.calls += 1
        self.counter.nfe += 1
        _check_finite(out, "the model's output", tt)
        return self._classifier_guided(x, tt, out.to(self.dtype))

    def _classifier_guided(self, x: torch.Tensor, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u shifted so that eps moves by -scale * sigma * grad log p(y | x) (nothing without a classifier)."""
        if self.classifier is None or self.classifier.scale == 0:
            return u
        alpha, sigma = self.coefficients(t, x.device)
        _, _, _, w = linear_maps(self.prediction_type, alpha, sigma)
        shape = (-1,) + (1,) * (x.dim() - 1)
        grad = self.classifier.log_prob_gradient(x, t).to(self.dtype)
        self.counter.classifier_calls += 1
        d_eps = -self.classifier.scale * sigma.to(self.dtype).view(shape) * grad
        w = torch.as_tensor(w, dtype=self.dtype, device=x.device)
        return u + d_eps / (w.view(shape) if w.dim() else w)

    def eps(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The (guided) noise prediction at ``x``, time label ``t``, in the working dtype."""
        tt = self._time(t, x.shape[0], x.device)
        u = self.output(x, tt)
        alpha, sigma = self.coefficients(tt, x.device)
        return to_eps_from(self.prediction_type, x.to(self.dtype), u, alpha, sigma)

    __call__ = eps

    def x0(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The predicted clean latent (the "jumping prediction") at ``x``, ``t``."""
        tt = self._time(t, x.shape[0], x.device)
        u = self.output(x, tt)
        alpha, sigma = self.coefficients(tt, x.device)
        return to_x0(self.prediction_type, x.to(self.dtype), u, alpha, sigma)
