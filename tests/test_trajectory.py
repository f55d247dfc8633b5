"""The trajectory view: at the last sampling step the predicted x0 is the final latent."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

import unsample
from unsample import trajectory as tv
from unsample.cli import app


def test_last_step_prediction_equals_final_latent(tmp_path_factory, tiny_image) -> None:
    from unsample_lab.testing.tiny_pipeline import build_tiny_pipeline

    # with set_alpha_to_one the last DDIM step lands exactly on its x0 prediction
    folder = build_tiny_pipeline(tmp_path_factory.mktemp("one") / "p", set_alpha_to_one=True)
    model = unsample.load(str(folder), device="cpu")
    inv = unsample.invert(model, tiny_image, "a cat", steps=8, guidance=2.0, precision="float64")
    den = model.denoiser("a cat", guidance=2.0, dtype=torch.float64)
    grid = model.schedule.grid(8)
    final = unsample.reconstruct(model, inv, output="latent")
    collected = []
    from unsample.methods import ddim

    ddim.sample(den, grid, inv.trajectory[0], callback=lambda i, x: collected.append(x))
    states = torch.stack([inv.trajectory[0].double(), *collected])
    (panel,) = tv.panels(den, grid, states, [7])
    assert torch.allclose(panel.x0_hat, final, atol=1e-10)
    assert torch.equal(model.decode_latent(panel.x0_hat.float()), model.decode_latent(final.float()))


def test_trajectory_command_writes_grid(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    model = unsample.load(str(tiny_pipeline_dir), device="cpu")
    inv = unsample.invert(model, tiny_image, "a cat", steps=5, method="euler")
    path = inv.save(tmp_path / "inv.safetensors")
    runner = CliRunner()
    for extra in ([], ["--replay", "--steps", "0,4"]):
        out = tmp_path / f"grid{len(extra)}.png"
        r = runner.invoke(app, ["trajectory", str(path), "-o", str(out), "--model", str(tiny_pipeline_dir),
                                "--device", "cpu", *extra], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert out.is_file() and out.with_suffix(".json").is_file()
