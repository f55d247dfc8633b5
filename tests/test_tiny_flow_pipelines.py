"""The tiny SD3 and Flux pipelines: saved in the diffusers layout, loadable offline, runnable end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

PIXELS = 32  # default side of the tiny flow pipelines; vae_scale_factor 4 -> 8x8 latents
PROMPT = "a red circle"
T5_LEN = 16


def _load(cls_name: str, folder: Path, **kwargs: object):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(folder, local_files_only=True, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd3_pipe(tiny_sd3_pipeline_dir: Path):
    return _load("StableDiffusion3Pipeline", tiny_sd3_pipeline_dir)


@pytest.fixture(scope="module")
def sd3_no_t5_pipe(tiny_sd3_no_t5_pipeline_dir: Path):
    return _load("StableDiffusion3Pipeline", tiny_sd3_no_t5_pipeline_dir, text_encoder_3=None, tokenizer_3=None)


@pytest.fixture(scope="module")
def flux_pipe(tiny_flux_pipeline_dir: Path):
    return _load("FluxPipeline", tiny_flux_pipeline_dir)


def _run(pipe, *, height: int = PIXELS, width: int = PIXELS, output_type: str = "np", guidance_scale: float = 4.0):
    return pipe(
        prompt=PROMPT,
        num_inference_steps=2,
        height=height,
        width=width,
        guidance_scale=guidance_scale,
        output_type=output_type,
        max_sequence_length=T5_LEN,
        generator=torch.Generator().manual_seed(0),
    ).images


@pytest.mark.parametrize(
    ("fixture", "class_name"),
    [
        ("tiny_sd3_pipeline_dir", "StableDiffusion3Pipeline"),
        ("tiny_sd3_no_t5_pipeline_dir", "StableDiffusion3Pipeline"),
        ("tiny_flux_pipeline_dir", "FluxPipeline"),
    ],
)
def test_model_index_names_the_pipeline(fixture: str, class_name: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == class_name
    if fixture == "tiny_sd3_no_t5_pipeline_dir":
        assert index["text_encoder_3"] == [None, None] and index["tokenizer_3"] == [None, None]
        assert not (folder / "text_encoder_3").exists()
    elif class_name == "StableDiffusion3Pipeline":
        assert index["text_encoder_3"] == ["transformers", "T5EncoderModel"]
        assert index["tokenizer_3"][1] in ("T5Tokenizer", "T5TokenizerFast")
    else:
        assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
        assert index["tokenizer_2"][1] in ("T5Tokenizer", "T5TokenizerFast")


@pytest.mark.parametrize("pipe_name", ["sd3_pipe", "sd3_no_t5_pipe", "flux_pipe"])
@pytest.mark.parametrize(("height", "width"), [(PIXELS, PIXELS), (32, 48)])
def test_end_to_end_image(pipe_name: str, height: int, width: int, request: pytest.FixtureRequest) -> None:
    pipe = request.getfixturevalue(pipe_name)
    image = _run(pipe, height=height, width=width, guidance_scale=3.5 if pipe_name == "flux_pipe" else 4.0)
    assert image.shape == (1, height, width, 3)
    assert np.isfinite(image).all()


def test_sd3_parts(sd3_pipe) -> None:
    assert sd3_pipe.vae_scale_factor == 4
    assert sd3_pipe.vae.config.latent_channels == sd3_pipe.transformer.config.in_channels == 16
    assert (sd3_pipe.vae.config.scaling_factor, sd3_pipe.vae.config.shift_factor) == (1.5305, 0.0609)
    assert sd3_pipe.scheduler.config.shift == 3.0 and not sd3_pipe.scheduler.config.use_dynamic_shifting
    assert sd3_pipe.default_sample_size * sd3_pipe.vae_scale_factor == PIXELS
    clips = ((sd3_pipe.tokenizer, sd3_pipe.text_encoder), (sd3_pipe.tokenizer_2, sd3_pipe.text_encoder_2))
    for tokenizer, encoder in clips:
        cfg = encoder.config
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )


def test_flux_parts(flux_pipe) -> None:
    cfg = flux_pipe.transformer.config
    assert flux_pipe.vae_scale_factor == 4
    assert cfg.guidance_embeds
    assert cfg.in_channels == 4 * flux_pipe.vae.config.latent_channels
    assert sum(cfg.axes_dims_rope) == cfg.attention_head_dim
    assert cfg.pooled_projection_dim == flux_pipe.text_encoder.config.hidden_size
    assert cfg.joint_attention_dim == flux_pipe.text_encoder_2.config.d_model
    assert (flux_pipe.vae.config.scaling_factor, flux_pipe.vae.config.shift_factor) == (0.3611, 0.1159)
    sched = flux_pipe.scheduler.config
    assert sched.use_dynamic_shifting and sched.shift == 3.0
    assert (sched.base_shift, sched.max_shift, sched.base_image_seq_len, sched.max_image_seq_len) == (0.5, 1.15, 256, 4096)
    tok, enc = flux_pipe.tokenizer, flux_pipe.text_encoder.config
    assert (enc.bos_token_id, enc.eos_token_id, enc.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)


def test_sd3_latents_and_prompt_embeds(sd3_pipe, sd3_no_t5_pipe) -> None:
    assert tuple(_run(sd3_pipe, output_type="latent").shape) == (1, 16, 8, 8)
    clip_len = sd3_pipe.tokenizer_max_length
    for pipe in (sd3_pipe, sd3_no_t5_pipe):
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(PROMPT, None, None, device="cpu", max_sequence_length=T5_LEN)
        assert tuple(embeds.shape) == tuple(neg.shape) == (1, clip_len + T5_LEN, 64)
        assert tuple(pooled.shape) == tuple(neg_pooled.shape) == (1, 48)
        assert torch.isfinite(embeds).all() and torch.isfinite(pooled).all()
    no_t5_embeds = sd3_no_t5_pipe.encode_prompt(PROMPT, None, None, device="cpu", max_sequence_length=T5_LEN)[0]
    assert torch.all(no_t5_embeds[:, clip_len:] == 0)  # diffusers feeds zeros in T5's place


def test_flux_latents_and_prompt_embeds(flux_pipe) -> None:
    packed = _run(flux_pipe, output_type="latent", guidance_scale=3.5)
    assert tuple(packed.shape) == (1, 16, 64)  # (8/2 * 8/2) tokens of 4 * 16 channels
    unpacked = flux_pipe._unpack_latents(packed, PIXELS, PIXELS, flux_pipe.vae_scale_factor)
    assert tuple(unpacked.shape) == (1, 16, 8, 8)
    embeds, pooled, text_ids = flux_pipe.encode_prompt(PROMPT, None, device="cpu", max_sequence_length=T5_LEN)
    assert tuple(embeds.shape) == (1, T5_LEN, 48)
    assert tuple(pooled.shape) == (1, 32)
    assert tuple(text_ids.shape) == (T5_LEN, 3)


def test_t5_tokenizer_loads_as_t5(tiny_sd3_pipeline_dir: Path) -> None:
    from transformers import AutoTokenizer, T5TokenizerFast

    for cls in (AutoTokenizer, T5TokenizerFast):
        tok = cls.from_pretrained(tiny_sd3_pipeline_dir / "tokenizer_3")
        assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
        ids = tok(PROMPT, padding="max_length", max_length=8).input_ids
        assert ids[3:] == [1, 0, 0, 0, 0] and 2 not in ids  # three known words, </s>, padding


def test_builders_are_seeded(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from unsample_lab.testing.tiny_pipeline import build_tiny_flux_pipeline

    def weights(folder: Path) -> dict[str, torch.Tensor]:
        return load_file(next((folder / "transformer").glob("*.safetensors")))

    a = weights(build_tiny_flux_pipeline(tmp_path / "a", seed=3))
    b = weights(build_tiny_flux_pipeline(tmp_path / "b", seed=3))
    c = weights(build_tiny_flux_pipeline(tmp_path / "c", seed=4))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
