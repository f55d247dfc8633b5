"""What every inversion method shares: its config base, its output, its registry entry.

A config field with a range is declared with `unsample.core.bounds.bounded` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

import torch

from unsample.core.bounds import Bounds, bounded, bounds_of  # noqa: F401 (re-exported: methods declare options here)
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import Schedule, TimestepGrid
from unsample.errors import InputError

Precision = Literal["float32", "float64"]
StepCallback = Callable[[int, torch.Tensor], None]
"""Called after each step with the step index and the new latent (progress bars, trajectories)."""
StateHook = Callable[[int, dict[str, torch.Tensor]], None]
"""Called after sampling step i with every state the sampler carries on, by the name it has in
the inversion ("trajectory" for the main chain, an extras key such as EDICT's "y" for others);
it may change them in place (blending an edit with the inverted trajectory does)."""


def with_state_hook(callback: StepCallback | None, on_state: StateHook | None) -> StepCallback | None:
    """One `StepCallback` for a single-chain sampler: ``on_state`` first (it may edit x), then ``callback``."""
    if on_state is None:
        return callback

    def step(i: int, x: torch.Tensor) -> None:
        on_state(i, {"trajectory": x})
        if callback is not None:
            callback(i, x)

    return step


def walk_to_noise(
    step: Callable[[torch.Tensor, int], torch.Tensor], grid: TimestepGrid, latent: torch.Tensor,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Inversion by one-step updates: ``step(x, i)`` maps position i + 1 to i, for i = N-1 .. 0,
    from the image latent; returns the trajectory [N + 1, ...], noise first."""
    x, states = latent, [latent]
    for i in reversed(range(len(grid))):
        x = step(x, i)
        states.append(x)
        if callback is not None:
            callback(len(grid) - 1 - i, x)
    return torch.stack(states[::-1])


def walk_to_image(
    step: Callable[[torch.Tensor, int], torch.Tensor], grid: TimestepGrid, x: torch.Tensor, start_step: int,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sampling by one-step updates: ``step(x, i)`` maps position i to i + 1, from ``start_step``
    to the end; returns the image latent."""
    grid.check_start(start_step)
    for i in range(start_step, len(grid)):
        x = step(x, i)
        if callback is not None:
            callback(i, x)
    return x


@dataclass(frozen=True)
class MethodConfig:
    """Knobs every method has. Subclasses add their own fields (CLI and UI read them); a numeric
    field with a range is declared with `bounded`, and checked here for every method."""

    precision: Precision = "float32"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.precision == "float64" else torch.float32

    def __post_init__(self) -> None:
        if self.precision not in ("float32", "float64"):
            raise InputError(f"precision={self.precision!r} is not supported; use float32 or float64")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"{f.name}={value} must be a finite number")
            bounds = bounds_of(f)
            if bounds is not None:
                bounds.check(f.name, value)

    @classmethod
    def from_options(cls, options: dict[str, Any], method: str) -> MethodConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(
                f"method {method!r} has no option(s) {', '.join(unknown)}; its options are {', '.join(sorted(known))}"
            )
        return cls(**options)

    def make_grid(self, schedule: Schedule, steps: int) -> TimestepGrid:
        """The grid this method walks for ``steps`` steps (the schedule's DDIM grid by default)."""
        return schedule.grid(steps)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class MethodOutput:
    """An inversion's result in the method's own terms.

    ``trajectory[i]`` is the state at grid position i, in the order sampling visits them:
    ``trajectory[0]`` is the inverted noise, ``trajectory[N]`` the image latent. ``extras``
    holds whatever else exact replay needs (tensors only, so it saves to safetensors);
    ``stats`` holds per-step diagnostics (JSON-able).
    """

    trajectory: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


class InvertFn(Protocol):
    def __call__(
        self,
        denoiser: Denoiser,
        grid: TimestepGrid,
        latent: torch.Tensor,
        config: Any,
        callback: StepCallback | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput: ...


class SampleFn(Protocol):
    def __call__(
        self,
        denoiser: Denoiser,
        grid: TimestepGrid,
        inverted: MethodOutput,
        start_step: int,
        config: Any,
        callback: StepCallback | None = None,
        on_state: StateHook | None = None,
    ) -> torch.Tensor: ...


class TrajectorySampler(Protocol):
    def __call__(
        self, denoiser: Denoiser, grid: TimestepGrid, x: torch.Tensor, *, start_step: int = 0,
        callback: StepCallback | None = None,
    ) -> torch.Tensor: ...


def replay_from_trajectory(sample: TrajectorySampler) -> SampleFn:
    """A registry `SampleFn` for methods whose sampler needs only the state at ``start_step``."""

    def replay(
        denoiser: Denoiser,
        grid: TimestepGrid,
        inverted: MethodOutput,
        start_step: int,
        config: Any,
        callback: StepCallback | None = None,
        on_state: StateHook | None = None,
    ) -> torch.Tensor:
        return sample(denoiser, grid, inverted.trajectory[start_step], start_step=start_step,
                      callback=with_state_hook(callback, on_state))

    return replay


@dataclass(frozen=True)
class Method:
    """A registry entry: a name, its config class, its invert/sample pair and its cost."""

    name: str
    summary: str
    config: type[MethodConfig]
    invert: InvertFn
    sample: SampleFn
    calls_per_step: str
    """Model evaluations per step without CFG, and with CFG in parentheses, e.g. "1 (2)"."""
    exact: bool = False
    trajectory_is_sampler_path: bool = False
    """The stored trajectory is the one chain of states its ``sample`` walks when it replays the
    source prompt (null-text's pivot is, by construction), so an edit can set the source branch
    back onto it after every step (Direct Inversion, `unsample.editing.branches`). EDICT's two
    coupled chains and BDIA's paired states are not; both reconstruct exactly already."""
    differentiates: bool = False
    """Its inversion back-propagates through the network (so its calls cannot share a batch
    with other jobs' calls, which run without gradients)."""
    refuses: Callable[[Schedule], str | None] | None = None
    """Given a model's schedule, why the method cannot run on it (None: it can). The method is
    defined by what the schedule has (e.g. finite EDM sigmas, a velocity output), never by a
    family's name; `check_applies` turns the reason into the user's error."""

    def check_applies(self, schedule: Schedule) -> None:
        """Raise ValueError naming why this method cannot run on ``schedule``, if it cannot."""
        reason = self.refuses(schedule) if self.refuses is not None else None
        if reason:
            raise InputError(f"method {self.name!r} cannot run on this model: {reason}")
