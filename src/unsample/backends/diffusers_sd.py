"""Backend: Stable Diffusion 1.x / 2.x pipelines loaded with diffusers (eps- or v-prediction).

A hub id or a local folder in the diffusers layout goes through ``StableDiffusionPipeline.
from_pretrained``; the pipeline's own parts do the work: the VAE (with its ``scaling_factor``
and optional ``shift_factor``), the tokenizer and text encoder, the UNet, and the scheduler's
config (read into a `NoiseSchedule`). The pipeline's scheduler object itself is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from unsample.backends.base import Model
from unsample.backends.diffusers_common import fingerprint, load_pipeline, vae_decode, vae_encode
from unsample.core.schedule import NoiseSchedule
from unsample.errors import InputError


@dataclass(frozen=True)
class TextConditioning:
    """Per-token text embeddings [B, L, D] for the UNet's cross-attention."""

    embeds: torch.Tensor

    def cat(self, other: TextConditioning) -> TextConditioning:
        return TextConditioning(torch.cat([self.embeds, other.embeds]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"embeds": self.embeds}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TextConditioning:
        return cls(tensors["embeds"])


class StableDiffusionModel(Model):
    """SD 1.x / 2.x through diffusers."""

    supports_attention_control = True

    def __init__(self, pipe: Any, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.schedule = NoiseSchedule.from_config(dict(pipe.scheduler.config))
        self.device = pipe.unet.device
        self.dtype = pipe.unet.dtype
        self._prompt_cache: dict[str, TextConditioning] = {}

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        device: torch.device,
        dtype: torch.dtype,
        local_files_only: bool | None = None,
        variant: str | None = None,
        config: str | None = None,
    ) -> StableDiffusionModel:
        pipe = load_pipeline(StableDiffusionPipeline, name, device=device, dtype=dtype, local_files_only=local_files_only,
                             family="Stable Diffusion", variant=variant, config=config,
                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return cls(pipe, name)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.vae_factor

    @property
    def size_multiple(self) -> int:
        return self.vae_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)

    @cached_property
    def fingerprint(self) -> str:
        pipe = self.pipe
        return fingerprint(
            (pipe.unet, pipe.vae, pipe.text_encoder), dict(pipe.scheduler.config),
            (pipe.unet.conv_in.weight, pipe.unet.conv_out.weight, pipe.vae.decoder.conv_out.weight,
             pipe.text_encoder.get_input_embeddings().weight),
        )

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.pipe.vae, image, self.device, self.vae_tiling)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.pipe.vae, latent, self.device, self.vae_tiling)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> TextConditioning:
        if not isinstance(prompt, str):
            raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
        cached = self._prompt_cache.get(prompt)
        if cached is not None:
            return cached
        tok = self.pipe.tokenizer
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        encoder = self.pipe.text_encoder
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = ids.attention_mask.to(self.device)
        embeds = encoder(ids.input_ids.to(self.device), attention_mask=mask)[0]
        cond = TextConditioning(embeds.to(self.dtype))
        self._prompt_cache[prompt] = cond
        return cond

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        # No no_grad here: null-text inversion differentiates through the UNet to the embeddings
        # (the UNet's own parameters never require grad). The API runs everything else without grad.
        return self.pipe.unet(
            x.to(self.device, self.dtype),
            t.to(self.device),
            encoder_hidden_states=cond.embeds.to(self.dtype),
        ).sample

