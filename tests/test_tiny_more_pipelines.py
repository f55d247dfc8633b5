"""The tiny SDXL and pixel-space DDPM pipelines: saved like hub checkpoints, loadable offline, runnable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SDXL_PIXELS = 32  # unet sample_size 8 x vae_scale_factor 4
DDPM_PIXELS = 16
PROMPT = "a red circle"


def _load(cls_name: str, folder: Path, **kwargs: object):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(folder, local_files_only=True, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sdxl_pipe(tiny_sdxl_pipeline_dir: Path):
    return _load("StableDiffusionXLPipeline", tiny_sdxl_pipeline_dir)


# --- SDXL -------------------------------------------------------------------------------------


def test_sdxl_configs_are_sdxl_like(sdxl_pipe) -> None:
    unet, te2 = sdxl_pipe.unet, sdxl_pipe.text_encoder_2
    assert type(sdxl_pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    sched = sdxl_pipe.scheduler.config
    assert (sched.beta_schedule, sched.beta_start, sched.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert (sched.timestep_spacing, sched.steps_offset, sched.prediction_type) == ("leading", 1, "epsilon")
    assert sdxl_pipe.vae.config.force_upcast is True
    assert sdxl_pipe.config.force_zeros_for_empty_prompt is True
    assert unet.config.addition_embed_type == "text_time"
    assert unet.config.cross_attention_dim == sdxl_pipe.text_encoder.config.hidden_size + te2.config.hidden_size
    assert unet.config.projection_class_embeddings_input_dim == (
        te2.config.projection_dim + 6 * unet.config.addition_time_embed_dim
    )
    assert unet.add_embedding.linear_1.in_features == unet.config.projection_class_embeddings_input_dim
    assert len(unet.down_blocks[1].attentions[0].transformer_blocks) == 2
    assert len(unet.mid_block.attentions[0].transformer_blocks) == 2
    assert unet.down_blocks[1].attentions[0].use_linear_projection
    for enc, tok in ((sdxl_pipe.text_encoder, sdxl_pipe.tokenizer), (te2, sdxl_pipe.tokenizer_2)):
        assert (enc.config.bos_token_id, enc.config.eos_token_id, enc.config.pad_token_id) == (
            tok.bos_token_id,
            tok.eos_token_id,
            tok.pad_token_id,
        )
    assert sdxl_pipe.default_sample_size * sdxl_pipe.vae_scale_factor == SDXL_PIXELS


def test_sdxl_runs_end_to_end_and_feeds_the_size_ids(sdxl_pipe) -> None:
    seen: dict[str, torch.Tensor] = {}

    def grab(pipe, step: int, t, kwargs: dict) -> dict:
        seen.update({k: v.clone() for k, v in kwargs.items()})
        return kwargs

    out = sdxl_pipe(
        prompt=PROMPT,
        num_inference_steps=2,
        guidance_scale=5.0,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=grab,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"],
    )
    assert out.images.shape == (1, SDXL_PIXELS, SDXL_PIXELS, 3)
    assert np.isfinite(out.images).all()
    # classifier-free guidance doubles the batch: [uncond, cond]
    assert seen["latents"].shape == (1, 4, 8, 8)
    assert seen["prompt_embeds"].shape == (2, 12, 48)
    assert seen["add_text_embeds"].shape == (2, 32)
    expected_ids = torch.tensor([[SDXL_PIXELS, SDXL_PIXELS, 0, 0, SDXL_PIXELS, SDXL_PIXELS]] * 2, dtype=torch.float32)
    assert torch.equal(seen["add_time_ids"], expected_ids)


def test_sdxl_encode_prompt_shapes_and_zero_negative(sdxl_pipe) -> None:
    embeds, neg, pooled, neg_pooled = sdxl_pipe.encode_prompt(
        PROMPT, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=True
    )
    assert embeds.shape == neg.shape == (1, 12, 16 + 32)
    assert pooled.shape == neg_pooled.shape == (1, 32)
    assert torch.isfinite(embeds).all() and embeds.abs().sum() > 0
    # force_zeros_for_empty_prompt and no negative prompt: zero unconditional embeddings
    assert neg.abs().max() == 0 and neg_pooled.abs().max() == 0


def test_sdxl_add_time_ids(sdxl_pipe) -> None:
    ids = sdxl_pipe._get_add_time_ids(
        (SDXL_PIXELS, SDXL_PIXELS),
        (0, 0),
        (SDXL_PIXELS, SDXL_PIXELS),
        dtype=torch.float32,
        text_encoder_projection_dim=sdxl_pipe.text_encoder_2.config.projection_dim,
    )
    assert ids.tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]
    with pytest.raises(ValueError, match="added time embedding"):
        sdxl_pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=torch.float32, text_encoder_projection_dim=16)


def test_sdxl_without_forced_zeros_encodes_the_empty_negative(tmp_path: Path) -> None:
    from unsample_lab.testing.tiny_pipeline import build_tiny_sdxl_pipeline

    folder = build_tiny_sdxl_pipeline(tmp_path / "pipe", force_zeros_for_empty_prompt=False, seed=1)
    assert json.loads((folder / "model_index.json").read_text())["force_zeros_for_empty_prompt"] is False
    pipe = _load("StableDiffusionXLPipeline", folder)
    _, neg, _, neg_pooled = pipe.encode_prompt(PROMPT, device=torch.device("cpu"), do_classifier_free_guidance=True)
    assert neg.abs().max() > 0 and neg_pooled.abs().max() > 0


# --- pixel-space DDPM / DDIM ----------------------------------------------------------------


def _sample(pipe) -> np.ndarray:
    images = pipe(batch_size=1, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    return images.images


def test_ddpm_pipeline_layout_runs(tiny_ddpm_pipeline_dir: Path) -> None:
    assert sorted(p.name for p in tiny_ddpm_pipeline_dir.iterdir()) == ["model_index.json", "scheduler", "unet"]
    pipe = _load("DDPMPipeline", tiny_ddpm_pipeline_dir)
    assert pipe.unet.config.out_channels == 3 and pipe.unet.class_embedding is None
    assert pipe.scheduler.config.variance_type == "fixed_small"
    images = _sample(pipe)
    assert images.shape == (1, DDPM_PIXELS, DDPM_PIXELS, 3) and np.isfinite(images).all()


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_pipeline_layout_variants_run(tmp_path: Path, scheduler: str) -> None:
    from unsample_lab.testing.tiny_pipeline import build_tiny_ddpm_pipeline

    learned = scheduler == "ddpm"  # DDPMScheduler's learned_range splits the 6 channels itself
    folder = build_tiny_ddpm_pipeline(
        tmp_path / "pipe", scheduler=scheduler, learned_variance=learned  # type: ignore[arg-type]
    )
    cls_name = "DDPMPipeline" if scheduler == "ddpm" else "DDIMPipeline"
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == cls_name
    pipe = _load(cls_name, folder)
    assert pipe.unet.config.out_channels == (6 if learned else 3)
    if learned:
        assert pipe.scheduler.config.variance_type == "learned_range"
    images = _sample(pipe)
    assert images.shape == (1, DDPM_PIXELS, DDPM_PIXELS, 3) and np.isfinite(images).all()


def test_flat_layout_is_google_ddpm_like_and_loads(tiny_ddpm_flat_dir: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    names = sorted(p.name for p in tiny_ddpm_flat_dir.iterdir())
    assert names == ["config.json", "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"]
    index = json.loads((tiny_ddpm_flat_dir / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert json.loads((tiny_ddpm_flat_dir / "config.json").read_text())["_class_name"] == "UNet2DModel"

    unet = UNet2DModel.from_pretrained(tiny_ddpm_flat_dir)
    scheduler = DDPMScheduler.from_pretrained(tiny_ddpm_flat_dir)
    assert unet.config.sample_size == DDPM_PIXELS and scheduler.config.num_train_timesteps == 1000
    # diffusers loads each component from the root when its subfolder is missing
    pipe = _load("DDPMPipeline", tiny_ddpm_flat_dir)
    assert torch.equal(pipe.unet.conv_in.weight, unet.conv_in.weight)
    images = _sample(pipe)
    assert images.shape == (1, DDPM_PIXELS, DDPM_PIXELS, 3) and np.isfinite(images).all()


def test_class_conditional_learned_variance_unet(tiny_ddpm_class_dir: Path) -> None:
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(tiny_ddpm_class_dir, subfolder="unet")
    x = torch.randn(2, 3, DDPM_PIXELS, DDPM_PIXELS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = unet(x, 500, class_labels=torch.tensor([1, 3])).sample
        other = unet(x, 500, class_labels=torch.tensor([0, 3])).sample
    assert out.shape == (2, 6, DDPM_PIXELS, DDPM_PIXELS) and torch.isfinite(out).all()
    assert not torch.equal(out[0], other[0]) and torch.equal(out[1], other[1])
    with pytest.raises(ValueError, match="class_labels should be provided"):
        unet(x, 500)


def test_class_model_needs_labels_and_a_variance_split(tiny_ddpm_class_dir: Path) -> None:
    pipe = _load("DDIMPipeline", tiny_ddpm_class_dir)
    with pytest.raises(ValueError, match="class_labels should be provided"):
        _sample(pipe)  # DDIMPipeline passes no class labels
    scheduler, unet = pipe.scheduler, pipe.unet
    scheduler.set_timesteps(2)
    x = torch.randn(1, 3, DDPM_PIXELS, DDPM_PIXELS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = unet(x, scheduler.timesteps[0], class_labels=torch.tensor([2])).sample
    with pytest.raises(RuntimeError):
        scheduler.step(out, scheduler.timesteps[0], x)  # DDIM cannot step noise + variance channels
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(x, t, class_labels=torch.tensor([2])).sample[:, :3]
            x = scheduler.step(eps, t, x).prev_sample
    assert torch.isfinite(x).all()
