"""Backend: Stable Diffusion XL pipelines loaded with diffusers.

What differs from SD 1.x/2.x, all taken from the pipeline's own code paths:
- ``encode_prompt`` runs both text encoders (the penultimate hidden states of each,
  concatenated per token) and gives the second one's pooled projection.
- The UNet also takes ``add_time_ids`` (original size, crop top-left, target size). For an image
  being inverted they are its own size, uncropped, as the pipeline sets them by default:
  `model_fn` builds them from the latent's size, so one conditioning serves every image size.
- With ``force_zeros_for_empty_prompt`` (SDXL's config) the unconditional branch of an empty
  negative prompt is all zeros, not the encoding of "": `encode_negative` returns what the
  pipeline uses, so CFG, null-text (which starts from that branch) and negative-prompt inversion
  start where SDXL's own sampler does.
- A VAE with ``force_upcast`` runs in float32 whatever the model's dtype: decoding SDXL latents
  in float16 overflows (NaN or black images).

The UNet is a ``UNet2DConditionModel``, so prompt-to-prompt control and attention masks hook its
cross-attention as on SD (several transformer layers per block; the tokens are the first
tokenizer's, which both encoders share position for position).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline

from unsample.backends.diffusers_common import fingerprint, load_pipeline
from unsample.backends.diffusers_sd import StableDiffusionModel
from unsample.errors import InputError


@dataclass(frozen=True)
class XLConditioning:
    """Per-token embeddings of both encoders [B, L, D1 + D2] and the pooled embedding [B, P]."""

    embeds: torch.Tensor
    pooled: torch.Tensor

    def cat(self, other: XLConditioning) -> XLConditioning:
        return XLConditioning(torch.cat([self.embeds, other.embeds]), torch.cat([self.pooled, other.pooled]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"embeds": self.embeds, "pooled": self.pooled}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> XLConditioning:
        return cls(tensors["embeds"], tensors["pooled"])


class StableDiffusionXLModel(StableDiffusionModel):
    """SDXL through diffusers."""

    @classmethod
    def from_pretrained(
        cls, name: str, *, device: torch.device, dtype: torch.dtype, local_files_only: bool | None = None,
        variant: str | None = None, config: str | None = None,
    ) -> StableDiffusionXLModel:
        pipe = load_pipeline(StableDiffusionXLPipeline, name, device=device, dtype=dtype,
                             local_files_only=local_files_only, family="Stable Diffusion XL", variant=variant, config=config)
        if getattr(pipe.vae.config, "force_upcast", False):
            pipe.vae.to(torch.float32)
        return cls(pipe, name)

    @cached_property
    def fingerprint(self) -> str:
        pipe = self.pipe
        return fingerprint(
            (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2), dict(pipe.scheduler.config),
            (pipe.unet.conv_in.weight, pipe.unet.conv_out.weight, pipe.vae.decoder.conv_out.weight,
             pipe.text_encoder.get_input_embeddings().weight, pipe.text_encoder_2.get_input_embeddings().weight),
        )

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> XLConditioning:  # type: ignore[override]
        if not isinstance(prompt, str):
            raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
        cached = self._prompt_cache.get(prompt)
        if cached is None:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=prompt, prompt_2=None, device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
            cached = self._prompt_cache[prompt] = XLConditioning(embeds.to(self.dtype), pooled.to(self.dtype))
        return cached  # type: ignore[return-value]

    def encode_negative(self, prompt: str) -> XLConditioning:
        cond = self.encode_prompt(prompt)
        if prompt == "" and getattr(self.pipe.config, "force_zeros_for_empty_prompt", False):
            return XLConditioning(torch.zeros_like(cond.embeds), torch.zeros_like(cond.pooled))
        return cond

    def add_time_ids(self, batch: int, height: int, width: int) -> torch.Tensor:
        """(original size, crop top-left, target size) for an uncropped image of that size, [B, 6]."""
        ids = torch.tensor([[height, width, 0, 0, height, width]], device=self.device, dtype=self.dtype)
        return ids.expand(batch, 6)

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.pipe.unet(
            x.to(self.device, self.dtype),
            t.to(self.device),
            encoder_hidden_states=cond.embeds.to(self.dtype),
            added_cond_kwargs={"text_embeds": cond.pooled.to(self.dtype),
                               "time_ids": self.add_time_ids(b, h * self.vae_factor, w * self.vae_factor)},
        ).sample
