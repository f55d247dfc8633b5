"""RF-Inversion (Rout, Chen, Ruiz, Caramanis, Shakkottai, Chu, "Semantic Image Inversion and Editing
using Rectified Stochastic Differential Equations", ICLR 2025, arXiv:2410.10792): invert with a
controlled forward ODE pulled toward a sampled noise, edit with a controlled reverse ODE pulled
toward the image.

The paper's equations (time t from the image, t = 0, to the noise, t = 1, for the forward ODE):

    controlled forward ODE (Eq. 8, Algorithm 1), Y_0 = y0 (the image latent), y1 ~ N(0, I):
        dY_t = [u_t(Y_t) + gamma (u_t(Y_t | y1) - u_t(Y_t))] dt,    u_t(Y | y1) = (y1 - Y) / (1 - t)

    controlled reverse ODE (Eq. 15, Algorithm 2), X_0 = Y_1 (time now runs from noise to image):
        dX_t = [v_t(X_t) + eta_t (v_t(X_t | y0) - v_t(X_t))] dt,    v_t(X | y0) = (y0 - X) / (1 - t)

u_t is the model's velocity toward the noise and v_t its velocity toward the image; both
algorithms discretise with explicit Euler steps, the vector field taken at the point they have.
gamma in [0, 1] trades faithfulness to the model's ODE (0: plain Euler inversion) for a pull onto
the straight line to y1 (1); eta_t does the same toward y0 while sampling, and is on only in a
window of the first steps, eta_t = eta for start <= i < stop (diffusers' community pipeline
``pipeline_flux_rf_inversion.py``: ``start_timestep``, ``stop_timestep`` as fractions of the
steps, ``int(fraction * N)``; ports of it add an optional decay eta_t = eta (1 - i / N)^p,
``decay_eta`` with ``eta_decay_power``).

In our notation (x_s = (1 - s) x0 + s eps, the model output u = v(x, s) = eps - x0 = dx/ds, noise
level s the paper's t for the forward ODE and 1 - t for the reverse one), on a `TimestepGrid` with
noise levels s_0 > ... > s_N = 0 (s_0 = 1 on the `FlowSchedule` grids):

    invert step i (position i + 1 -> i), s = s_{i+1}:
        u_hat = v(Y, s) + gamma ((y1 - Y) / (1 - s) - v(Y, s));     Y_i = Y_{i+1} + (s_i - s_{i+1}) u_hat
    sample step i (position i -> i + 1), s = s_i:
        v_hat = v(X, s) + eta_i ((X - y0) / s - v(X, s));           X_{i+1} = X_i + (s_{i+1} - s_i) v_hat

(the reverse controller (y0 - X) / (1 - t) toward the image is (X - y0) / s as a velocity in s).
With gamma = 0 inversion is explicit Euler on the flow ODE; with eta_i = 0 a sampling step is the
Euler step, which is our DDIM step on a flow. With eta = 1 on every step, X_{i+1} - y0 =
(s_{i+1} / s_i) (X_i - y0), so sampling lands on y0 exactly.

Time input. The community pipeline's inversion feeds the model a linear t_i = i / (N + 1)
(``i / len(sigmas)``, the sigmas including the final 0) while it steps with the shifted sigmas,
and in the order of the sampling grid (its first inversion step, at the image, has the size of
the grid's step next to the noise); its sampler feeds the shifted sigma. With shift 1 that is
close to the paper's uniform grid t_i = i / N; with a shift the labels and the step sizes belong to
different points of the path. We follow the paper's ODE on whatever grid the schedule gives: the
model always sees the grid's time label of the noise level the state is at (sigma * T, 0 at the
image), the controller uses the same s, and every step has the size of the grid interval it
crosses. So inversion and sampling are consistent discretisations of the same two ODEs, and with
shift 1 the labels are the paper's up to the pipeline's off-by-one.

Defaults (from diffusers' community pipeline, whose docstring example edits with eta 0.9, and from
ports of it that use eta 0.9 and stop 7/28; the paper's own hyperparameter table was not read):
gamma = 0.5 (the pipeline's ``invert`` default), eta = 0.9 (its example; its signature default is
1.0), eta window [0, 0.25) of the steps (its default stop_timestep 0.25 = 7 of 28 steps), no decay
(eta_decay_power = 0: constant eta, as in Algorithm 2 and the upstream pipeline).

Symbols -> names: Y_t, X_t -> ``x``; y0, y1 -> ``y0``, ``y1`` (stored in ``extras["y0"]`` and
``extras["y1"]``; y1 drawn in float32 from the ``generator`` and widened, so a seed gives the same
y1 at either precision); gamma, eta -> ``config.gamma``, ``config.eta``; start, stop -> ``config.eta_start``,
``config.eta_stop``; p -> ``config.eta_decay_power``; u_t(Y | y1), v_t(X | y0) -> ``pull``; u_hat,
v_hat -> ``u_hat``, ``v_hat``; eta_i -> ``eta_i`` (`controller_strengths`), i the grid's step index
(sampling from start step k uses eta_k, eta_{k+1}, ...). Cost: 1 model evaluation per step (2 with CFG).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError
from unsample.methods._flow import check_velocity, position_label, refuses_unless_velocity
from unsample.methods.base import Method, MethodConfig, MethodOutput, StateHook, StepCallback, bounded, with_state_hook


def controller_strengths(
    eta: float, eta_start: float, eta_stop: float, eta_decay_power: float, steps: int
) -> list[float]:
    """eta_i for each of the N = ``steps`` sampling steps: eta (1 - i / N)^p for
    int(eta_start N) <= i < min(int(eta_stop N), N), else 0 (the community pipeline's window)."""
    lo = int(eta_start * steps)
    hi = min(int(eta_stop * steps), steps)
    return [eta * (1 - i / steps) ** eta_decay_power if lo <= i < hi else 0.0 for i in range(steps)]


def invert_step(
    denoiser: Denoiser, x: torch.Tensor, y1: torch.Tensor, gamma: float, grid: TimestepGrid, i: int
) -> torch.Tensor:
    """One controlled forward-ODE step toward noise: position i + 1 -> i."""
    s = grid.sigma[i + 1]
    h64 = grid.sigma[i] - s
    if h64 == 0:  # a zero-length step moves nothing
        return x
    # the model's velocity at the point we have, at its own noise level
    u_hat = denoiser.output(x, position_label(denoiser, grid, i + 1))
    # the controller: the straight path from x to the sampled noise y1, reached at s = 1
    if gamma != 0:
        pull = (y1 - x) / (1 - s).to(x.dtype)
        u_hat = u_hat + gamma * (pull - u_hat)
    return x + h64.to(x.dtype) * u_hat


def sample_step(
    denoiser: Denoiser, x: torch.Tensor, y0: torch.Tensor, eta_i: float, grid: TimestepGrid, i: int
) -> torch.Tensor:
    """One controlled reverse-ODE step toward the image: position i -> i + 1."""
    s = grid.sigma[i]
    h64 = grid.sigma[i + 1] - s
    if h64 == 0:  # a zero-length step moves nothing
        return x
    # the model's velocity at the point we have
    v_hat = denoiser.output(x, grid.timesteps[i])
    # the controller: the straight path from x back to the image latent y0, reached at s = 0
    if eta_i != 0:
        pull = (x - y0) / s.to(x.dtype)
        v_hat = v_hat + eta_i * (pull - v_hat)
    return x + h64.to(x.dtype) * v_hat


def invert(
    denoiser: Denoiser,
    grid: TimestepGrid,
    latent: torch.Tensor,
    *,
    y1: torch.Tensor,
    gamma: float = 0.5,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The controlled forward ODE from the image latent toward ``y1``; the trajectory [N + 1, ...], noise first."""
    check_velocity(denoiser, "rf-inversion")
    x = latent.to(denoiser.dtype)
    y1 = y1.to(x.device, x.dtype)
    states = [x]
    for i in reversed(range(len(grid))):
        x = invert_step(denoiser, x, y1, gamma, grid, i)
        states.append(x)
        if callback is not None:
            callback(len(grid) - 1 - i, x)
    return torch.stack(states[::-1])


def sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    x: torch.Tensor,
    *,
    y0: torch.Tensor,
    eta: float = 0.9,
    eta_start: float = 0.0,
    eta_stop: float = 0.25,
    eta_decay_power: float = 0.0,
    start_step: int = 0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The controlled reverse ODE from grid position ``start_step``, pulled toward ``y0``; returns the image latent."""
    check_velocity(denoiser, "rf-inversion")
    grid.check_start(start_step)
    x = x.to(denoiser.dtype)
    y0 = y0.to(x.device, x.dtype)
    etas = controller_strengths(eta, eta_start, eta_stop, eta_decay_power, len(grid))
    for i in range(start_step, len(grid)):
        x = sample_step(denoiser, x, y0, etas[i], grid, i)
        if callback is not None:
            callback(i, x)
    return x


@dataclass(frozen=True)
class RFInversionConfig(MethodConfig):
    """gamma: inversion controller toward the sampled noise; eta: sampling controller toward the image,
    on for the steps in [eta_start, eta_stop) (fractions of the run), decaying as (1 - i / N)^eta_decay_power."""

    gamma: float = bounded(0.5, low=0, high=1, note="0: plain Euler inversion")
    eta: float = bounded(0.9, low=0, high=1, note="0: plain Euler sampling")
    eta_start: float = bounded(0.0, low=0, high=1, note="a fraction of the steps")
    eta_stop: float = bounded(0.25, low=0, high=1, note="a fraction of the steps, from eta_start")
    eta_decay_power: float = bounded(0.0, low=0, note="0: constant eta")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta_start <= self.eta_stop:
            raise InputError(f"eta_stop={self.eta_stop} must be a fraction of the steps in [eta_start={self.eta_start}, 1]")


def _draw_y1(latent: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        raise InputError(
            "rf-inversion draws its target noise y1 from the generator; pass generator=torch.Generator().manual_seed(seed)"
        )
    y1 = torch.randn(latent.shape, generator=generator, dtype=torch.float32, device=generator.device)
    return y1.to(latent.device)


def _invert(
    denoiser: Denoiser, grid: TimestepGrid, latent: torch.Tensor, config: RFInversionConfig,
    callback: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> MethodOutput:
    y1 = _draw_y1(latent, generator).to(denoiser.dtype)
    trajectory = invert(denoiser, grid, latent, y1=y1, gamma=config.gamma, callback=callback)
    return MethodOutput(trajectory=trajectory, extras={"y0": latent.to(denoiser.dtype).clone(), "y1": y1})


def _sample(
    denoiser: Denoiser,
    grid: TimestepGrid,
    inverted: MethodOutput,
    start_step: int,
    config: RFInversionConfig,
    callback: StepCallback | None = None,
    on_state: StateHook | None = None,
) -> torch.Tensor:
    if "y0" not in inverted.extras:
        raise InputError("this inversion has no extras['y0'] (the image latent rf-inversion's sampler pulls toward); "
                         "invert with method 'rf-inversion'")
    return sample(
        denoiser, grid, inverted.trajectory[start_step], y0=inverted.extras["y0"], eta=config.eta,
        eta_start=config.eta_start, eta_stop=config.eta_stop, eta_decay_power=config.eta_decay_power,
        start_step=start_step, callback=with_state_hook(callback, on_state),
    )


METHOD = Method(
    name="rf-inversion",
    summary="RF-Inversion: controlled forward ODE pulled toward a sampled noise (gamma), "
    "controlled reverse ODE pulled toward the image (eta) (flow models)",
    config=RFInversionConfig,
    invert=_invert,
    sample=_sample,
    calls_per_step="1 (2)",
    refuses=refuses_unless_velocity,
)
