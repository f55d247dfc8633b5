"""Noise schedules and timestep grids, read from a diffusers-style scheduler config.

Notation (DDIM paper / DESIGN.md):

    a_t        alphas_cumprod[t]        DDIM's alpha_t, DDPM's alpha-bar_t
    a_final    final_alpha_cumprod      the alpha of the state after the last sampling step
                                        (1 with ``set_alpha_to_one``, else alphas_cumprod[0])
    sigma_t    sqrt((1 - a_t) / a_t)    the k-diffusion / EDM noise level of x_t / sqrt(a_t)

A `TimestepGrid` of N steps holds the model's time labels ``timesteps[0] > ... > timesteps[N-1]``
and N + 1 alphas: ``alphas[i] = a(timesteps[i])`` for i < N and ``alphas[N] = a_final``.
Sampling step i goes from grid position i to i + 1 and evaluates the model at ``timesteps[i]``;
inversion step i goes from position i + 1 to i and evaluates it at the same label. Every step
pairs the alphas of two *neighbouring grid positions*: for "leading" and "trailing" spacing this
is what diffusers' DDIMScheduler computes with its ``t - T // N`` rule; for "linspace" spacing
diffusers' rule points between grid points (diffusers issue #11347) and we deliberately follow
the grid instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from unsample.errors import InputError

SPACINGS = ("leading", "trailing", "linspace")


class Schedule(Protocol):
    """What the Denoiser, the methods and editing need of a model family's schedule: everything
    they call on one is named here, and what only some families can do is a declared property
    (`has_karras_grid`), never a test of which class it is."""

    @property
    def prediction_type(self) -> str:
        """What the model outputs: "epsilon", "v_prediction", "sample" or "flow"."""
        ...

    @property
    def num_train_timesteps(self) -> int:
        """T, the number of training timesteps; time labels run over [0, T)."""
        ...

    @property
    def has_karras_grid(self) -> bool:
        """`karras_grid` can build a grid: sigma = sigma / alpha is finite at every noise level
        (False for a flow, whose pure-noise end has alpha = 0)."""
        ...

    def alpha_sigma_at(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) of x = alpha x0 + sigma eps at time labels ``t``."""
        ...

    def grid(self, steps: int) -> TimestepGrid:
        """The default N-step grid (the family's own scheduler's)."""
        ...

    def karras_grid(self, steps: int, rho: float = 7.0) -> TimestepGrid:
        """Karras et al.'s rho-spaced grid in k-diffusion sigma (only where `has_karras_grid`)."""
        ...


@dataclass(frozen=True)
class TimestepGrid:
    """The N steps one run walks: time labels [N] (descending) and, at each of the N + 1 grid
    positions, the coefficients of ``x = alpha * x0 + sigma * eps`` (float64).

    ``alphas`` is the variance-preserving alpha-bar with the same signal-to-noise ratio,
    alpha^2 / (alpha^2 + sigma^2): alphas_cumprod itself for the DDPM family (stored exactly as
    the schedule gives it), (1 - s)^2 / ((1 - s)^2 + s^2) for a flow at sigma s. Build grids with
    `variance_preserving` or `flow`.
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor

    def __post_init__(self) -> None:
        n = self.timesteps.shape[0]
        for name in ("alphas", "alpha", "sigma"):
            if getattr(self, name).shape[0] != n + 1:
                raise InputError(f"a grid of {n} steps needs {n + 1} values of {name}, got {getattr(self, name).shape[0]}")

    @classmethod
    def variance_preserving(cls, timesteps: torch.Tensor, alphas: torch.Tensor) -> TimestepGrid:
        """A DDPM-family grid from its alphas_cumprod a: alpha = sqrt(a), sigma = sqrt(1 - a)."""
        alphas = alphas.to(torch.float64)
        return cls(timesteps=timesteps.to(torch.float64), alphas=alphas, alpha=alphas.sqrt(), sigma=(1 - alphas).sqrt())

    @classmethod
    def flow(cls, timesteps: torch.Tensor, sigmas: torch.Tensor) -> TimestepGrid:
        """A flow-matching grid from its sigmas s: x = (1 - s) x0 + s eps."""
        s = sigmas.to(torch.float64)
        alpha = 1 - s
        return cls(timesteps=timesteps.to(torch.float64), alphas=alpha**2 / (alpha**2 + s**2), alpha=alpha, sigma=s)

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def sigmas(self) -> torch.Tensor:
        """The k-diffusion / EDM noise level sigma / alpha at each of the N + 1 positions (0 where
        sigma is 0, infinite where alpha is 0: a flow's pure-noise end)."""
        return self.sigma / self.alpha

    def check_start(self, start_step: int) -> None:
        if not 0 <= start_step <= len(self):
            raise InputError(f"start_step={start_step} is outside 0..{len(self)} for a grid of {len(self)} steps")


def alpha_to_sigma(alpha: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - a) / a)."""
    return ((1 - alpha) / alpha).clamp_min(0).sqrt()


def sigma_to_alpha(sigma: torch.Tensor) -> torch.Tensor:
    """a = 1 / (1 + sigma^2)."""
    return 1 / (1 + sigma**2)


def _betas(config: Mapping[str, Any], n: int) -> torch.Tensor:
    """The training betas, computed in float32 exactly as diffusers' schedulers do."""
    kind = config.get("beta_schedule", "linear")
    start = float(config.get("beta_start", 0.0001))
    end = float(config.get("beta_end", 0.02))
    if config.get("rescale_betas_zero_snr"):
        raise InputError("rescale_betas_zero_snr schedules (zero terminal SNR) are not supported yet")
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float32)
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    if kind == "squaredcos_cap_v2":
        def f(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    raise InputError(f"beta_schedule {kind!r} is not supported; use linear, scaled_linear or squaredcos_cap_v2")


SAMPLER_ONLY_KEYS = frozenset({
    "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "interpolation_type", "final_sigmas_type",
    "sigma_min", "sigma_max", "skip_prk_steps", "solver_order", "solver_type", "algorithm_type", "lower_order_final",
    "euler_at_final", "use_lu_lambdas", "lambda_min_clipped", "variance_type", "clip_sample", "clip_sample_range",
    "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "timestep_scaling", "original_inference_steps",
})
"""Scheduler config keys that shape only that scheduler's own sampling, not the training
schedule a DDIM grid is read from (documented in `NoiseSchedule.from_config`)."""


def check_supported(config: Mapping[str, Any]) -> None:
    """Refuse, in one line, a scheduler config whose noise schedule `NoiseSchedule` would misread."""
    name = str(config.get("_class_name") or "")
    if name.startswith(("EDM", "FlowMatch")) or config.get("use_flow_sigmas"):
        raise InputError(
            f"scheduler {name or 'config'} (EDM sigmas or flow matching) has no DDPM beta schedule; "
            "unsample reads DDPM-family configs (DDIM, PNDM, Euler, LMS, DPM-Solver) here and flow models via their own backend"
        )
    if config.get("rescale_betas_zero_snr"):
        raise InputError(
            "rescale_betas_zero_snr schedules (zero terminal SNR) are not supported yet; "
            "use a checkpoint trained on the plain schedule"
        )
    kind = config.get("timestep_type")
    if kind not in (None, "discrete"):
        raise InputError(
            f"timestep_type={kind!r} (continuous time labels) is not supported; unsample needs discrete timesteps"
        )


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule of a model and the rule that picks its inference grid."""

    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: float
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    prediction_type: str = "epsilon"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """Build from a diffusers scheduler config (DDIM, PNDM, Euler, LMS, DPM-Solver, ... share these keys).

        The training schedule comes from ``num_train_timesteps``, ``beta_schedule``,
        ``beta_start``/``beta_end``/``trained_betas`` and ``prediction_type``; the N-step grid from
        ``timestep_spacing``, ``steps_offset`` and ``set_alpha_to_one``, so `grid` equals
        ``DDIMScheduler.from_config(config).set_timesteps(N)`` whichever scheduler shipped it.
        The keys in `SAMPLER_ONLY_KEYS` (``use_karras_sigmas``, ``solver_order``, PNDM's
        ``skip_prk_steps``, ...) choose how *that* scheduler walks its own sigmas; they do not
        change the training noise schedule, so they are ignored (Karras spacing is available as
        `karras_grid`). Keys that do change it and are not honoured (`check_supported`) are refused.
        """
        check_supported(config)
        # A loaded scheduler lists in _use_default_values the keys its JSON did not have; like
        # DDIMScheduler.from_config, the grid keys among them take DDIM's defaults, not the
        # shipped class's (Euler, LMS and DPM-Solver default to "linspace" spacing, DDIM to "leading").
        implicit = set(config.get("_use_default_values") or ())
        config = {k: v for k, v in config.items() if k not in implicit or k not in ("timestep_spacing", "steps_offset")}
        n = int(config.get("num_train_timesteps", 1000))
        # diffusers computes the cumulative product in float32; we do the same, then widen,
        # so our alphas are bit-identical to the scheduler's.
        alphas_cumprod = torch.cumprod(1.0 - _betas(config, n), dim=0).to(torch.float64)
        set_one = bool(config.get("set_alpha_to_one", False))
        spacing = str(config.get("timestep_spacing", "leading"))
        if spacing not in SPACINGS:
            raise InputError(f"timestep_spacing {spacing!r} is not supported; use one of {', '.join(SPACINGS)}")
        prediction = str(config.get("prediction_type", "epsilon"))
        if prediction not in ("epsilon", "v_prediction", "sample"):
            raise InputError(f"prediction_type {prediction!r} is not supported; use epsilon, v_prediction or sample")
        return cls(
            alphas_cumprod=alphas_cumprod,
            final_alpha_cumprod=1.0 if set_one else float(alphas_cumprod[0]),
            timestep_spacing=spacing,
            steps_offset=int(config.get("steps_offset", 0)),
            prediction_type=prediction,
        )

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def has_karras_grid(self) -> bool:
        """Always: every a_t > 0, so every sigma = sqrt((1 - a) / a) is finite (`karras_grid`)."""
        return True

    def timesteps(self, steps: int) -> torch.Tensor:
        """The descending integer time labels of an N-step run (diffusers' ``set_timesteps``)."""
        n_train = self.num_train_timesteps
        if not 1 <= steps <= n_train:
            raise InputError(f"steps={steps} must be between 1 and the model's {n_train} training timesteps")
        if self.timestep_spacing == "leading":
            ratio = n_train // steps
            t = torch.arange(steps, dtype=torch.float64) * ratio + self.steps_offset
        elif self.timestep_spacing == "trailing":
            ratio = n_train / steps
            t = torch.round(torch.arange(n_train, 0, -ratio, dtype=torch.float64)).flip(0) - 1
        else:  # linspace
            t = torch.round(torch.linspace(0, n_train - 1, steps, dtype=torch.float64))
        t = t.flip(0).to(torch.int64)
        if int(t.max()) >= n_train or int(t.min()) < 0:
            raise InputError(
                f"steps={steps} with {self.timestep_spacing} spacing and steps_offset={self.steps_offset} gives "
                f"time label {int(t.max())}, outside 0..{n_train - 1}; use fewer steps or trailing spacing"
            )
        return t

    def alpha_at(self, t: torch.Tensor) -> torch.Tensor:
        """a(t) for integer or fractional time labels (linear in t between train timesteps)."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_train_timesteps - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp_max(self.num_train_timesteps - 1)
        w = t - lo
        ac = self.alphas_cumprod.to(t.device)
        return ac[lo] * (1 - w) + ac[hi] * w

    def alpha_sigma_at(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) of x = alpha x0 + sigma eps at time labels ``t``: sqrt(a(t)), sqrt(1 - a(t))."""
        a = self.alpha_at(t)
        return a.sqrt(), (1 - a).sqrt()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fractional time label whose sigma is ``sigma`` (interpolated in log sigma)."""
        log_sigmas = alpha_to_sigma(self.alphas_cumprod).log()
        log_s = torch.as_tensor(sigma, dtype=torch.float64).log()
        idx = torch.searchsorted(log_sigmas, log_s).clamp(1, self.num_train_timesteps - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        w = ((log_s - lo) / (hi - lo)).clamp(0, 1)
        return idx - 1 + w

    @property
    def sigma_min(self) -> float:
        return float(alpha_to_sigma(self.alphas_cumprod[0]))

    @property
    def sigma_max(self) -> float:
        return float(alpha_to_sigma(self.alphas_cumprod[-1]))

    def grid(self, steps: int) -> TimestepGrid:
        """The DDIM grid of ``steps`` steps: the config's time labels and their alphas."""
        t = self.timesteps(steps)
        alphas = torch.cat([self.alphas_cumprod[t], torch.tensor([self.final_alpha_cumprod], dtype=torch.float64)])
        return TimestepGrid.variance_preserving(t, alphas)

    def karras_grid(self, steps: int, rho: float = 7.0) -> TimestepGrid:
        """Karras et al. (2022) rho-spaced sigmas from sigma_max down to the final state.

        With ``set_alpha_to_one`` the final sigma is 0 and the N sigmas end at sigma_min, as in
        k-diffusion; otherwise the N + 1 positions run from sigma_max to the final sigma
        (= sigma_min), so no step is of zero length.
        """
        if steps < 1:
            raise InputError(f"steps={steps} must be at least 1")
        final = torch.tensor([self.final_alpha_cumprod], dtype=torch.float64)
        hi = self.sigma_max ** (1 / rho)
        if self.final_alpha_cumprod >= 1.0:
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            sigmas = (hi + ramp * (self.sigma_min ** (1 / rho) - hi)) ** rho
        else:
            ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)[:-1]
            sigmas = (hi + ramp * (float(alpha_to_sigma(final)) ** (1 / rho) - hi)) ** rho
        alphas = torch.cat([sigma_to_alpha(sigmas), final])
        return TimestepGrid.variance_preserving(self.sigma_to_t(sigmas), alphas)
