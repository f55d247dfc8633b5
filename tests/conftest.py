"""Shared fixtures: tiny SD-architecture pipelines saved to disk and loaded like a user's checkpoint."""

from __future__ import annotations

import logging
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

logging.getLogger("transformers").setLevel(logging.ERROR)

SD_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def _build(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: object) -> Path:
    from unsample_lab.testing.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp(name) / "pipe", **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "tiny-eps")


@pytest.fixture(scope="session")
def tiny_v_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "tiny-v", prediction_type="v_prediction", timestep_spacing="trailing", seed=1)


@pytest.fixture(scope="session")
def tiny_sd3_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unsample_lab.testing.tiny_pipeline import build_tiny_sd3_pipeline

    return build_tiny_sd3_pipeline(tmp_path_factory.mktemp("tiny-sd3") / "pipe")


@pytest.fixture(scope="session")
def tiny_sd3_no_t5_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SD3 without T5: diffusers loads it only when given ``text_encoder_3=None, tokenizer_3=None``."""
    from unsample_lab.testing.tiny_pipeline import build_tiny_sd3_pipeline

    return build_tiny_sd3_pipeline(tmp_path_factory.mktemp("tiny-sd3-no-t5") / "pipe", with_t5=False, seed=1)


@pytest.fixture(scope="session")
def tiny_flux_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unsample_lab.testing.tiny_pipeline import build_tiny_flux_pipeline

    return build_tiny_flux_pipeline(tmp_path_factory.mktemp("tiny-flux") / "pipe")


@pytest.fixture(scope="session")
def tiny_sdxl_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unsample_lab.testing.tiny_pipeline import build_tiny_sdxl_pipeline

    return build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("tiny-sdxl") / "pipe")


@pytest.fixture(scope="session")
def tiny_ddpm_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unconditional pixel-space DDPM (3x16x16), saved by ``DDPMPipeline.save_pretrained``."""
    from unsample_lab.testing.tiny_pipeline import build_tiny_ddpm_pipeline

    return build_tiny_ddpm_pipeline(tmp_path_factory.mktemp("tiny-ddpm") / "pipe")


@pytest.fixture(scope="session")
def tiny_ddpm_flat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of DDPM in google/ddpm-cifar10-32's flat layout (UNet and scheduler at the root)."""
    from unsample_lab.testing.tiny_pipeline import build_tiny_ddpm_pipeline

    return build_tiny_ddpm_pipeline(tmp_path_factory.mktemp("tiny-ddpm-flat") / "pipe", layout="flat", seed=1)


@pytest.fixture(scope="session")
def tiny_ddpm_class_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class-conditional (4 classes) DDPM UNet with learned variance (6 output channels) and a DDIM scheduler.

    As DiT's checkpoints: the scheduler (DDIM) says nothing about the variance channels, so a
    sampler must split them off by channel count; ``DDIMPipeline`` cannot run it (no class labels).
    """
    from unsample_lab.testing.tiny_pipeline import build_tiny_ddpm_pipeline

    return build_tiny_ddpm_pipeline(
        tmp_path_factory.mktemp("tiny-ddpm-class") / "pipe",
        scheduler="ddim",
        num_class_embeds=4,
        learned_variance=True,
        seed=2,
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_pipeline_dir: Path):
    import unsample

    return unsample.load(str(tiny_pipeline_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_image():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded default model, loaded once per run (the UI tests share it); skips if not installed."""
    import unsample
    from unsample.embedded import embedded_model_path

    if not (embedded_model_path() / "model_index.json").is_file():
        pytest.skip("the embedded model is not installed")
    return unsample.load(None, device="cpu")


@pytest.fixture(scope="session")
def declared_scene_entry_points() -> list[EntryPoint]:
    """pyproject.toml's ``unsample.scenes`` entry points, as the installed metadata lists them once the
    package is (re)installed: the UI tests point the scene lookup at these, so they test the declaration."""
    from unsample.ui.scenes import SCENES_GROUP

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    return [EntryPoint(name, value, SCENES_GROUP) for name, value in project["entry-points"][SCENES_GROUP].items()]
