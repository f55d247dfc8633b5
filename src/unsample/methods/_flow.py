"""What the rectified-flow methods (rf-solver, fireflow, rf-inversion) share; not a method itself.

They integrate the flow ODE dx/ds = v(x, s) of x_s = (1 - s) x0 + s eps, whose model output u
*is* the velocity v = eps - x0, so they need a model whose schedule's ``prediction_type`` is
"flow" (`refuses_unless_velocity`, the registry's ``refuses``).

Time labels. The model takes the label t = s * T of noise level s (T =
``schedule.num_train_timesteps``; `unsample.core.flow_schedule`). A `TimestepGrid` of N steps holds
the labels of positions 0 .. N - 1 (``grid.timesteps``, which for a `FlowSchedule` grid are exactly
``grid.sigma[:-1] * T``); the image position N (s = 0) and the midpoints of the second-order
steps have no stored label, and theirs is s * T (`label_at`, `position_label`).
"""

from __future__ import annotations

import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import Schedule, TimestepGrid
from unsample.errors import InputError

_WHAT_IT_PREDICTS = {
    "epsilon": "epsilon (the noise)",
    "v_prediction": "v = alpha eps - sigma x0 on a variance-preserving schedule",
    "sample": "x0 (the clean sample)",
}


def refuses_unless_velocity(schedule: Schedule) -> str | None:
    """Why a flow-ODE method cannot run on ``schedule`` (None when its model predicts a flow velocity)."""
    kind = schedule.prediction_type
    if kind == "flow":
        return None
    what = _WHAT_IT_PREDICTS.get(str(kind), repr(kind))
    return f"it integrates a rectified-flow velocity (x = (1 - s) x0 + s eps); this model predicts {what}"


def check_velocity(denoiser: Denoiser, method: str) -> None:
    """Raise ValueError when ``denoiser``'s model is no flow-velocity model (direct calls bypass the registry)."""
    reason = refuses_unless_velocity(denoiser.schedule)
    if reason:
        raise InputError(f"method {method!r} cannot run on this model: {reason}")


def label_at(denoiser: Denoiser, sigma: torch.Tensor | float) -> torch.Tensor:
    """The model's time label of noise level ``sigma``: sigma * num_train_timesteps (float64)."""
    return torch.as_tensor(sigma, dtype=torch.float64) * denoiser.schedule.num_train_timesteps


def position_label(denoiser: Denoiser, grid: TimestepGrid, j: int) -> torch.Tensor:
    """The time label of grid position ``j``: the grid's own for j < N, sigma_N * T for the image position N."""
    if j < len(grid):
        return grid.timesteps[j]
    return label_at(denoiser, grid.sigma[j])

