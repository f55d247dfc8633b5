"""The img2img baseline (SDEdit, Meng et al., ICLR 2022): fresh noise instead of inversion.

With strength s in (0, 1], sampling starts at grid position k = N - round(s N): the image latent
is noised to that level with fresh Gaussian noise, ``x_k = sqrt(a_k) x0 + sqrt(1 - a_k) z``,
then DDIM samples the remaining steps with the target prompt. It is the comparison point that
shows what inversion buys: nothing of the source's noise is kept.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from unsample.core.denoiser import CallCounter
from unsample.errors import InputError
from unsample.methods import ddim


def img2img(
    model: Any,
    latent: torch.Tensor,
    prompt: str,
    *,
    strength: float = 0.6,
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str = "",
    seed: int = 0,
) -> dict[str, Any]:
    """Noise the image latent to ``strength`` and sample it back with ``prompt``."""
    if not 0 < strength <= 1:
        raise InputError(f"strength={strength} must be in (0, 1]; 1 discards the image entirely")
    grid = model.schedule.grid(steps)
    start = steps - round(strength * steps)
    if start >= steps:
        raise InputError(f"strength={strength} is below one step of {steps}; raise it or use more steps")
    counter = CallCounter()
    den = model.denoiser(prompt, guidance=guidance, negative_prompt=negative_prompt, counter=counter)
    z = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).to(latent.device)
    x = grid.alpha[start].to(torch.float32) * latent.float() + grid.sigma[start].to(torch.float32) * z
    begin = time.perf_counter()
    with torch.no_grad():
        out = ddim.sample(den, grid, x, start_step=start)
    return {"latent": out, "nfe": counter.nfe, "model_calls": counter.calls, "seconds": time.perf_counter() - begin,
            "start_step": start}
