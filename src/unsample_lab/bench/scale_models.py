"""The real architectures of ``unsample bench scale``, built from their published configs with random weights.

The configs ship beside this module (``configs/*.json``: the denoiser's, the VAE's and the scheduler's
``config.json`` of each published checkpoint, written out by hand, with their source under ``_source``).
`build_model` makes a complete diffusers pipeline from them (random weights, nothing downloaded) and hands
it to the library's own backend class for that pipeline (`unsample.backends.registry.BACKENDS`), so the
bench runs the code path of a user's checkpoint. The denoiser (UNet / transformer) and the VAE are the
real ones; the text encoders are tiny (one or two layers) with the published output widths, since a
prompt is encoded once per edit and costs nothing per network evaluation. ``blocks`` builds a
transformer with fewer blocks of each kind (the bench extrapolates per block); ``tiny`` shrinks every
width for tests (the block structure and the text widths stay).
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import torch

from unsample.backends.base import Model
from unsample.backends.registry import backend_for
from unsample.backends.tokenizer import build_word_tokenizer
from unsample_lab.testing.tiny_pipeline import TINY_WORDS, _build_t5_word_tokenizer, _tiny_clip_config, _tiny_t5_encoder

FAMILIES: dict[str, str] = {"sd15": "sd15.json", "sdxl": "sdxl.json", "sd3": "sd3_medium.json",
                            "flux": "flux1_dev.json"}
"""Family name -> its config file in ``unsample_lab/bench/configs``."""


def load_config(family: str) -> dict[str, Any]:
    """The published configs of ``family`` (a fresh copy)."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    text = resources.files("unsample_lab.bench").joinpath("configs", FAMILIES[family]).read_text(encoding="utf-8")
    config: dict[str, Any] = json.loads(text)
    return config


def block_counts(config: dict[str, Any]) -> dict[str, int]:
    """The denoiser's block counts by config key (``{"num_layers": 24}``); empty for a UNet (built whole)."""
    return {key: int(config["denoiser"][key]) for key in config.get("blocks", {})}


def with_blocks(config: dict[str, Any], blocks: int | None) -> dict[str, Any]:
    """``config`` with at most ``blocks`` blocks of each kind (None: as published)."""
    out = copy.deepcopy(config)
    if blocks is not None:
        for key, full in block_counts(config).items():
            out["denoiser"][key] = min(int(blocks), full)
    return out


def tiny(config: dict[str, Any]) -> dict[str, Any]:
    """The same block structure at toy widths (tests): channels of 32, one layer per level, small heads."""
    out = copy.deepcopy(config)
    den, vae = out["denoiser"], out["vae"]
    vae.update(block_out_channels=[32] * len(vae["block_out_channels"]), layers_per_block=1, norm_num_groups=8)
    if config["denoiser_class"] == "UNet2DConditionModel":
        den.update(block_out_channels=[32] * len(den["block_out_channels"]), layers_per_block=1, norm_num_groups=8)
        if isinstance(den.get("attention_head_dim"), list):
            den["attention_head_dim"] = [2] * len(den["attention_head_dim"])
        else:
            den["attention_head_dim"] = 4
        if isinstance(den.get("transformer_layers_per_block"), list):
            den["transformer_layers_per_block"] = [1] * len(den["transformer_layers_per_block"])
        if den.get("addition_embed_type") == "text_time":
            den["addition_time_embed_dim"] = 8
            den["projection_class_embeddings_input_dim"] = config["text"]["clip_projection"][-1] + 6 * 8
    elif config["denoiser_class"] == "SD3Transformer2DModel":
        den.update(attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32)
    else:  # Flux
        den.update(attention_head_dim=16, num_attention_heads=2, axes_dims_rope=[4, 6, 6])
    return out


def _public(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _denoiser_class(name: str) -> Any:
    import diffusers  # heavy (diffusers' models): loaded on use

    return getattr(diffusers, name)


def denoiser_parameters(config: dict[str, Any]) -> int:
    """Parameters of the denoiser ``config`` describes, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        net = _denoiser_class(config["denoiser_class"]).from_config(_public(config["denoiser"]))
    return sum(p.numel() for p in net.parameters())


def _text_parts(config: dict[str, Any]) -> dict[str, Any]:
    """Tiny text encoders with the published output widths, and their tokenizers."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # heavy (transformers' models): loaded on use

    text = config["text"]
    tokens = int(text["clip_tokens"])
    hidden = list(text["clip_hidden"])
    projections = list(text.get("clip_projection", [None] * len(hidden)))
    parts: dict[str, Any] = {}
    for i, (width, proj) in enumerate(zip(hidden, projections)):
        suffix = "" if i == 0 else f"_{i + 1}"
        tok = build_word_tokenizer(TINY_WORDS, max_length=tokens)
        cls = CLIPTextModel if proj is None else CLIPTextModelWithProjection
        parts["tokenizer" + suffix] = tok
        parts["text_encoder" + suffix] = cls(_tiny_clip_config(tok, hidden_size=width, projection_dim=proj))
    if "t5_width" in text:
        suffix = f"_{len(hidden) + 1}"
        tok5 = _build_t5_word_tokenizer(TINY_WORDS)
        parts["tokenizer" + suffix] = tok5
        parts["text_encoder" + suffix] = _tiny_t5_encoder(len(tok5), int(text["t5_width"]))
    return parts


def build_pipeline(config: dict[str, Any], *, seed: int = 0) -> Any:
    """The diffusers pipeline ``config`` describes, random weights (float32, CPU)."""
    import diffusers  # heavy (diffusers' models): loaded on use

    torch.manual_seed(seed)
    denoiser = _denoiser_class(config["denoiser_class"]).from_config(_public(config["denoiser"]))
    vae = diffusers.AutoencoderKL.from_config(_public(config["vae"]))
    scheduler = getattr(diffusers, config["scheduler_class"]).from_config(_public(config["scheduler"]))
    parts = _text_parts(config)
    name = config["pipeline"]
    pipeline_cls = getattr(diffusers, name)
    if name == "StableDiffusionPipeline":
        return pipeline_cls(unet=denoiser, vae=vae, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False, **parts)
    if name == "StableDiffusionXLPipeline":
        return pipeline_cls(unet=denoiser, vae=vae, scheduler=scheduler, force_zeros_for_empty_prompt=True,
                            add_watermarker=False, **parts)
    return pipeline_cls(transformer=denoiser, vae=vae, scheduler=scheduler, **parts)


def build_model(config: dict[str, Any], *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                seed: int = 0, name: str = "random", resolution: int | None = None) -> Model:
    """The library's `Model` of the pipeline ``config`` describes, on ``device`` in ``dtype`` (the VAE
    in float32 where its config says ``force_upcast``, as the SDXL backend loads it). ``resolution``
    sets the model's native image side (the denoiser's ``sample_size``; Flux's pipeline default), which
    sizes the images a user hands in; no weight depends on it."""
    pipe = build_pipeline(config, seed=seed)
    if resolution is not None:
        latent_side = resolution // int(pipe.vae_scale_factor)
        if hasattr(pipe, "default_sample_size") and config["pipeline"] == "FluxPipeline":
            pipe.default_sample_size = latent_side
        else:
            (getattr(pipe, "unet", None) or pipe.transformer).register_to_config(sample_size=latent_side)
    if device != "cpu" or dtype != torch.float32:
        pipe.to(torch.device(device), dtype)
    if dtype != torch.float32 and config["vae"].get("force_upcast", False):
        pipe.vae.to(torch.float32)
    model_cls: Any = backend_for(config["pipeline"]).loader()
    model: Model = model_cls(pipe, name)
    return model


def weight_bytes(model: Model) -> dict[str, int]:
    """Bytes of the parameters of each part of ``model``'s pipeline (denoiser, vae, text encoders)."""
    pipe = model.pipe
    out: dict[str, int] = {}
    for part in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, part, None)
        if module is not None:
            out[part] = sum(p.numel() * p.element_size() for p in module.parameters())
    return out


def denoiser_module(model: Model) -> torch.nn.Module:
    """The pipeline's UNet or transformer."""
    pipe = model.pipe
    net = getattr(pipe, "unet", None) or pipe.transformer
    assert isinstance(net, torch.nn.Module)
    return net
