"""The rectified-flow schedule of diffusers' ``FlowMatchEulerDiscreteScheduler`` (SD3, Flux).

Notation:
    x_s = (1 - s) x0 + s eps      the state at noise level s in [0, 1] (alpha = 1 - s, sigma = s)
    v   = eps - x0                the velocity the model predicts (dx_s / ds)
    t   = s * num_train_timesteps the model's time label (a float, not an integer index)

Shifting moves the N sampling sigmas s towards the noisy end:
    static shift               s' = shift * s / (1 + (shift - 1) s)
    dynamic shift, exponential s' = e^mu / (e^mu + (1/s - 1)^1)    (Flux; mu from the image size)
    dynamic shift, linear      s' = mu / (mu + (1/s - 1)^1)
    mu(L) = m L + b,  the line through (base_image_seq_len, base_shift) and
                      (max_image_seq_len, max_shift) at L = image_seq_len tokens

and ``shift_terminal`` (if set) stretches the shifted sigmas so the last of the N ends at it:
1 - s'' = (1 - s') (1 - shift_terminal) / (1 - s'_{N-1}). The final sigma 0 (the clean image) is
appended after the N sigmas, so a run of N steps has N + 1 positions and N time labels.

Before shifting, the *pipeline* decides the N unshifted sigmas (``pipeline_sigmas``):
    "timesteps"  SD3: diffusers' default ``set_timesteps``, N time labels evenly spaced from
                 sigma_max * T to sigma_min * T, divided by T. sigma_min and sigma_max are the
                 ends of the scheduler's 1000 *training* sigmas (1/T ... 1), already shifted by the
                 static shift when dynamic shifting is off, so those ends are shifted twice.
    "linspace"   Flux: ``np.linspace(1, 1/N, N)`` passed to ``set_timesteps`` as ``sigmas``.

Every number is computed with the operations, operand order and floating-point width diffusers
uses (float32 where its arrays are float32, float64 where they are float64), then rounded to
float32 as ``set_timesteps`` stores them and widened: our float64 sigmas are bit-identical to the
scheduler's. The time labels ``sigma * T`` are exact in float64; rounded to float32 (as the model's
input is) they are the scheduler's float32 ``timesteps`` bit for bit.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError

PIPELINE_SIGMAS = ("timesteps", "linspace")
TIME_SHIFT_TYPES = ("exponential", "linear")

# Config keys of diffusers 0.42's FlowMatchEulerDiscreteScheduler that FlowSchedule reads.
_SUPPORTED_KEYS = (
    "num_train_timesteps",
    "shift",
    "use_dynamic_shifting",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "time_shift_type",
    "shift_terminal",
)
# Keys that change the schedule or the sampler in ways FlowSchedule does not model: accepted only when false.
_REFUSED_FLAGS = {
    "use_karras_sigmas": "Karras sigmas",
    "use_exponential_sigmas": "exponential sigmas",
    "use_beta_sigmas": "beta sigmas",
    "invert_sigmas": "inverted sigmas (Mochi)",
    "stochastic_sampling": "stochastic sampling (re-noising every step)",
}
_DDPM_KEYS = ("beta_schedule", "beta_start", "beta_end", "trained_betas", "alphas_cumprod")
_FLOW_PREDICTIONS = ("flow", "flow_prediction")


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim tensor of ``like``'s dtype: numpy's (NEP 50) treatment of a Python scalar in an array op.

    Tensor-tensor division is used throughout because torch's ``scalar / tensor`` is
    ``tensor.reciprocal() * scalar``, which is not correctly rounded.
    """
    return torch.tensor(value, dtype=like.dtype)


def _np_linspace(start: float, stop: float, num: int) -> torch.Tensor:
    """``np.linspace(start, stop, num)`` in float64, bit for bit (torch.linspace rounds differently)."""
    y = torch.arange(num, dtype=torch.float64)
    if num > 1:
        step = (stop - start) / (num - 1)
        if step == 0:
            y = torch.zeros(num, dtype=torch.float64)
        else:
            y = y * step
    else:
        y = y * (stop - start)
    y = y + start
    if num > 1:
        y[-1] = stop
    return y


def _positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (bools and floats refused), else a one-line ValueError naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise InputError(f"{name}={value!r} must be a positive integer") from None
    if n < 1:
        raise InputError(f"{name}={n} must be a positive integer")
    return n


@dataclass(frozen=True)
class FlowSchedule:
    """Diffusers' ``FlowMatchEulerDiscreteScheduler`` schedule, plus how the pipeline seeds it."""

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    time_shift_type: str = "exponential"
    shift_terminal: float | None = None
    prediction_type: str = "flow"
    pipeline_sigmas: str = "timesteps"
    image_seq_len: int | None = None
    """The latent tokens of the image the grid is for, when dynamic shifting needs them and the
    call does not pass them (a backend binds it per image with `for_image`)."""
    # The ends of the (statically shifted) training sigmas, as the scheduler's __init__ stores them.
    sigma_min: float = field(init=False)
    sigma_max: float = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.num_train_timesteps, bool) or not isinstance(self.num_train_timesteps, int):
            raise InputError(f"num_train_timesteps={self.num_train_timesteps!r} must be an integer")
        if self.num_train_timesteps < 1:
            raise InputError(f"num_train_timesteps={self.num_train_timesteps} must be at least 1")
        if not self.shift > 0:
            raise InputError(f"shift={self.shift} must be positive")
        if self.time_shift_type not in TIME_SHIFT_TYPES:
            raise InputError(
                f"time_shift_type {self.time_shift_type!r} is not supported; use one of {', '.join(TIME_SHIFT_TYPES)}"
            )
        if self.pipeline_sigmas not in PIPELINE_SIGMAS:
            raise InputError(
                f"pipeline_sigmas {self.pipeline_sigmas!r} is not supported; use 'timesteps' (SD3) or 'linspace' (Flux)"
            )
        if self.shift_terminal is not None and not 0 < self.shift_terminal < 1:
            raise InputError(f"shift_terminal={self.shift_terminal} must be between 0 and 1 (or None for no stretching)")
        if self.prediction_type != "flow":
            raise InputError(f"prediction_type {self.prediction_type!r} is not supported; flow schedules predict 'flow'")
        if self.use_dynamic_shifting and self.max_image_seq_len == self.base_image_seq_len:
            raise InputError(
                f"base_image_seq_len and max_image_seq_len are both {self.base_image_seq_len}; "
                "dynamic shifting needs two different sequence lengths"
            )
        lo, hi = self._training_sigma_ends()
        object.__setattr__(self, "sigma_min", lo)
        object.__setattr__(self, "sigma_max", hi)

    def _training_sigma_ends(self) -> tuple[float, float]:
        """sigma_min, sigma_max: the last and first of the scheduler's training sigmas (float32, widened).

        diffusers computes all T of them (time labels T ... 1, divided by T, shifted unless dynamic
        shifting is on); the ends are all it keeps, so only the ends are computed here.
        """
        n = self.num_train_timesteps
        s = torch.tensor([float(n), 1.0], dtype=torch.float32) / n
        if not self.use_dynamic_shifting:
            s = self.shift * s / (1 + (self.shift - 1) * s)
        return float(s[1]), float(s[0])

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, pipeline_sigmas: str = "timesteps") -> FlowSchedule:
        """Build from a ``FlowMatchEulerDiscreteScheduler`` config (``dict(pipe.scheduler.config)``).

        ``pipeline_sigmas`` says how the pipeline seeds ``set_timesteps``: "timesteps" for SD3,
        "linspace" for Flux. Keys diffusers adds (``_class_name`` ...) are ignored; options this
        schedule does not reproduce, and keys it does not know, raise ValueError.
        """
        class_name = config.get("_class_name")
        if class_name is not None and class_name != "FlowMatchEulerDiscreteScheduler":
            raise InputError(
                f"the scheduler config is for {class_name}; FlowSchedule reproduces FlowMatchEulerDiscreteScheduler "
                "only (use NoiseSchedule for DDPM-family schedulers)"
            )
        ddpm = [k for k in _DDPM_KEYS if k in config]
        if ddpm:
            raise InputError(
                f"the scheduler config has DDPM keys ({', '.join(ddpm)}); use NoiseSchedule.from_config for it"
            )
        for key, what in _REFUSED_FLAGS.items():
            if config.get(key):
                raise InputError(f"{key}=True ({what}) is not supported; set {key} to False in the scheduler config")
        prediction = config.get("prediction_type")
        if prediction is not None and prediction not in _FLOW_PREDICTIONS:
            raise InputError(f"prediction_type {prediction!r} is not supported; a flow-matching config predicts 'flow'")
        known = set(_SUPPORTED_KEYS) | set(_REFUSED_FLAGS) | {"prediction_type"}
        unknown = sorted(k for k in config if not str(k).startswith("_") and k not in known)
        if unknown:
            raise InputError(
                f"unknown scheduler config keys {unknown}; FlowSchedule knows diffusers 0.42's "
                "FlowMatchEulerDiscreteScheduler keys only (remove them if they do not change the schedule)"
            )
        dynamic = bool(config.get("use_dynamic_shifting", False))
        base_shift = config.get("base_shift", 0.5)
        max_shift = config.get("max_shift", 1.15)
        if dynamic and (base_shift is None or max_shift is None):
            raise InputError("use_dynamic_shifting needs base_shift and max_shift; set both in the scheduler config")
        terminal = config.get("shift_terminal")
        return cls(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
            shift=float(config.get("shift", 1.0)),
            use_dynamic_shifting=dynamic,
            base_shift=0.5 if base_shift is None else float(base_shift),
            max_shift=1.15 if max_shift is None else float(max_shift),
            base_image_seq_len=int(config.get("base_image_seq_len", 256)),
            max_image_seq_len=int(config.get("max_image_seq_len", 4096)),
            time_shift_type=str(config.get("time_shift_type", "exponential")),
            # diffusers stretches only when shift_terminal is truthy: 0 and None both mean "off".
            shift_terminal=float(terminal) if terminal else None,
            prediction_type="flow",
            pipeline_sigmas=pipeline_sigmas,
        )

    def for_image(self, image_seq_len: int) -> FlowSchedule:
        """This schedule with its grids shifted for an image of ``image_seq_len`` latent tokens."""
        return replace(self, image_seq_len=image_seq_len)

    def mu_for(self, image_seq_len: int) -> float:
        """Flux's ``calculate_shift``: mu on the line through (base_len, base_shift) and (max_len, max_shift)."""
        m = (self.max_shift - self.base_shift) / (self.max_image_seq_len - self.base_image_seq_len)
        b = self.base_shift - m * self.base_image_seq_len
        return image_seq_len * m + b

    @staticmethod
    def _check_steps(steps: int) -> int:
        return _positive_int(steps, "steps")

    def _mu(self, image_seq_len: int | None) -> float | None:
        if not self.use_dynamic_shifting:
            return None  # diffusers ignores mu without dynamic shifting; so do we
        if image_seq_len is None:
            image_seq_len = self.image_seq_len
        if image_seq_len is None:
            raise InputError(
                "this schedule shifts with the image size (use_dynamic_shifting); pass image_seq_len, "
                "the number of latent tokens the transformer sees"
            )
        return self.mu_for(_positive_int(image_seq_len, "image_seq_len"))

    def _unshifted(self, n: int) -> torch.Tensor:
        """The N sigmas the pipeline hands to the shift (float64 for SD3, float32 for Flux, as in diffusers)."""
        t_train = self.num_train_timesteps
        if self.pipeline_sigmas == "timesteps":
            t = _np_linspace(self.sigma_max * t_train, self.sigma_min * t_train, n)
            return t / t_train
        return _np_linspace(1.0, 1 / n, n).to(torch.float32)

    def _shifted(self, s: torch.Tensor, mu: float | None) -> torch.Tensor:
        one = _scalar(1.0, s)
        if mu is not None:
            # time_shift(mu, 1.0, s); (1/s - 1) ** 1.0 is exact, so the power is left out.
            c = _scalar(math.exp(mu) if self.time_shift_type == "exponential" else mu, s)
            return c / (c + (one / s - one))
        return _scalar(self.shift, s) * s / (one + _scalar(self.shift - 1, s) * s)

    def _stretched(self, s: torch.Tensor) -> torch.Tensor:
        one = _scalar(1.0, s)
        one_minus = one - s
        scale = one_minus[-1] / _scalar(1 - self.shift_terminal, s)  # type: ignore[operator]
        return one - one_minus / scale

    def sigmas(self, steps: int, *, image_seq_len: int | None = None) -> torch.Tensor:
        """The N + 1 sigmas of an N-step run, descending, ending with 0 (float64; diffusers' float32 values).

        Dynamic shifting needs ``image_seq_len``; without dynamic shifting it is ignored.
        """
        n = self._check_steps(steps)
        mu = self._mu(image_seq_len)
        if self.shift_terminal is not None and n == 1:
            raise InputError(
                "shift_terminal with steps=1 gives a NaN sigma in diffusers (the stretch divides 0 by 0); use steps >= 2"
            )
        s = self._shifted(self._unshifted(n), mu)
        if self.shift_terminal is not None:
            s = self._stretched(s)
        s = s.to(torch.float32)
        return torch.cat([s, torch.zeros(1, dtype=torch.float32)]).to(torch.float64)

    def timesteps_for(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The N time labels of N + 1 sigmas: ``sigmas[:-1] * num_train_timesteps`` (float64).

        The float64 product of a float32 sigma and T is exact; ``.float()`` of it is diffusers'
        float32 ``timesteps`` (which rounds the product once, in float32).
        """
        if sigmas.ndim != 1 or sigmas.shape[0] < 2:
            raise InputError(f"timesteps_for needs a 1-d tensor of N + 1 >= 2 sigmas, got shape {tuple(sigmas.shape)}")
        return sigmas[:-1].to(torch.float64) * self.num_train_timesteps

    def grid(self, steps: int, *, image_seq_len: int | None = None) -> TimestepGrid:
        """The ``TimestepGrid`` of an N-step run: the time labels and sigmas of :meth:`sigmas`."""

        s = self.sigmas(steps, image_seq_len=image_seq_len)
        return TimestepGrid.flow(self.timesteps_for(s), s)

    @property
    def has_karras_grid(self) -> bool:
        """Never: k-diffusion's sigma / alpha = s / (1 - s) is infinite at the pure-noise end s = 1."""
        return False

    def karras_grid(self, steps: int, rho: float = 7.0) -> TimestepGrid:
        """Refused: a flow has no Karras grid (`has_karras_grid` is False)."""
        raise InputError(
            "a flow schedule has no Karras grid (k-diffusion's sigma / alpha is infinite at its pure-noise end); "
            "use its own grid, schedule.grid(steps)"
        )

    def alpha_sigma_at(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) of x = alpha x0 + sigma eps at time labels ``t``: sigma = t / T, alpha = 1 - sigma."""
        sigma = torch.as_tensor(t, dtype=torch.float64) / self.num_train_timesteps
        return 1 - sigma, sigma
