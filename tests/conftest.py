"""Shared fixtures: tiny SD-architecture pipelines saved to disk and loaded like a user's checkpoint."""

from __future__ import annotations

import functools
import json
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


def _load_embedded(name: str):
    """An embedded model by name, loaded as a user loads it; skips when its weights are not installed."""
    import unsample
    from unsample.embedded import embedded_model_path

    if not (embedded_model_path(name) / "model_index.json").is_file():
        pytest.skip(f"the {name} model is not installed")
    model = unsample.load(name, device="cpu")
    _AS_LOADED[id(model)] = _model_state(model)
    return model


# The real embedded models, loaded once per run and shared by every test that asks for one (tests of
# the `model` tier). A test must leave a shared model as it found it: `_shared_models_left_as_found`
# checks that after each test.


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded default model (``unsample.load(None)`` loads the same)."""
    return _load_embedded("embedded")


@pytest.fixture(scope="session")
def embedded_flow_model():
    """The embedded rectified-flow model (SD3 architecture)."""
    return _load_embedded("embedded-flow")


@pytest.fixture(scope="session")
def embedded_pixel_model():
    """The embedded pixel-space model with its noisy classifier."""
    return _load_embedded("embedded-pixel")


SHARED_MODELS = ("embedded_model", "embedded_flow_model", "embedded_pixel_model")
_AS_LOADED: dict[int, dict[str, object]] = {}

_PLAIN = (str, int, float, bool, type(None))


def _model_state(model: object) -> dict[str, object]:
    """What a test could change on a shared model and leak into the next: its attributes, each
    network's weights (a sum and an absolute sum per tensor), train/eval mode, requires_grad and
    attention processors, and the scheduler's config. Caches (``_prompt_cache``, cached properties such
    as ``fingerprint``) are left out."""
    import torch

    state: dict[str, object] = {"class": type(model).__name__}
    pipe = getattr(model, "pipe", None)
    parts = dict(pipe.components if hasattr(pipe, "components") else vars(pipe) if pipe is not None else {})
    for key, value in vars(model).items():
        if key in ("pipe", "_prompt_cache") or isinstance(getattr(type(model), key, None), functools.cached_property):
            continue  # the pipeline's parts are compared below; caches are functions of the weights
        if isinstance(value, torch.nn.Module):
            parts[f"model.{key}"] = value
        elif isinstance(value, (*_PLAIN, torch.device, torch.dtype)):
            state[key] = str(value)
        else:
            state[key] = type(value).__name__
    for key, part in parts.items():
        if isinstance(part, torch.nn.Module):
            with torch.no_grad():
                weights = [(n, p.dtype, p.device, tuple(p.shape), p.requires_grad, float(p.double().sum()),
                            float(p.double().abs().sum())) for n, p in part.named_parameters()]
                buffers = [(n, float(b.double().sum())) for n, b in part.named_buffers() if b.is_floating_point()]
            state[key] = (weights, buffers, [m.training for m in part.modules()])
            if hasattr(part, "attn_processors"):
                state[f"{key}.attn_processors"] = sorted((k, type(v).__name__) for k, v in part.attn_processors.items())
        elif hasattr(part, "config"):
            state[key] = json.dumps(dict(part.config), sort_keys=True, default=str)
        elif isinstance(part, _PLAIN):
            state[key] = part
        else:
            state[key] = type(part).__name__
    return state


@pytest.fixture(autouse=True)
def _shared_models_left_as_found(request: pytest.FixtureRequest):
    """Fails the test after which a shared embedded model differs from the model as loaded (a renamed
    model, an attention processor left installed, weights or modes changed), so that no change made
    by a test, or by a module fixture it uses, leaks into later tests."""
    used = [name for name in SHARED_MODELS if name in request.fixturenames]
    yield
    for name in used:
        model = request.getfixturevalue(name)
        loaded, now = _AS_LOADED[id(model)], _model_state(model)
        changed = sorted(k for k in set(loaded) | set(now) if loaded.get(k) != now.get(k))
        assert not changed, f"{request.node.nodeid} left the shared {name} changed: {changed}"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for a shared embedded model is of the `model` tier even when its module
    forgot the mark, so `make test-fast` never loads one."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SHARED_MODELS) and not item.get_closest_marker("model"):
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def declared_scene_entry_points() -> list[EntryPoint]:
    """pyproject.toml's ``unsample.scenes`` entry points, as the installed metadata lists them once the
    package is (re)installed: the UI tests point the scene lookup at these, so they test the declaration."""
    from unsample.ui.scenes import SCENES_GROUP

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    return [EntryPoint(name, value, SCENES_GROUP) for name, value in project["entry-points"][SCENES_GROUP].items()]
