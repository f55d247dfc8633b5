"""A float16 model that overflows stops at the step where it happens, with the step and the tensor
named, instead of writing a black image (exit 2 in the CLI, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from unsample.cli import app


@pytest.fixture(scope="module")
def overflowing_pipeline(tiny_pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline with its UNet's last layer scaled so that its output passes float16's
    largest value (65504) but stays far inside float32's."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_pipeline_dir), local_files_only=True)
    with torch.no_grad():
        pipe.unet.conv_out.weight.mul_(1e6)
        pipe.unet.conv_out.bias.mul_(1e6)
    folder = tmp_path_factory.mktemp("overflow") / "pipe"
    pipe.save_pretrained(str(folder))
    return folder


def test_float16_overflow_is_reported_at_its_step_and_nothing_is_written(
    overflowing_pipeline: Path, tiny_image, tmp_path: Path
) -> None:
    image = tmp_path / "a.png"
    tiny_image.save(image)
    out = tmp_path / "a.safetensors"
    args = ["invert", str(image), "--prompt", "a red cat", "--steps", "3", "--model", str(overflowing_pipeline),
            "--device", "cpu", "--quiet", "-o", str(out)]
    r = CliRunner().invoke(app, args + ["--dtype", "float16"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output
    assert "inverting with ddim, step 1 of 3" in lines[0]
    assert "the model's output holds" in lines[0] and "torch.float16" in lines[0] and "--dtype float32" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    # the same weights in float32 stay finite: it is the half-precision range that overflowed
    ok = CliRunner().invoke(app, args + ["--dtype", "float32"])
    assert ok.exit_code == 0, ok.output
    assert out.is_file()


def test_a_replay_names_its_sampling_step(overflowing_pipeline: Path, tiny_pipeline_dir: Path, tiny_image) -> None:
    import unsample
    from unsample.core.denoiser import NonFiniteError

    healthy = unsample.load(str(tiny_pipeline_dir), device="cpu", dtype="float16")
    inv = unsample.invert(healthy, tiny_image, "a red cat", steps=4)
    broken = unsample.load(str(overflowing_pipeline), device="cpu", dtype="float16")
    inv.model_fingerprint = broken.fingerprint  # the same architecture: replay it on the overflowing weights
    with pytest.raises(NonFiniteError, match=r"sampling with ddim, step 1 of 4: the model's output holds"):
        unsample.reconstruct(broken, inv)
