"""Checkpoints as users have them: hub-layout SD 1.5 folders (safety checker, feature extractor,
PNDM scheduler), the schedulers real checkpoints ship, SD 2.1's 768 px v-prediction layout,
fp16-only weight variants, and single-file (LDM / A1111) ``.safetensors`` checkpoints.

Each folder is a tiny random pipeline with the real checkpoint's config *keys* (the scheduler
configs verbatim), built offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import unsample

# scheduler/scheduler_config.json of runwayml/stable-diffusion-v1-5 (verbatim but for _diffusers_version).
SD15_PNDM = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
# stabilityai/stable-diffusion-xl-base-1.0
SDXL_EULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}
# stabilityai/stable-diffusion-2-1 (768 px, v-prediction): no timestep_spacing key, so "leading".
SD21_DDIM = {
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def _saved_config(cls_name: str, **kwargs: Any) -> dict[str, Any]:
    """The config a diffusers scheduler class saves (every key it has), as a checkpoint ships it."""
    import diffusers

    scheduler = getattr(diffusers, cls_name)(**kwargs)
    return dict(json.loads(scheduler.to_json_string()))


def _scheduler_configs() -> dict[str, dict[str, Any]]:
    return {
        "sd15-pndm": SD15_PNDM,
        "sdxl-euler": SDXL_EULER,
        "sdxl-euler-karras": {**SDXL_EULER, "use_karras_sigmas": True},
        "sd21-ddim-v": SD21_DDIM,
        "dpm-leading": _saved_config("DPMSolverMultistepScheduler", **SD_BETAS, steps_offset=1,
                                     timestep_spacing="leading", use_karras_sigmas=True),
        "dpm-default": _saved_config("DPMSolverMultistepScheduler", **SD_BETAS),  # linspace, offset 0
        "lms": _saved_config("LMSDiscreteScheduler", **SD_BETAS, steps_offset=1, timestep_spacing="leading"),
        "euler-trailing": {**SDXL_EULER, "timestep_spacing": "trailing", "steps_offset": 0},
        # an old Euler config without timestep_spacing / steps_offset (EulerDiscreteScheduler would default to linspace)
        "euler-old": {k: v for k, v in SDXL_EULER.items() if k not in ("timestep_spacing", "steps_offset")},
    }


# --- the schedulers real checkpoints ship -----------------------------------------------------------


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("name", list(_scheduler_configs()))
def test_shipped_scheduler_gives_diffusers_ddim_grid(name: str, steps: int) -> None:
    import diffusers
    from diffusers import DDIMScheduler

    from unsample.core.schedule import NoiseSchedule

    config = _scheduler_configs()[name]
    own = getattr(diffusers, config["_class_name"]).from_config(config)
    # the JSON as shipped, and the loaded scheduler's config as the backends read it
    schedule = NoiseSchedule.from_config(config)
    assert NoiseSchedule.from_config(dict(own.config)).timesteps(steps).tolist() == schedule.timesteps(steps).tolist()
    ddim = DDIMScheduler.from_config(config)
    ddim.set_timesteps(steps)
    grid = schedule.grid(steps)
    assert torch.equal(grid.timesteps.to(torch.int64), ddim.timesteps.to(torch.int64))
    # the training schedule, bit for bit: DDIM's and the shipped scheduler's own
    assert torch.equal(schedule.alphas_cumprod, ddim.alphas_cumprod.to(torch.float64))
    assert torch.equal(schedule.alphas_cumprod, own.alphas_cumprod.to(torch.float64))
    assert torch.equal(grid.alphas[:-1], ddim.alphas_cumprod[ddim.timesteps].to(torch.float64))
    if "set_alpha_to_one" in config:
        assert grid.alphas[-1].item() == float(ddim.final_alpha_cumprod)
    else:
        # DDIMScheduler defaults set_alpha_to_one to True; a config without the key keeps a_0
        assert grid.alphas[-1].item() == float(ddim.alphas_cumprod[0])


def test_karras_sigmas_do_not_change_the_training_schedule() -> None:
    from unsample.core.schedule import NoiseSchedule

    plain = NoiseSchedule.from_config(SDXL_EULER)
    karras = NoiseSchedule.from_config({**SDXL_EULER, "use_karras_sigmas": True})
    assert torch.equal(plain.alphas_cumprod, karras.alphas_cumprod)
    assert torch.equal(plain.grid(50).timesteps, karras.grid(50).timesteps)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**SD15_PNDM, "rescale_betas_zero_snr": True},
         "rescale_betas_zero_snr schedules (zero terminal SNR) are not supported yet; use a checkpoint trained on the plain schedule"),
        ({**SDXL_EULER, "timestep_type": "continuous"},
         "timestep_type='continuous' (continuous time labels) is not supported; unsample needs discrete timesteps"),
        ({"_class_name": "EDMEulerScheduler", "sigma_min": 0.002, "sigma_max": 80.0},
         "scheduler EDMEulerScheduler (EDM sigmas or flow matching) has no DDPM beta schedule; unsample reads "
         "DDPM-family configs (DDIM, PNDM, Euler, LMS, DPM-Solver) here and flow models via their own backend"),
        ({**_saved_config("DPMSolverMultistepScheduler"), "use_flow_sigmas": True, "prediction_type": "epsilon"},
         "scheduler DPMSolverMultistepScheduler (EDM sigmas or flow matching) has no DDPM beta schedule; unsample "
         "reads DDPM-family configs (DDIM, PNDM, Euler, LMS, DPM-Solver) here and flow models via their own backend"),
    ],
)
def test_schedule_changing_keys_are_refused(config: dict[str, Any], message: str) -> None:
    from unsample.core.schedule import NoiseSchedule

    with pytest.raises(ValueError) as err:
        NoiseSchedule.from_config(config)
    assert str(err.value) == message


# --- folder layouts -----------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _set_scheduler(folder: Path, config: dict[str, Any]) -> None:
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    _edit_json(folder / "model_index.json", scheduler=["diffusers", config["_class_name"]])


def _list_safety_parts(folder: Path) -> None:
    _edit_json(folder / "model_index.json", safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
               feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=True)


def _write_safety_parts(folder: Path) -> None:
    """A tiny StableDiffusionSafetyChecker (CLIP vision at toy width) and a CLIPImageProcessor."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPVisionConfig

    config = CLIPConfig(
        text_config=CLIPTextConfig(hidden_size=16, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2).to_dict(),
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=32, patch_size=16).to_dict(),
        projection_dim=8,
    )
    StableDiffusionSafetyChecker(config).save_pretrained(folder / "safety_checker")
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32}).save_pretrained(
        folder / "feature_extractor")


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the hub fails the test."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.utils.hub_utils as hub_utils
    import huggingface_hub

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"tried to reach the hub: {args} {kwargs}")

    for module in (pipeline_utils, hub_utils, huggingface_hub):
        for name in ("snapshot_download", "hf_hub_download", "model_info"):
            monkeypatch.setattr(module, name, refuse, raising=False)


def test_hub_layout_sd15_folder_with_safety_checker_loads_offline(tiny_pipeline_dir: Path, tmp_path: Path,
                                                                  no_hub: None) -> None:
    folder = _copy(tiny_pipeline_dir, tmp_path / "sd15")
    _write_safety_parts(folder)
    _list_safety_parts(folder)
    _set_scheduler(folder, SD15_PNDM)
    model = unsample.load(str(folder), device="cpu")
    assert model.pipe.safety_checker is None and model.pipe.feature_extractor is None
    assert type(model.pipe.scheduler).__name__ == "PNDMScheduler"
    assert (model.schedule.timestep_spacing, model.schedule.steps_offset) == ("leading", 1)
    assert model.schedule.grid(50).timesteps[0].item() == 981


def test_folder_listing_safety_parts_it_lacks_loads(tiny_pipeline_dir: Path, tmp_path: Path, no_hub: None) -> None:
    folder = _copy(tiny_pipeline_dir, tmp_path / "listed")
    _list_safety_parts(folder)
    model = unsample.load(str(folder), device="cpu")
    assert model.pipe.safety_checker is None


def test_sd21_768_v_prediction_folder(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """SD 2.1: UNet sample_size 96 x VAE factor 8 = 768 px; the tiny VAE's factor is 2, so 384."""
    from diffusers import DDIMScheduler

    folder = _copy(tiny_pipeline_dir, tmp_path / "sd21")
    _edit_json(folder / "unet" / "config.json", sample_size=384)
    _edit_json(folder / "vae" / "config.json", sample_size=768)
    _set_scheduler(folder, SD21_DDIM)
    model = unsample.load(str(folder), device="cpu")
    assert model.resolution == 768
    assert model.schedule.prediction_type == "v_prediction"
    assert (model.schedule.timestep_spacing, model.schedule.steps_offset) == ("leading", 1)
    ddim = DDIMScheduler.from_config(SD21_DDIM)
    ddim.set_timesteps(50)
    assert torch.equal(model.schedule.grid(50).timesteps.to(torch.int64), ddim.timesteps)
    latent = torch.zeros(1, 4, 8, 8)
    out = model.model_fn(latent, torch.tensor([981]), model.encode_prompt("a cat"))
    assert out.shape == latent.shape  # the UNet runs below its nominal size (it is convolutional)


# --- weight variants ------------------------------------------------------------------------------------


def _resave_fp16_only(folder: Path, out: Path, pipeline_cls: Any, **kwargs: Any) -> Path:
    pipe = pipeline_cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    pipe.to(torch.float16).save_pretrained(out, variant="fp16")
    assert not list(out.rglob("*model.safetensors")) and list(out.rglob("*.fp16.safetensors"))
    return out


def test_fp16_only_sd_folder_loads_and_picks_the_variant(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    folder = _resave_fp16_only(tiny_pipeline_dir, tmp_path / "fp16", StableDiffusionPipeline,
                               safety_checker=None, requires_safety_checker=False)
    model = unsample.load(str(folder), device="cpu", dtype="float32")
    plain = unsample.load(str(tiny_pipeline_dir), device="cpu", dtype="float32")
    assert model.dtype == torch.float32
    weight = plain.pipe.unet.conv_in.weight
    assert torch.equal(model.pipe.unet.conv_in.weight, weight.half().float())
    explicit = unsample.load(str(folder), device="cpu", dtype="float32", variant="fp16")
    assert torch.equal(explicit.pipe.unet.conv_in.weight, model.pipe.unet.conv_in.weight)


def test_fp16_only_sdxl_and_pixel_folders_load(tiny_sdxl_pipeline_dir: Path, tiny_ddpm_pipeline_dir: Path,
                                               tmp_path: Path) -> None:
    from diffusers import DDPMPipeline, StableDiffusionXLPipeline

    sdxl = _resave_fp16_only(tiny_sdxl_pipeline_dir, tmp_path / "sdxl", StableDiffusionXLPipeline)
    assert unsample.load(str(sdxl), device="cpu", dtype="float32").resolution == 32
    pixel = _resave_fp16_only(tiny_ddpm_pipeline_dir, tmp_path / "ddpm", DDPMPipeline)
    assert unsample.load(str(pixel), device="cpu", dtype="float32").resolution == 16


def test_missing_variant_is_one_line(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        unsample.load(str(tiny_pipeline_dir), device="cpu", variant="fp16")
    assert str(err.value) == (
        f"{str(tiny_pipeline_dir)!r} has no weight files of variant 'fp16' (its variants: none); "
        "pass variant=None for the plain weights"
    )
    folder = _copy(tiny_pipeline_dir, tmp_path / "ema")
    for file in folder.rglob("*.safetensors"):
        file.rename(file.with_name(file.name.replace(".safetensors", ".ema.safetensors")))
    with pytest.raises(ValueError) as err:
        unsample.load(str(folder), device="cpu")
    assert str(err.value) == (
        f"{str(folder)!r} has no plain weight files in text_encoder, unet, vae (only variants 'ema'); "
        "pass variant= one of 'ema'"
    )
    assert unsample.load(str(folder), device="cpu", variant="ema").resolution == 16


# --- single-file checkpoints ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ldm_file(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline_dir: Path) -> Path:
    from unsample_lab.testing.ldm_checkpoint import save_ldm_checkpoint

    return save_ldm_checkpoint(tiny_pipeline_dir, tmp_path_factory.mktemp("ldm") / "model.safetensors")


def test_single_file_checkpoint_loads_with_config(ldm_file: Path, tiny_pipeline_dir: Path, tiny_model: Any,
                                                  no_hub: None) -> None:
    model = unsample.load(str(ldm_file), config=str(tiny_pipeline_dir), device="cpu")
    for part in ("unet", "vae", "text_encoder"):
        got, want = getattr(model.pipe, part).state_dict(), getattr(tiny_model.pipe, part).state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), part
    assert model.fingerprint == tiny_model.fingerprint
    assert model.pipe.safety_checker is None


def test_the_cli_loads_a_single_file_with_model_config(ldm_file: Path, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from unsample.cli import app

    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    run = CliRunner().invoke
    base = ["invert", str(tmp_path / "a.png"), "--steps", "2", "--device", "cpu", "--quiet", "--prompt", "a red circle"]
    ok = run(app, [*base, "-o", str(tmp_path / "a.safetensors"), "--model", str(ldm_file), "--model-config",
                   str(tiny_pipeline_dir)])
    assert ok.exit_code == 0, ok.output
    bare = run(app, [*base, "-o", str(tmp_path / "b.safetensors"), "--model", str(ldm_file)])
    assert bare.exit_code == 2 and "--model-config FOLDER in the CLI" in bare.output
    folder = run(app, [*base, "-o", str(tmp_path / "c.safetensors"), "--model", str(tiny_pipeline_dir),
                       "--model-config", str(tiny_pipeline_dir)])
    assert folder.exit_code == 2 and "is for a single-file checkpoint" in folder.output
    alone = run(app, [*base, "-o", str(tmp_path / "d.safetensors"), "--model-config", str(tiny_pipeline_dir)])
    assert alone.exit_code == 2 and "--model-config is for a single-file --model" in alone.output
    assert not any((tmp_path / f"{k}.safetensors").exists() for k in "bcd")


def test_single_file_without_config_is_one_line(ldm_file: Path, tmp_path: Path, tiny_pipeline_dir: Path) -> None:
    with pytest.raises(ValueError) as err:
        unsample.load(str(ldm_file), device="cpu")
    assert str(err.value) == (
        f"a single-file checkpoint needs config=FOLDER (--model-config FOLDER in the CLI: a local diffusers folder "
        f"of the same architecture, e.g. a downloaded SD 1.5 or SDXL folder) to load {str(ldm_file)!r}; the hub is "
        "not reached to guess it"
    )
    with pytest.raises(ValueError) as err:
        unsample.load(str(ldm_file), config="runwayml/stable-diffusion-v1-5", device="cpu")
    assert str(err.value) == (
        "config (--model-config) 'runwayml/stable-diffusion-v1-5' is not a local diffusers folder with "
        "model_index.json; give the folder of a pipeline of the same architecture (the hub is not reached to fetch "
        "configs)"
    )
    with pytest.raises(ValueError, match=r"^single-file checkpoint .* does not exist; give the path of a \.safetensors file$"):
        unsample.load(str(tmp_path / "absent.safetensors"), config=str(tiny_pipeline_dir), device="cpu")
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"^'.*model\.ckpt' is a pickled checkpoint, which unsample does not unpickle; "):
        unsample.load(str(pickled), config=str(tiny_pipeline_dir), device="cpu")
    with pytest.raises(ValueError, match=r"^config=.* is for a single-file checkpoint; "):
        unsample.load(str(tiny_pipeline_dir), config=str(tiny_pipeline_dir), device="cpu")
