"""FlowEdit: text editing without inversion (Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli,
"FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models", 2024).

Notation of the paper (rectified flow z_t = (1 - t) X + t N, velocity V, steps i = n_max .. 1):

    Z^FE_{t_max} = X^src
    for i = n_max, ..., 1:
        N_k ~ N(0, I), k = 1 .. n_avg
        Z^src_{t_i} = (1 - t_i) X^src + t_i N_k
        Z^tar_{t_i} = Z^FE_{t_i} + Z^src_{t_i} - X^src
        V_delta     = mean_k [ V(Z^tar_{t_i}, t_i, c_tar) - V(Z^src_{t_i}, t_i, c_src) ]
        Z^FE_{t_{i-1}} = Z^FE_{t_i} + (t_{i-1} - t_i) V_delta
    edit = Z^FE_0

No noise is ever inverted: the edit path Z^FE starts at the image and moves by the difference of
the two prompts' velocities at noisy copies of the source that share their noise.

**Every family.** Any Gaussian path x = alpha X + sigma N is the rectified flow in the
coordinates r = sigma / (alpha + sigma), z = x / (alpha + sigma), and the DDIM step (the Euler step
of a flow, `unsample.methods.ddim`) is the Euler step in those coordinates. So with c = alpha + sigma
at grid position i, and Phi the DDIM map from position i to i + 1 under a prompt,

    x^src   = alpha_i X^src + sigma_i N
    x^tar   = x^src + c_i (Z^FE - X^src)
    Z^FE   += [Phi_tar(x^tar) / c_{i+1} - x^tar / c_i] - [Phi_src(x^src) / c_{i+1} - x^src / c_i]

which on a flow (c = 1) is the algorithm above line for line, and on the DDPM family the same
algorithm run in flow coordinates. Symbols -> names: n_avg -> ``draws``; the steps skipped before
n_max -> ``start_step`` (n_max = steps - start_step); c_src / c_tar -> the two denoisers.
"""

from __future__ import annotations

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError
from unsample.methods.base import StepCallback
from unsample.methods.ddim import sample_step


def flowedit_latent(
    source: Denoiser,
    target: Denoiser,
    grid: TimestepGrid,
    image_latent: torch.Tensor,
    *,
    start_step: int,
    draws: int = 1,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The FlowEdit path from ``image_latent`` (X^src) over grid positions ``start_step`` .. N;
    returns Z^FE_0, the edited image latent. ``draws`` noise draws per step (n_avg)."""
    if not isinstance(draws, int) or draws < 1:
        raise InputError(f"draws={draws} must be a whole number >= 1 (FlowEdit's n_avg)")
    grid.check_start(start_step)
    dtype = source.dtype
    x_src = image_latent.to(dtype)
    z_fe = x_src.clone()
    scale = (grid.alpha + grid.sigma).to(torch.float64)
    for i in range(start_step, len(grid)):
        alpha, sigma = float(grid.alpha[i]), float(grid.sigma[i])
        c_now, c_next = float(scale[i]), float(scale[i + 1])
        delta = torch.zeros_like(z_fe)
        for _ in range(draws):
            noise = torch.randn(x_src.shape, generator=generator, dtype=dtype).to(x_src.device)
            noisy_src = alpha * x_src + sigma * noise
            noisy_tar = noisy_src + c_now * (z_fe - x_src)
            t = grid.timesteps[i]
            moved_tar = sample_step(noisy_tar, target.output(noisy_tar, t), target.prediction_type, grid, i)
            moved_src = sample_step(noisy_src, source.output(noisy_src, t), source.prediction_type, grid, i)
            delta += (moved_tar / c_next - noisy_tar / c_now) - (moved_src / c_next - noisy_src / c_now)
        z_fe = z_fe + delta / draws
        if callback is not None:
            callback(i, z_fe)
    return z_fe
