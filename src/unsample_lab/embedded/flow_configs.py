"""Sizes and schedule of the embedded flow model: an SD3-architecture (MMDiT) rectified-flow pipeline.

It reuses the embedded UNet model's autoencoder (same latents, so reconstruction floors compare)
and its tokenizer. SD3's two CLIP slots are filled by CLIPTextModelWithProjection encoders: the
first starts from the embedded model's text encoder (same width and layers; its projection is
new), the second is a smaller one trained from scratch. There is no T5: the folder is saved
without it, as SD3 checkpoints may be, and prompts are encoded with ``max_sequence_length`` = 0
zero "T5" tokens (recorded in ``unsample.json`` beside model_index.json, which the SD3 backend
reads), so the transformer attends to the CLIP tokens and the image only.

Sizes (measured on this 2-core CPU, batch 32, 16x16x4 latents, one thread beside a training run):
heads 4 x 32, 8 layers: 4.7 M parameters (18.8 MB), ~0.5 s/step; with the encoders and the
autoencoder the pipeline stays under 25 MB of safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unsample.errors import InputError
from unsample_lab.embedded.stage_loop import JsonConfig

UNSAMPLE_JSON = "unsample.json"
"""Beside model_index.json: what a diffusers folder cannot say, e.g. {"max_sequence_length": 0}."""


@dataclass(frozen=True)
class FlowTrainConfig(JsonConfig):
    """The flow model's architecture and training (one stage: the text encoders and the transformer)."""

    seed: int = 0
    image_size: int = 64
    max_tokens: int = 16
    t5_tokens: int = 0  # zero "T5" tokens per prompt (SD3's pipeline pads with them when T5 is absent)

    layers: int = 8
    heads: int = 4
    head_dim: int = 32
    patch_size: int = 2
    text2_hidden: int = 64
    text2_layers: int = 2
    text2_heads: int = 2
    shift: float = 1.0  # FlowMatchEulerDiscreteScheduler's shift at sampling (16x16 latents: no shift)

    # Timesteps: sigma = sigmoid(n), n ~ N(logit_mean, logit_std) (SD3's logit-normal), or
    # uniform in [0, 1] ("uniform").
    timestep_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    steps: int = 40000
    batch: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    caption_dropout: float = 0.1
    object_weight: float = 5.0  # latent cells near an object count 1 + object_weight * (1 - sigma)
    object_dilation: int = 2
    ema_decay: float = 0.999
    max_minutes: float = 180.0

    warmup_steps: int = 500
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 50
    checkpoint_minutes: float = 5.0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.timestep_sampling not in ("logit_normal", "uniform"):
            raise InputError(f"timestep_sampling={self.timestep_sampling!r} is not logit_normal or uniform")
        if not 0 <= self.caption_dropout < 1:
            raise InputError(f"caption_dropout={self.caption_dropout} must be in [0, 1)")

    @classmethod
    def tiny(cls) -> FlowTrainConfig:
        """A seconds-long config for tests."""
        return cls(layers=1, heads=2, head_dim=8, text2_hidden=16, text2_layers=1, steps=3, batch=2, warmup_steps=1,
                   log_every=1)


def transformer_config(cfg: FlowTrainConfig, latent_size: int, latent_channels: int, text_width: int,
                       pooled_width: int) -> dict[str, Any]:
    return {
        "sample_size": latent_size,
        "patch_size": cfg.patch_size,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "num_layers": cfg.layers,
        "attention_head_dim": cfg.head_dim,
        "num_attention_heads": cfg.heads,
        "joint_attention_dim": text_width,
        "caption_projection_dim": cfg.heads * cfg.head_dim,
        "pooled_projection_dim": pooled_width,
        "pos_embed_max_size": latent_size // cfg.patch_size,
    }


def second_text_config(cfg: FlowTrainConfig, first: Any) -> Any:  # -> transformers.CLIPTextConfig
    """The second CLIP slot: the first's vocabulary and positions, a smaller width."""
    from transformers import CLIPTextConfig  # heavy (transformers' models): loaded on use

    base = first.to_dict()
    base.update(hidden_size=cfg.text2_hidden, intermediate_size=4 * cfg.text2_hidden, num_hidden_layers=cfg.text2_layers,
                num_attention_heads=cfg.text2_heads, projection_dim=cfg.text2_hidden)
    return CLIPTextConfig(**{k: v for k, v in base.items() if k not in ("architectures", "_name_or_path")})


def build_scheduler(cfg: FlowTrainConfig):  # -> diffusers.FlowMatchEulerDiscreteScheduler
    from diffusers import FlowMatchEulerDiscreteScheduler  # heavy (diffusers' models): loaded on use

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.shift)
