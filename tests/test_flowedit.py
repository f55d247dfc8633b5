"""FlowEdit against exact answers.

For point-mass data (the closed-form Gaussian models at std 0) the edit path has a closed form on
every family: in flow coordinates r = sigma / (alpha + sigma), each step shrinks the gap between
the edit and the target by r_{i+1} / r_i, so after the run from position k

    Z^FE = X + (mu_tar - mu_src) (1 - r_N / r_k),

whatever the noise draws, the image X or the guidance (which mixes the means linearly). On a flow
r_N = 0 and the edit lands on the target exactly.
"""

from __future__ import annotations

import pytest
import torch

import unsample
from unsample.core.analytic import GaussianDenoiserModel, GaussianFlowModel, MeanConditioning
from unsample.core.denoiser import Denoiser
from unsample.core.flow_schedule import FlowSchedule
from unsample.core.schedule import NoiseSchedule
from unsample.editing.flowedit import flowedit_latent
from unsample_lab.bench.closed_form import SCHEDULER

SHAPE = (2, 4, 6, 6)
MU_SRC, MU_TAR, MU_NULL = 0.3, -0.4, 0.05


def _means(value: float) -> MeanConditioning:
    return MeanConditioning(torch.full((SHAPE[0],), value, dtype=torch.float64))


def _pair(family: str, std: float, guidance: tuple[float, float] = (1.0, 1.0)) -> tuple[Denoiser, Denoiser, object]:
    if family == "flow":
        schedule = FlowSchedule(shift=3.0)
        model = GaussianFlowModel(schedule, std)
    else:
        schedule = NoiseSchedule.from_config(SCHEDULER)
        model = GaussianDenoiserModel(schedule, std)
    null = _means(MU_NULL) if guidance != (1.0, 1.0) else None
    src = Denoiser(model, schedule, _means(MU_SRC), null, guidance=guidance[0], dtype=torch.float64)
    tar = Denoiser(model, schedule, _means(MU_TAR), null, guidance=guidance[1], dtype=torch.float64)
    return src, tar, schedule


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("family", ["flow", "ddpm"])
@pytest.mark.parametrize("guidance", [(1.0, 1.0), (3.5, 13.5)])
@pytest.mark.parametrize("start_step,draws", [(0, 1), (7, 3)])
def test_point_mass_edits_follow_the_closed_form(family: str, guidance: tuple[float, float], start_step: int,
                                                 draws: int) -> None:
    src, tar, schedule = _pair(family, 0.0, guidance)
    grid = schedule.grid(20)
    x = _image()
    out = flowedit_latent(src, tar, grid, x, start_step=start_step, draws=draws,
                          generator=torch.Generator().manual_seed(5))
    r = grid.sigma / (grid.alpha + grid.sigma)
    guided_src, guided_tar = (MU_NULL + g * (m - MU_NULL) for g, m in zip(guidance, (MU_SRC, MU_TAR)))
    gap = guided_tar - guided_src
    expected = x + gap * (1 - r[-1] / r[start_step])
    assert torch.allclose(out, expected, atol=1e-10, rtol=0), (out - expected).abs().max()
    if family == "flow":  # r_N = 0: the edit is the source image moved by exactly the means' gap
        assert float(r[-1]) == 0.0


def test_on_a_flow_it_is_the_papers_loop_line_for_line() -> None:
    """Gaussian data (std 0.5, nonlinear in nothing but the schedule): the family-general form
    equals the paper's Algorithm 1 written out with the velocity, same noise draws."""
    src, tar, schedule = _pair("flow", 0.5, (2.0, 6.0))
    grid = schedule.grid(12)
    x = _image(1)
    out = flowedit_latent(src, tar, grid, x, start_step=3, draws=2, generator=torch.Generator().manual_seed(9))

    g = torch.Generator().manual_seed(9)
    z_fe = x.clone()
    for i in range(3, len(grid)):
        t, t_next = float(grid.sigma[i]), float(grid.sigma[i + 1])
        v_delta = torch.zeros_like(x)
        for _ in range(2):
            n = torch.randn(x.shape, generator=g, dtype=torch.float64)
            z_src = (1 - t) * x + t * n
            z_tar = z_fe + z_src - x
            v_delta += tar.output(z_tar, grid.timesteps[i]) - src.output(z_src, grid.timesteps[i])
        z_fe = z_fe + (t_next - t) * v_delta / 2
    assert torch.allclose(out, z_fe, atol=1e-12, rtol=0), (out - z_fe).abs().max()


@pytest.mark.parametrize("family", ["tiny_pipeline_dir", "tiny_v_pipeline_dir", "tiny_sdxl_pipeline_dir",
                                    "tiny_sd3_pipeline_dir", "tiny_flux_pipeline_dir", "tiny_ddpm_pipeline_dir"])
def test_the_same_prompt_returns_the_image_latent_exactly(family: str, request: pytest.FixtureRequest) -> None:
    """Every family's backend: the two branches cancel, and the cost is counted. Not bit for bit:
    CPU convolutions can round differently for equal values in two buffers (oneDNN picks kernels
    by alignment; measured 3e-6 on the tiny DDPM UNet), so to float32 rounding."""
    from PIL import Image

    m = unsample.load(str(request.getfixturevalue(family)), device="cpu")
    img = Image.new("RGB", (m.resolution, m.resolution), (200, 40, 90))
    prompt = "" if family == "tiny_ddpm_pipeline_dir" else "a red cat"  # the unconditional DDPM takes no prompt
    guidance = 1.0 if family == "tiny_ddpm_pipeline_dir" else 4.0
    out = unsample.flowedit(m, img, prompt, prompt, steps=6, start_step=2, source_guidance=guidance,
                            target_guidance=guidance, output="result")
    image_latent = m.encode_image(unsample.api.prepare_image(m, img))
    assert torch.allclose(out.latent, image_latent, atol=1e-5, rtol=0), (out.latent - image_latent).abs().max()
    # two prompts x 4 steps (x CFG's two halves)
    assert out.nfe == 2 * 4 * (2 if guidance != 1.0 else 1) and out.start_step == 2


def test_bad_settings_are_refused_in_one_line(tiny_sd3_pipeline_dir) -> None:
    from PIL import Image

    m = unsample.load(str(tiny_sd3_pipeline_dir), device="cpu")
    img = Image.new("RGB", (m.resolution, m.resolution))
    with pytest.raises(ValueError, match=r"start_step=6 is outside 0..5 for 6 steps"):
        unsample.flowedit(m, img, "a cat", "a dog", steps=6, start_step=6)
    with pytest.raises(ValueError, match=r"draws=0 must be a whole number >= 1"):
        unsample.flowedit(m, img, "a cat", "a dog", steps=6, start_step=2, draws=0)
    with pytest.raises(ValueError, match=r"target_guidance=-1"):
        unsample.flowedit(m, img, "a cat", "a dog", target_guidance=-1)


@pytest.mark.filterwarnings("ignore:prompt")  # the tiny tokenizer knows few of the shapes world's words
def test_the_edit_bench_runs_flowedit_as_a_row(tiny_sd3_pipeline_dir) -> None:
    from unsample_lab.bench import edit as edit_bench

    m = unsample.load(str(tiny_sd3_pipeline_dir), device="cpu")
    bench = edit_bench.EditBench(methods=("flowedit",), controls=("swap",), masks=("none",), pairs=2, steps=6,
                                 inversion_guidance=1.0, edit_guidance=3.0, kinds=("color",))
    rows = edit_bench.run(m, bench, progress=False)["per_pair"]
    assert [r["method"] for r in rows] == ["flowedit", "flowedit"]
    # 6 steps, the paper's share skipped (round(6 * 17 / 50) = 2): 4 steps x (source 1 + target 2 CFG halves)
    assert all(r["nfe"] == 4 * (1 + 2) and r["mask"] == "none" for r in rows)


def test_the_cli_writes_the_edit_and_its_record_and_refuses_bad_input(tiny_sd3_pipeline_dir, tmp_path) -> None:
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from unsample.cli import app

    src = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(src)
    out = tmp_path / "edit.png"
    common = ["--model", str(tiny_sd3_pipeline_dir), "--device", "cpu", "--quiet"]
    run = CliRunner().invoke
    r = run(app, ["flowedit", str(src), "-o", str(out), "--source-prompt", "a red cat", "--target-prompt", "a green dog",
                  "--steps", "5", "--start-step", "2", "--source-guidance", "1", "--target-guidance", "3", *common])
    assert r.exit_code == 0, r.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"] == "flowedit" and record["network_evaluations"] == 3 * (1 + 2)
    assert record["source_prompt"] == "a red cat" and record["prompt"] == "a green dog"
    bad = tmp_path / "bad.png"
    r = run(app, ["flowedit", str(src), "-o", str(bad), "--source-prompt", "a red cat", "--target-prompt", "a dog",
                  "--steps", "5", "--start-step", "5", *common])
    assert r.exit_code == 2 and "--start-step 5 leaves no step of the 5" in r.output and not bad.exists()
    text = tmp_path / "not-an-image.png"
    text.write_text("hello")
    r = run(app, ["flowedit", str(text), "-o", str(bad), "--source-prompt", "a", "--target-prompt", "b", *common])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and not bad.exists()
