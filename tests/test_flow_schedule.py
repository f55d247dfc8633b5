"""FlowSchedule's sigmas and time labels equal diffusers' FlowMatchEulerDiscreteScheduler, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from unsample.core.flow_schedule import FlowSchedule

SD3_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_CONFIG = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def _sd3_reference(config: dict, steps: int, mu: float | None = None) -> FlowMatchEulerDiscreteScheduler:
    """The scheduler after the SD3 pipeline's retrieve_timesteps(scheduler, N[, mu=mu])."""
    sched = FlowMatchEulerDiscreteScheduler(**config)
    kwargs = {} if mu is None else {"mu": mu}
    sched.set_timesteps(num_inference_steps=steps, **kwargs)
    return sched


def _flux_reference(config: dict, steps: int, image_seq_len: int) -> FlowMatchEulerDiscreteScheduler:
    """The scheduler after the Flux pipeline's retrieve_timesteps(scheduler, N, sigmas=..., mu=...)."""
    sched = FlowMatchEulerDiscreteScheduler(**config)
    cfg = sched.config
    mu = calculate_shift(
        image_seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return sched


def _assert_same(ours_sigmas: torch.Tensor, ours_t: torch.Tensor, theirs: FlowMatchEulerDiscreteScheduler) -> None:
    assert ours_sigmas.dtype == torch.float64 and ours_t.dtype == torch.float64
    assert ours_sigmas.shape == theirs.sigmas.shape and ours_t.shape == theirs.timesteps.shape
    assert torch.equal(ours_sigmas.float(), theirs.sigmas)
    assert torch.equal(ours_t.float(), theirs.timesteps)
    # Our float64 sigmas are diffusers' float32 values widened, not merely close to them.
    assert torch.equal(ours_sigmas, theirs.sigmas.double())


# (a) SD3 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 7, 28, 50])
def test_sd3_sigmas_and_timesteps_match_diffusers(steps: int) -> None:
    ours = FlowSchedule.from_config(dict(FlowMatchEulerDiscreteScheduler(**SD3_CONFIG).config))
    s = ours.sigmas(steps)
    _assert_same(s, ours.timesteps_for(s), _sd3_reference(SD3_CONFIG, steps))
    assert s[0] == 1.0 and s[-1] == 0.0
    assert bool((s[1:] < s[:-1]).all())


def test_sigma_ends_are_the_shifted_training_sigmas() -> None:
    theirs = FlowMatchEulerDiscreteScheduler(**SD3_CONFIG)
    ours = FlowSchedule.from_config(dict(theirs.config))
    assert ours.sigma_min == theirs.sigma_min and ours.sigma_max == theirs.sigma_max
    assert ours.sigma_max == 1.0
    assert ours.sigma_min == pytest.approx(3 * 0.001 / (1 + 2 * 0.001), rel=1e-6)
    dyn = FlowMatchEulerDiscreteScheduler(**FLUX_CONFIG)
    ours_dyn = FlowSchedule.from_config(dict(dyn.config), pipeline_sigmas="linspace")
    assert ours_dyn.sigma_min == dyn.sigma_min and ours_dyn.sigma_max == dyn.sigma_max  # unshifted: float32(1/1000)


@pytest.mark.parametrize("shift", [0.5, 1.7, 3.0, 6.0])
@pytest.mark.parametrize("steps", [3, 20, 999, 1000, 1500])
def test_sd3_other_shifts_and_step_counts_match_diffusers(shift: float, steps: int) -> None:
    config = {**SD3_CONFIG, "shift": shift}
    ours = FlowSchedule.from_config(config)
    s = ours.sigmas(steps)
    _assert_same(s, ours.timesteps_for(s), _sd3_reference(config, steps))


@pytest.mark.parametrize("image_seq_len", [16, 1024, 4096])
@pytest.mark.parametrize("steps", [1, 7, 28])
def test_sd3_style_with_dynamic_shifting_matches_diffusers(image_seq_len: int, steps: int) -> None:
    """The SD3 pipeline computes mu itself when the config shifts dynamically, and passes no sigmas."""
    ours = FlowSchedule.from_config(FLUX_CONFIG, pipeline_sigmas="timesteps")
    mu = calculate_shift(image_seq_len, 256, 4096, 0.5, 1.15)
    s = ours.sigmas(steps, image_seq_len=image_seq_len)
    _assert_same(s, ours.timesteps_for(s), _sd3_reference(FLUX_CONFIG, steps, mu=mu))


# (b) Flux -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_seq_len", [16, 256, 1024, 4096])
@pytest.mark.parametrize("steps", [1, 2, 4, 7, 28, 50])
def test_flux_sigmas_and_timesteps_match_diffusers(image_seq_len: int, steps: int) -> None:
    ours = FlowSchedule.from_config(
        dict(FlowMatchEulerDiscreteScheduler(**FLUX_CONFIG).config), pipeline_sigmas="linspace"
    )
    s = ours.sigmas(steps, image_seq_len=image_seq_len)
    _assert_same(s, ours.timesteps_for(s), _flux_reference(FLUX_CONFIG, steps, image_seq_len))
    assert s[0] == 1.0 and s[-1] == 0.0


@pytest.mark.parametrize("image_seq_len", [1, 16, 256, 333, 1024, 4096, 10000])
def test_mu_is_calculate_shift(image_seq_len: int) -> None:
    ours = FlowSchedule.from_config(FLUX_CONFIG, pipeline_sigmas="linspace")
    assert ours.mu_for(image_seq_len) == calculate_shift(image_seq_len, 256, 4096, 0.5, 1.15)


@pytest.mark.parametrize("steps", [2, 28])
def test_flux_style_linear_time_shift_matches_diffusers(steps: int) -> None:
    config = {**FLUX_CONFIG, "time_shift_type": "linear"}
    ours = FlowSchedule.from_config(config, pipeline_sigmas="linspace")
    s = ours.sigmas(steps, image_seq_len=1024)
    _assert_same(s, ours.timesteps_for(s), _flux_reference(config, steps, 1024))


@pytest.mark.parametrize("steps", [1, 28])
def test_flux_style_static_shift_ignores_image_seq_len(steps: int) -> None:
    """Without dynamic shifting the Flux pipeline still passes mu; the scheduler ignores it, so do we."""
    config = {**SD3_CONFIG}
    ours = FlowSchedule.from_config(config, pipeline_sigmas="linspace")
    s = ours.sigmas(steps, image_seq_len=4096)
    assert torch.equal(s, ours.sigmas(steps))
    _assert_same(s, ours.timesteps_for(s), _flux_reference(config, steps, 4096))


@pytest.mark.parametrize("pipeline_sigmas", ["timesteps", "linspace"])
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("steps", [2, 9, 50])
def test_shift_terminal_stretch_matches_diffusers(pipeline_sigmas: str, dynamic: bool, steps: int) -> None:
    config = {**(FLUX_CONFIG if dynamic else SD3_CONFIG), "shift_terminal": 0.1}
    ours = FlowSchedule.from_config(config, pipeline_sigmas=pipeline_sigmas)
    s = ours.sigmas(steps, image_seq_len=1024)
    if pipeline_sigmas == "linspace":
        theirs = _flux_reference(config, steps, 1024)
    else:
        theirs = _sd3_reference(config, steps, mu=calculate_shift(1024, 256, 4096, 0.5, 1.15) if dynamic else None)
    _assert_same(s, ours.timesteps_for(s), theirs)
    assert float(s[-2]) == pytest.approx(0.1, abs=1e-6)  # the last of the N sigmas is the terminal one


# (c) shift = 1 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 10, 28])
def test_shift_one_gives_linear_sigmas_ending_at_zero(steps: int) -> None:
    config = {"num_train_timesteps": 1000, "shift": 1.0}
    ours = FlowSchedule.from_config(config)
    s = ours.sigmas(steps)
    assert s.shape == (steps + 1,) and s[-1] == 0.0 and s[0] == 1.0
    # The N sigmas run evenly from 1 to sigma_min = 1/T (float32), then the appended 0.
    expected = torch.linspace(1.0, ours.sigma_min, steps, dtype=torch.float64)
    assert torch.allclose(s[:-1], expected, rtol=0, atol=1e-7)
    assert ours.sigma_min == pytest.approx(1e-3, rel=1e-6)
    _assert_same(s, ours.timesteps_for(s), _sd3_reference(config, steps))


# (d) refusals ---------------------------------------------------------------------------------------


def test_dynamic_shifting_needs_image_seq_len() -> None:
    ours = FlowSchedule.from_config(FLUX_CONFIG, pipeline_sigmas="linspace")
    with pytest.raises(ValueError, match="pass image_seq_len"):
        ours.sigmas(28)
    with pytest.raises(ValueError, match="pass image_seq_len"):
        ours.grid(28)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="image_seq_len"):
            ours.sigmas(28, image_seq_len=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key", ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas", "stochastic_sampling"]
)
def test_unsupported_options_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"{key}=True .* set {key} to False"):
        FlowSchedule.from_config({**SD3_CONFIG, key: True})
    FlowSchedule.from_config({**SD3_CONFIG, key: False})  # false is fine


def test_foreign_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="NoiseSchedule"):
        FlowSchedule.from_config({"_class_name": "DDIMScheduler", "beta_start": 0.00085})
    with pytest.raises(ValueError, match="NoiseSchedule"):
        FlowSchedule.from_config({"beta_schedule": "scaled_linear"})
    with pytest.raises(ValueError, match="unknown scheduler config keys"):
        FlowSchedule.from_config({**SD3_CONFIG, "use_flow_sigmas": True})
    with pytest.raises(ValueError, match="prediction_type"):
        FlowSchedule.from_config({**SD3_CONFIG, "prediction_type": "epsilon"})
    with pytest.raises(ValueError, match="time_shift_type"):
        FlowSchedule.from_config({**SD3_CONFIG, "time_shift_type": "cosine"})
    with pytest.raises(ValueError, match="pipeline_sigmas"):
        FlowSchedule.from_config(SD3_CONFIG, pipeline_sigmas="karras")


def test_full_diffusers_config_with_bookkeeping_keys_is_accepted() -> None:
    config = dict(FlowMatchEulerDiscreteScheduler(**FLUX_CONFIG).config)
    config["_class_name"] = "FlowMatchEulerDiscreteScheduler"
    config["_diffusers_version"] = "0.42.1"
    ours = FlowSchedule.from_config(config, pipeline_sigmas="linspace")
    assert ours.use_dynamic_shifting and ours.shift == 3.0 and ours.prediction_type == "flow"
    assert ours.shift_terminal is None


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_steps_must_be_a_positive_integer(steps: object) -> None:
    with pytest.raises(ValueError, match="steps"):
        FlowSchedule().sigmas(steps)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_shift_terminal_with_one_step_is_refused_not_nan() -> None:
    """diffusers' stretch divides 0 by 0 for a single step and gives a NaN sigma."""
    config = {**SD3_CONFIG, "shift_terminal": 0.1}
    theirs = _sd3_reference(config, 1)
    assert torch.isnan(theirs.sigmas[0])
    with pytest.raises(ValueError, match="steps >= 2"):
        FlowSchedule.from_config(config).sigmas(1)


def test_derived_sigma_ends_follow_replace() -> None:
    ours = dataclasses.replace(FlowSchedule.from_config(SD3_CONFIG), shift=1.0)
    assert ours.sigma_min == FlowMatchEulerDiscreteScheduler(shift=1.0).sigma_min


# alpha, sigma and the grid ------------------------------------------------------------------------


def test_alpha_sigma_at() -> None:
    ours = FlowSchedule.from_config(SD3_CONFIG)
    s = ours.sigmas(28)
    alpha, sigma = ours.alpha_sigma_at(ours.timesteps_for(s))
    assert alpha.dtype == sigma.dtype == torch.float64
    assert torch.allclose(sigma, s[:-1], rtol=0, atol=1e-15)
    assert torch.equal(alpha + sigma, torch.ones_like(alpha))
    a, b = ours.alpha_sigma_at(torch.tensor([0.0, 250.0, 1000.0], dtype=torch.float64))
    assert torch.equal(b, torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64))
    assert torch.equal(a, torch.tensor([1.0, 0.75, 0.0], dtype=torch.float64))
    # Against diffusers' forward process x = sigma * eps + (1 - sigma) * x0 (scale_noise).
    theirs = _sd3_reference(SD3_CONFIG, 28)
    x0, eps = torch.randn(3, 4), torch.randn(3, 4)
    t = theirs.timesteps[5]
    ref = theirs.scale_noise(x0, t.reshape(1), eps)
    a, b = ours.alpha_sigma_at(t.double())
    assert torch.allclose((a * x0.double() + b * eps.double()).float(), ref, atol=1e-6)


def test_grid() -> None:
    from unsample.core.schedule import TimestepGrid

    if not hasattr(TimestepGrid, "flow"):
        pytest.skip("TimestepGrid.flow is not in yet")
    ours = FlowSchedule.from_config(FLUX_CONFIG, pipeline_sigmas="linspace")
    grid = ours.grid(28, image_seq_len=1024)
    s = ours.sigmas(28, image_seq_len=1024)
    assert len(grid) == 28
    assert torch.equal(grid.timesteps, ours.timesteps_for(s))
    assert torch.equal(grid.sigma, s) and torch.equal(grid.alpha, 1 - s)
