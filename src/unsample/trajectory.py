"""The trajectory view ("jumping prediction"): x_t, the predicted x0 and their difference.

For grid position i < N (time label t_i) the model's clean-image estimate is
``x0_hat = (x_i - sqrt(1 - a_i) eps(x_i, t_i)) / sqrt(a_i)``. A grid of decoded x_i, decoded
x0_hat and |decoded x_i - decoded x0_hat| (amplified) at chosen steps shows how an inversion
walks toward noise or how sampling resolves the image. Sigma-space states (Euler) are converted
to x_t space first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError


@dataclass
class Panel:
    step: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor


def to_xt(states: torch.Tensor, grid: TimestepGrid, sigma_space: bool) -> torch.Tensor:
    """Trajectory [N + 1, ...] -> x_t space (divides sigma-space states by sqrt(1 + sigma^2))."""
    if not sigma_space:
        return states
    scale = (1 + grid.sigmas**2).sqrt().to(states.dtype).view(-1, *([1] * (states.dim() - 1)))
    return states / scale


def panels(denoiser: Any, grid: TimestepGrid, states: torch.Tensor, steps: list[int]) -> list[Panel]:
    """x_t and x0_hat at each requested grid position (0 <= step < N)."""
    out = []
    with torch.no_grad():
        for i in steps:
            if not 0 <= i < len(grid):
                raise InputError(f"step {i} is outside 0..{len(grid) - 1}")
            x = states[i]
            out.append(Panel(i, x, denoiser.x0(x, grid.timesteps[i])))
    return out


def default_steps(n: int, count: int = 6) -> list[int]:
    return sorted({round(k * (n - 1) / (count - 1)) for k in range(count)}) if n > 1 else [0]


def render(model: Any, items: list[Panel], title: str = "", min_side: int = 128) -> Image.Image:
    """A grid: one column per step; rows x_t, predicted x0, |difference| x4."""
    def dec(x: torch.Tensor) -> np.ndarray:
        return model.decode_latent(x.float())[0].permute(1, 2, 0).cpu().numpy()

    h = w = model.resolution
    scale = max(1, -(-min_side // w))
    cw, ch, label = w * scale, h * scale, 16
    sheet = Image.new("RGB", (len(items) * (cw + 4) + 70, 3 * (ch + label) + 20), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    for r, name in enumerate(("x_t", "x0_hat", "|diff| x4")):
        draw.text((4, 20 + r * (ch + label) + ch // 2), name, fill="black")
    for c, p in enumerate(items):
        a, b = dec(p.x_t), dec(p.x0_hat)
        rows = [a, b, np.clip(np.abs(a - b) * 4, 0, 1)]
        x0 = 70 + c * (cw + 4)
        draw.text((x0, 20 - 2 + 0 * (ch + label) - 14 + 14), f"step {p.step}", fill="black")
        for r, arr in enumerate(rows):
            img = Image.fromarray((arr * 255).round().astype(np.uint8)).resize((cw, ch), Image.Resampling.NEAREST)
            sheet.paste(img, (x0, 20 + label + r * (ch + label)))
    return sheet
