"""The edit check against a closed form: point-mass data whose exact eps is known for each prompt."""

from __future__ import annotations

import pytest
import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.editing.check import CheckConfig, check_edit, denoising_gaps


class _Prompt:
    """A conditioning that is the data point its prompt describes ([B, C, h, w])."""

    def __init__(self, point: torch.Tensor) -> None:
        self.point = point

    def cat(self, other: "_Prompt") -> "_Prompt":
        return _Prompt(torch.cat([self.point, other.point]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"point": self.point}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "_Prompt":
        return cls(tensors["point"])


SCHEDULE = NoiseSchedule.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})


def _point_mass_eps(x: torch.Tensor, t: torch.Tensor, cond: _Prompt) -> torch.Tensor:
    """The exact eps of data that is one point c: x_t = alpha c + sigma eps, so eps = (x_t - alpha c) / sigma."""
    alpha, sigma = (v.to(x.dtype).view(-1, 1, 1, 1) for v in SCHEDULE.alpha_sigma_at(t))
    return (x - alpha * cond.point.to(x.dtype)) / sigma


def _setup() -> tuple[Denoiser, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64)
    b = a.clone()
    b[..., 1:3, 1:3] += 1.5  # the edit changes the centre
    den = Denoiser(_point_mass_eps, SCHEDULE, _Prompt(a).cat(_Prompt(b)), dtype=torch.float64)
    return den, a, b


def test_the_score_is_the_closed_form_for_point_masses() -> None:
    """At z_e = b (the target's point) E(target) = 0 and E(source) = (alpha / sigma)^2 mean_M (b - a)^2, and
    the other way round at z_s = a; the draws cancel exactly, so every difference on the edit is
    (alpha / sigma)^2 mean_M (b - a)^2 and every one on the source its negative."""
    den, a, b = _setup()
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    config = CheckConfig(levels=(0.2, 0.6), draws=3)
    gaps, on_source = denoising_gaps(den, b, a, mask, config)
    expected = []
    for level in config.levels:
        t = torch.tensor([float(round(level * 999))], dtype=torch.float64)
        alpha, sigma = SCHEDULE.alpha_sigma_at(t)
        expected += [float((alpha / sigma) ** 2 * ((b - a) ** 2)[..., 1:3, 1:3].mean())] * 3
    assert torch.allclose(gaps, torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    assert torch.allclose(on_source, -torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    assert den.counter.calls == 2  # one batched call per level: 2 prompts x 2 latents x K draws
    result = check_edit(den, b, a, mask, config)
    assert result.edit_took and result.score == pytest.approx(sum(expected) / len(expected))
    assert result.source_score == pytest.approx(-result.score)
    assert result.background_mse == pytest.approx(0.0) and result.evaluations == 4 * 3 * 2


def test_an_edit_that_did_not_happen_scores_below_zero_and_is_flagged() -> None:
    den, a, b = _setup()
    undone = check_edit(den, a, a, None, CheckConfig(draws=2))  # the edited latent is the source's
    assert undone.score == pytest.approx(undone.source_score) and undone.score < 0 and not undone.edit_took
    reverted = check_edit(den, a, b, None, CheckConfig(draws=2))  # the "edit" went back to the source's point
    assert reverted.score < 0 and not reverted.edit_took


def test_bad_check_settings_are_refused() -> None:
    den, a, b = _setup()
    with pytest.raises(ValueError, match="levels"):
        CheckConfig(levels=(1.5,))
    with pytest.raises(ValueError, match="draws"):
        CheckConfig(draws=0)
    with pytest.raises(ValueError, match="at least one cell"):
        check_edit(den, b, a, torch.zeros(4, 4, dtype=torch.bool))


def test_an_edit_with_the_check_says_so_in_its_result_its_cost_and_the_cli(tiny_model, tiny_image, tiny_pipeline_dir,
                                                                             tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    import unsample
    from unsample.cli import app

    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=3)
    plain = unsample.edit(tiny_model, inv, "a green cat", mask="none", output="result")
    judged = unsample.edit(tiny_model, inv, "a green cat", mask="none", check=True, output="result")
    assert plain.check is None and judged.check is not None
    assert torch.equal(plain.latent, judged.latent)  # the check only reads the edit
    assert judged.network_evaluations == plain.network_evaluations + judged.check.evaluations
    # resuming at the last step changes nothing: the "edit" is the source latent, so it scores as the source does
    nothing = unsample.edit(tiny_model, inv, "a green cat", start_step=3, mask="none", check=True, output="result")
    assert nothing.check.score == pytest.approx(nothing.check.source_score, abs=1e-6)
    src = tmp_path / "in.png"
    tiny_image.save(src)
    out = tmp_path / "e.png"
    r = CliRunner().invoke(app, ["edit", str(src), "--source-prompt", "a red cat", "--target-prompt", "a green cat",
                                 "--steps", "3", "--start-step", "3", "--check", "-o", str(out), "--model",
                                 str(tiny_pipeline_dir), "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    took = side["check"]["edit_took"]
    assert took == (side["check"]["score"] > side["check"]["threshold"]) and side["edit"]["check"] is True
    assert ("check: the edit took (score" if took else "warning: the edit did not take (score") in r.output


def test_the_bench_calibration_counts_silent_failures_and_false_alarms() -> None:
    from unsample_lab.bench.edit import check_calibration

    rows = [{"check_score": s, "success": ok} for s, ok in [(0.3, True), (0.2, True), (-0.1, False), (0.05, False),
                                                            (-0.2, True), (None, True)]]
    c = check_calibration(rows)
    # scores of the 3 successes 0.3, 0.2, -0.2 against the 2 failures -0.1, 0.05: 4 of 6 pairs ordered right
    assert c["edits"] == 5 and c["auc"] == pytest.approx(4 / 6)
    assert c["silent_failures"] == pytest.approx(1 / 5) and c["false_alarms"] == pytest.approx(1 / 5)
