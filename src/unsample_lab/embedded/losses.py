"""Loss weights and the learning-rate schedule shared by the embedded-model trainers.

- `lr_at`: linear warm-up, then cosine decay, following whichever budget (steps or the stage's
  wall-clock cap) is further spent;
- `snr_weight`: min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
  Weighting Strategy");
- `object_weights` and `object_weight_gate`: more weight on the pixels or latent cells near an
  object of the scene, optionally faded with the noise level.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from unsample.errors import InputError


class ScheduleConfig(Protocol):
    """The fields of a training config that `lr_at` reads."""

    warmup_steps: int
    min_lr_fraction: float


def lr_at(step: int, total: int, base: float, cfg: ScheduleConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_fraction * base``.

    The decay follows whichever budget is further spent: steps, or the stage's wall-clock cap
    (``time_fraction``), so a run on a slow machine still anneals before the cap stops it.
    """
    warm = min(cfg.warmup_steps, max(1, total // 10))
    if step < warm:
        return base * (step + 1) / warm
    progress = min(1.0, max((step - warm) / max(1, total - warm), time_fraction))
    floor = cfg.min_lr_fraction
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def object_weights(objects: torch.Tensor, weight: float, dilation: int, cell: int = 1,
                   gate: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Per-position loss weights ``1 + weight * gate * [near an object]``, [B, 1, H / cell, W / cell].

    ``objects`` is the 0/1 object mask [B, 1, H, W]; it is dilated by ``dilation`` pixels, then a
    ``cell`` x ``cell`` block (a latent cell) counts as near an object if any of its pixels is.
    ``gate`` scales the extra weight per sample ([B, 1, 1, 1]) or overall.
    """
    near = objects
    if dilation > 0:
        near = torch.nn.functional.max_pool2d(near, 2 * dilation + 1, stride=1, padding=dilation)
    if cell > 1:
        near = torch.nn.functional.max_pool2d(near, cell)
    return 1.0 + weight * gate * near


def object_weight_gate(alpha_bar: torch.Tensor, gate: str) -> torch.Tensor:
    """g(t) of ``TrainConfig.unet_object_weight_gate`` for each sample's alpha_bar_t [B]."""
    if gate == "constant":
        return torch.ones_like(alpha_bar)
    if gate == "signal":
        return alpha_bar
    raise InputError(f"unknown object weight gate {gate!r}")


def snr_weight(alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights for an eps-prediction loss: min(SNR, gamma) / SNR (1 if gamma is 0).

    SNR(t) = alpha_bar_t / (1 - alpha_bar_t) (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy"); the weight caps how much the nearly clean steps count.
    """
    if gamma <= 0:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr
