"""Backend: Flux.1 pipelines loaded with diffusers (rectified flow, packed latents).

The methods see Flux's latents as every other family's, [B, C, h, w] (so masks, blending and
the trajectory view work per latent cell); `model_fn` packs them into the transformer's 2 x 2
patches [B, hw/4, 4C] with their image ids, and unpacks the velocity it predicts. The text ids
are zeros, as diffusers builds them.

Two guidances, kept apart:
- ``distilled_guidance`` (Flux-dev's ``guidance_scale``, default 3.5) is an input of a
  guidance-distilled transformer (``guidance_embeds``); it costs nothing.
- The method's ``guidance`` is true classifier-free guidance (diffusers' ``true_cfg_scale``):
  with guidance != 1 the Denoiser evaluates the negative prompt as well, at twice the cost.
  A distilled model has no unconditional branch of its own, so the inversions default to 1.

The grid's sigmas follow the Flux pipeline: ``np.linspace(1, 1/N, N)``, shifted by mu from the
image's sequence length (`schedule_for`).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxPipeline

from unsample.backends.diffusers_common import (
    LoadError,
    PooledTextConditioning,
    TransformerPipelineModel,
    fingerprint,
    load_pipeline,
    single_file_shapes,
)
from unsample.core.flow_schedule import FlowSchedule
from unsample.core.schedule import Schedule

BFL_WIDTH = 3072
"""The transformer width diffusers' BFL-layout converter assumes (Flux.1 dev and schnell)."""


def check_bfl_width(name: str) -> None:
    """Refuse a BFL-layout Flux file diffusers cannot convert: ``convert_flux_transformer_checkpoint_to_diffusers``
    (diffusers 0.42) splits each single block's fused ``linear1`` at Flux.1's widths (3072 and
    4 x 3072) whatever the file's, so a transformer of another width fails there with a tensor-size error."""
    shapes = single_file_shapes(name)
    for prefix in ("", "model.diffusion_model."):
        shape = shapes.get(prefix + "img_in.weight")
        if shape is not None and prefix + "single_blocks.0.linear1.weight" in shapes and shape[0] != BFL_WIDTH:
            raise LoadError(
                f"{name!r} is a Flux transformer {shape[0]} wide in the original (BFL) layout, and diffusers converts "
                f"that layout only at Flux.1's width {BFL_WIDTH} (convert_flux_transformer_checkpoint_to_diffusers "
                "has it built in); save the transformer in the diffusers layout "
                "(FluxTransformer2DModel.save_pretrained) and load that file or folder instead"
            )


class FluxModel(TransformerPipelineModel):
    """Flux.1 (dev or schnell) through diffusers."""

    max_sequence_length: int = 512
    """T5 tokens of a prompt (diffusers' default for Flux)."""
    T5_TOKENIZER = "tokenizer_2"
    distilled_guidance: float = 3.5
    """The guidance-embedding input of a guidance-distilled transformer (Flux-dev's default)."""

    def __init__(self, pipe: Any, name: str) -> None:
        super().__init__(pipe, name)
        schedule = FlowSchedule.from_config(dict(pipe.scheduler.config), pipeline_sigmas="linspace")
        side = self.resolution // self.vae_factor
        self.schedule = schedule.for_image((side // 2) ** 2) if schedule.use_dynamic_shifting else schedule

    @classmethod
    def from_pretrained(
        cls, name: str, *, device: torch.device, dtype: torch.dtype, local_files_only: bool | None = None,
        variant: str | None = None, config: str | None = None,
    ) -> FluxModel:
        if name.lower().endswith(".safetensors") and Path(name).is_file():
            check_bfl_width(name)
        pipe = load_pipeline(FluxPipeline, name, device=device, dtype=dtype, local_files_only=local_files_only,
                             family="Flux", variant=variant, config=config)
        return cls(pipe, name)

    @property
    def resolution(self) -> int:
        return int(self.pipe.default_sample_size) * self.vae_factor

    @property
    def size_multiple(self) -> int:
        return self.vae_factor * 2  # latents pack into 2 x 2 patches

    def schedule_for(self, latent_size: tuple[int, int]) -> Schedule:
        base = self.schedule
        if not getattr(base, "use_dynamic_shifting", False):
            return base
        h, w = latent_size
        return base.for_image((h // 2) * (w // 2))  # type: ignore[attr-defined]

    @cached_property
    def fingerprint(self) -> str:
        pipe = self.pipe
        encoders = [pipe.text_encoder, pipe.text_encoder_2]
        return fingerprint(
            (pipe.transformer, pipe.vae, *encoders), dict(pipe.scheduler.config),
            (pipe.transformer.x_embedder.weight, pipe.transformer.proj_out.weight, pipe.vae.decoder.conv_out.weight,
             *(e.get_input_embeddings().weight for e in encoders)),
        )

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, device=self.device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        return embeds, pooled

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: PooledTextConditioning) -> torch.Tensor:
        b, c, h, w = x.shape
        packed = FluxPipeline._pack_latents(x.to(self.device, self.dtype), b, c, h, w)
        image_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, self.device, self.dtype)
        text_ids = torch.zeros(cond.embeds.shape[1], 3, device=self.device, dtype=self.dtype)
        guidance = None
        if self.pipe.transformer.config.guidance_embeds:
            guidance = torch.full((b,), float(self.distilled_guidance), device=self.device, dtype=torch.float32)
        out = self.pipe.transformer(
            hidden_states=packed,
            timestep=t.to(self.device, torch.float32).to(self.dtype) / 1000,  # the Flux pipeline feeds s = t / 1000
            guidance=guidance,
            pooled_projections=cond.pooled.to(self.dtype),
            encoder_hidden_states=cond.embeds.to(self.dtype),
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        return FluxPipeline._unpack_latents(out, h * self.vae_factor, w * self.vae_factor, self.vae_factor)
