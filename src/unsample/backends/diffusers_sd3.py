"""Backend: Stable Diffusion 3 / 3.5 pipelines loaded with diffusers (rectified flow).

``StableDiffusion3Pipeline.from_pretrained`` loads the parts; the pipeline's own
``encode_prompt`` runs its three text encoders (CLIP-L, CLIP-G and the optional T5: a folder
saved without T5 loads without it, as diffusers allows) into per-token embeddings and a pooled
projection; the MMDiT transformer predicts the velocity v = eps - x0 of
x_s = (1 - s) x0 + s eps at time label t = 1000 s; the VAE has a ``shift_factor`` as well as a
``scaling_factor``. The scheduler's config becomes a `FlowSchedule` with SD3's way of spacing the
sigmas (diffusers' default ``set_timesteps``).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.loaders.single_file_utils import is_t5_in_single_file

from unsample.backends.diffusers_common import (
    LoadError,
    PooledTextConditioning,
    TransformerPipelineModel,
    fingerprint,
    is_single_file,
    load_pipeline,
    single_file_shapes,
)
from unsample.core.flow_schedule import FlowSchedule
from unsample.errors import InputError


def _saved_without(name: str, part: str) -> bool:
    """The folder's model_index.json lists ``part`` as null (saved without it)."""
    index = Path(name) / "model_index.json"
    if not index.is_file():
        return False
    entry = json.loads(index.read_text(encoding="utf-8")).get(part)
    return isinstance(entry, list) and entry[0] is None


def _has_t5(file: str) -> bool:
    """Single-file checkpoint ``file`` carries a T5 encoder (SD3's ``text_encoders.t5xxl.*``, as diffusers detects it)."""

    return bool(is_t5_in_single_file(set(single_file_shapes(file))))


def _saved_sequence_length(folder: Path, default: int) -> int:
    """The T5 token count a folder's ``unsample.json`` records (the embedded flow model trains with
    0 zero-filled T5 tokens), else ``default``."""
    path = folder / "unsample.json"
    if not path.is_file():
        return default
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("max_sequence_length", default)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise InputError(f"{path} is not a JSON object; fix or remove it") from None
    if not isinstance(value, int) or not 0 <= value <= 512:
        raise InputError(f"{path}: max_sequence_length={value!r} must be an integer in 0..512")
    return value


class StableDiffusion3Model(TransformerPipelineModel):
    """SD3 / SD3.5 through diffusers."""

    max_sequence_length: int = 256
    """T5 tokens of a prompt (diffusers' default for SD3; a folder's unsample.json may say otherwise)."""
    T5_TOKENIZER = "tokenizer_3"

    def __init__(self, pipe: Any, name: str) -> None:
        super().__init__(pipe, name)
        self.schedule = FlowSchedule.from_config(dict(pipe.scheduler.config), pipeline_sigmas="timesteps")

    @classmethod
    def from_pretrained(
        cls, name: str, *, device: torch.device, dtype: torch.dtype, local_files_only: bool | None = None,
        variant: str | None = None, config: str | None = None,
    ) -> StableDiffusion3Model:
        # a single file's parts follow its config folder (which may be saved without T5)
        folder = config if config is not None and is_single_file(name) else name
        without_t5 = {"text_encoder_3": None, "tokenizer_3": None} if _saved_without(folder, "text_encoder_3") else {}
        if without_t5 and name.lower().endswith(".safetensors") and Path(name).is_file() and _has_t5(name):
            raise LoadError(
                f"{name!r} carries a T5 text encoder but its config folder {config!r} was saved without one "
                "(text_encoder_3 is null), so diffusers has no T5 config to build it from; give the config folder "
                "of an SD3 pipeline with T5"
            )
        pipe = load_pipeline(StableDiffusion3Pipeline, name, device=device, dtype=dtype,
                             local_files_only=local_files_only, family="Stable Diffusion 3", variant=variant, config=config, **without_t5)
        model = cls(pipe, name)
        model.max_sequence_length = _saved_sequence_length(Path(config or name), cls.max_sequence_length)
        return model

    @property
    def resolution(self) -> int:
        return int(self.pipe.transformer.config.sample_size) * self.vae_factor

    @property
    def size_multiple(self) -> int:
        return self.vae_factor * int(self.pipe.transformer.config.patch_size)

    @cached_property
    def fingerprint(self) -> str:
        pipe = self.pipe
        encoders = [e for e in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3) if e is not None]
        return fingerprint(
            (pipe.transformer, pipe.vae, *encoders), dict(pipe.scheduler.config),
            (pipe.transformer.pos_embed.proj.weight, pipe.transformer.proj_out.weight, pipe.vae.decoder.conv_out.weight,
             *(e.get_input_embeddings().weight for e in encoders)),
        )

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length,
        )
        return embeds, pooled

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: PooledTextConditioning) -> torch.Tensor:
        # the transformer takes the time label t = 1000 s itself (the SD3 pipeline passes the scheduler's timesteps)
        return self.pipe.transformer(
            hidden_states=x.to(self.device, self.dtype),
            timestep=t.to(self.device, torch.float32),
            encoder_hidden_states=cond.embeds.to(self.dtype),
            pooled_projections=cond.pooled.to(self.dtype),
            return_dict=False,
        )[0]
