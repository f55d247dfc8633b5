"""Backend: Stable Diffusion 1.x / 2.x pipelines loaded with diffusers (eps- or v-prediction).

A hub id or a local folder in the diffusers layout goes through ``StableDiffusionPipeline.
from_pretrained``; the pipeline's own parts do the work: the VAE (with its ``scaling_factor``
and optional ``shift_factor``), the tokenizer and text encoder, the UNet, and the scheduler's
config (read into a `NoiseSchedule`). The pipeline's scheduler object itself is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from unsample.backends.base import Model


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

    def __init__(self, pipe: Any, name: str) -> None:
        from unsample.core.schedule import NoiseSchedule

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
    ) -> StableDiffusionModel:
        from diffusers import StableDiffusionPipeline

        if local_files_only is None:
            local_files_only = os.path.isdir(name) or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                name,
                dtype=dtype,
                safety_checker=None,
                requires_safety_checker=False,
                local_files_only=local_files_only,
            )
        except (OSError, ValueError, EnvironmentError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"could not load a Stable Diffusion pipeline from {name!r} ({first}); give a local diffusers "
                "folder or a hub id that is in the local cache"
            ) from err
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        for part in (pipe.unet, pipe.vae, pipe.text_encoder):
            part.requires_grad_(False)
            part.eval()
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
        digest = hashlib.sha256()
        for part in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder):
            config = part.config.to_dict() if hasattr(part.config, "to_dict") else dict(part.config)
            config.pop("transformers_version", None)
            digest.update(json.dumps(_jsonable(config), sort_keys=True).encode())
        digest.update(json.dumps(_jsonable(dict(self.pipe.scheduler.config)), sort_keys=True).encode())
        # A few small weight tensors tell two trainings of one architecture apart, cheaply.
        for tensor in (
            self.pipe.unet.conv_in.weight,
            self.pipe.unet.conv_out.weight,
            self.pipe.vae.decoder.conv_out.weight,
            self.pipe.text_encoder.get_input_embeddings().weight,
        ):
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def _scaling(self) -> tuple[float, float]:
        cfg = self.pipe.vae.config
        shift = getattr(cfg, "shift_factor", None) or 0.0
        return float(cfg.scaling_factor), float(shift)

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        scale, shift = self._scaling
        x = (image.to(self.device, self.pipe.vae.dtype) * 2 - 1)
        mean = self.pipe.vae.encode(x).latent_dist.mean
        return ((mean.float() - shift) * scale)

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        scale, shift = self._scaling
        z = latent.to(self.device, torch.float32) / scale + shift
        out = self.pipe.vae.decode(z.to(self.pipe.vae.dtype)).sample.float()
        return ((out + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> TextConditioning:
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
