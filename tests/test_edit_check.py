"""The edit check against a closed form: point-mass data whose exact eps is known for each prompt."""

from __future__ import annotations

import pytest
import torch

from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.editing.check import CheckConfig, check_edit, denoising_errors


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
SPREAD = 0.5  # each prompt's data: a Gaussian N(mean, SPREAD^2 I) around the point the prompt describes


def _gaussian_eps(x: torch.Tensor, t: torch.Tensor, cond: _Prompt) -> torch.Tensor:
    """The exact eps of Gaussian data N(mu, s^2 I): E[eps | x_t] = sigma (x_t - alpha mu) / (alpha^2 s^2 + sigma^2)."""
    alpha, sigma = (v.to(x.dtype).view(-1, 1, 1, 1) for v in SCHEDULE.alpha_sigma_at(t))
    return sigma * (x - alpha * cond.point.to(x.dtype)) / (alpha**2 * SPREAD**2 + sigma**2)


def _setup() -> tuple[Denoiser, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64)
    b = a.clone()
    b[..., 1:3, 1:3] += 1.5  # the edit changes the centre
    den = Denoiser(_gaussian_eps, SCHEDULE, _Prompt(a).cat(_Prompt(b)), dtype=torch.float64)
    return den, a, b


def _expected_errors(z: torch.Tensor, mean: torch.Tensor, config: CheckConfig, cells: slice) -> list[float]:
    """The closed form of E_jk(z; c) with the check's own draws (seeded as documented: one generator,
    K draws per level in order): for x_t = alpha z + sigma n, eps_hat - n = (sigma alpha (z - mu) -
    alpha^2 s^2 n) / (alpha^2 s^2 + sigma^2)."""
    gen = torch.Generator().manual_seed(config.seed)
    out = []
    for level in config.levels:
        t = torch.tensor([float(round(level * 999))], dtype=torch.float64)
        alpha, sigma = (float(v) for v in SCHEDULE.alpha_sigma_at(t))
        noise = torch.randn((config.draws, *z.shape[1:]), generator=gen, dtype=torch.float32).double()
        d = alpha**2 * SPREAD**2 + sigma**2
        err = (sigma * alpha * (z - mean) - alpha**2 * SPREAD**2 * noise) / d
        out += [float(e) for e in (err**2)[..., cells, cells].mean(dim=(1, 2, 3))]
    return out


def test_the_errors_and_the_score_are_the_closed_form_for_gaussian_prompts() -> None:
    """A perfect edit (z_e = the target's mean) fits its caption exactly as the source fits its own: every
    log ratio is 0 for each draw (both errors are (alpha^2 s^2 / d)^2 |n|^2), so the score is 0; the
    direction is the closed-form gap of the source prompt's error over the target's."""
    den, a, b = _setup()
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    config = CheckConfig(levels=(0.2, 0.6), draws=3)
    e = denoising_errors(den, b, a, mask, config)
    centre = slice(1, 3)
    assert torch.allclose(e.edit_target, torch.tensor(_expected_errors(b, b, config, centre), dtype=torch.float64))
    assert torch.allclose(e.edit_source, torch.tensor(_expected_errors(b, a, config, centre), dtype=torch.float64))
    assert torch.allclose(e.source_source, torch.tensor(_expected_errors(a, a, config, centre), dtype=torch.float64))
    assert torch.allclose(e.source_target, torch.tensor(_expected_errors(a, b, config, centre), dtype=torch.float64))
    assert den.counter.calls == 2  # one batched call per level: 2 prompts x 2 latents x K draws
    result = check_edit(den, b, a, mask, config)
    gap = [s - t for s, t in zip(_expected_errors(b, a, config, centre), _expected_errors(b, b, config, centre))]
    assert result.score == pytest.approx(0.0, abs=1e-9) and result.direction == pytest.approx(sum(gap) / len(gap))
    assert result.direction > 0 and result.edit_took and result.evaluations == 4 * 3 * 2
    assert result.background_mse == pytest.approx(0.0)


def test_an_edit_that_did_not_happen_or_landed_elsewhere_is_flagged() -> None:
    den, a, b = _setup()
    undone = check_edit(den, a, a, None, CheckConfig(draws=2))  # the edited latent is the source's
    assert undone.direction < 0 and not undone.edit_took
    elsewhere = b.clone()
    elsewhere[..., 1:3, 1:3] += 3.0  # past the target: nearer it than the source, but not what it describes
    wrong = check_edit(den, elsewhere, a, None, CheckConfig(draws=2))
    assert wrong.direction > 0 and wrong.score < wrong.threshold and not wrong.edit_took


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
    plain = unsample.edit(tiny_model, inv, "a green cat", mask="none", check=False, output="result")
    judged = unsample.edit(tiny_model, inv, "a green cat", mask="none", escalate=False, output="result")
    assert plain.check is None and judged.check is not None  # on by default
    assert torch.equal(plain.latent, judged.latent)  # the check only reads the edit
    assert judged.network_evaluations == plain.network_evaluations + judged.check.evaluations
    assert judged.check.evaluations <= 0.3 * 256  # at most 30% of the default edit's 256
    src = tmp_path / "in.png"
    tiny_image.save(src)
    out = tmp_path / "e.png"
    r = CliRunner().invoke(app, ["edit", str(src), "--source-prompt", "a red cat", "--target-prompt", "a green cat",
                                 "--steps", "3", "--no-escalate", "-o", str(out), "--model",
                                 str(tiny_pipeline_dir), "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    c = side["check"]
    assert c["edit_took"] == (c["score"] > c["threshold"] and c["direction"] > 0) and side["edit"]["check"] is True
    assert ("check: the edit took (score" if c["edit_took"] else "warning: the edit did not take (score") in r.output
    assert side["ladder"]["attempts"][0]["rung"] == "as-asked" and len(side["ladder"]["attempts"]) == 1
    off = tmp_path / "off.png"
    r = CliRunner().invoke(app, ["edit", str(src), "--source-prompt", "a red cat", "--target-prompt", "a green cat",
                                 "--steps", "3", "--no-check", "-o", str(off), "--model",
                                 str(tiny_pipeline_dir), "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(off.with_suffix(".json").read_text())["check"] is None and "the edit" not in r.output


def test_the_bench_calibration_counts_silent_failures_and_false_alarms() -> None:
    from unsample_lab.bench.check_calibration import check_calibration

    rows = [{"check_score": s, "success": ok} for s, ok in [(0.3, True), (0.2, True), (-0.1, False), (0.05, False),
                                                            (-0.2, True), (None, True)]]
    c = check_calibration(rows, threshold=0.0)
    # scores of the 3 successes 0.3, 0.2, -0.2 against the 2 failures -0.1, 0.05: 4 of 6 pairs ordered right
    assert c["edits"] == 5 and c["auc"] == pytest.approx(4 / 6)
    assert c["silent_failures"] == pytest.approx(1 / 5) and c["false_alarms"] == pytest.approx(1 / 5)
