"""Backend: pixel-space diffusion, diffusers ``UNet2DModel`` (DDPM / DDIM pipelines).

There is no autoencoder: the "latent" the methods invert is the image itself in [-1, 1]
(``encode_image`` is 2 x - 1, ``decode_latent`` its inverse, clamped). Two folder layouts load:
- the pipeline layout (``model_index.json`` with ``unet/`` and ``scheduler/`` folders), through
  ``DDPMPipeline`` / ``DDIMPipeline``;
- the flat layout of google/ddpm-cifar10-32 and its kin, the UNet's ``config.json`` and weights
  at the folder's root beside ``scheduler_config.json``, read part by part.

Conditioning is a class label or nothing:
- an unconditional UNet takes the empty prompt "" only;
- a class-conditional one (``num_class_embeds``) takes the class index as the prompt, e.g. "3".
A UNet trained without a null class has no unconditional branch, so classifier-free guidance
(guidance != 1) is refused with that reason. A UNet whose output has twice the image's channels
(a learned variance, guided-diffusion's "learned_range") gives its first half, the eps
prediction, to the methods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from unsample.backends.base import Model
from unsample.backends.diffusers_common import fingerprint, resolve_local_files_only, resolve_variant


@dataclass(frozen=True)
class ClassConditioning:
    """Class labels [B] (long); -1 for an unconditional model's empty prompt."""

    labels: torch.Tensor

    def cat(self, other: ClassConditioning) -> ClassConditioning:
        return ClassConditioning(torch.cat([self.labels, other.labels]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"labels": self.labels}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ClassConditioning:
        return cls(tensors["labels"])


@dataclass
class PixelPipeline:
    """The two parts the backend uses, however the folder was laid out."""

    unet: Any
    scheduler: Any
    layout: str


def is_flat_unet_folder(folder: Path) -> bool:
    """The UNet's config.json sits at the folder's root (google/ddpm-cifar10-32's layout)."""
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name") == "UNet2DModel"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


class PixelDiffusionModel(Model):
    """A pixel-space UNet2DModel through diffusers."""

    def __init__(self, pipe: PixelPipeline, name: str) -> None:
        from unsample.core.schedule import NoiseSchedule

        self.pipe = pipe
        self.name = name
        self.schedule = NoiseSchedule.from_config(dict(pipe.scheduler.config))
        self.device = pipe.unet.device
        self.dtype = pipe.unet.dtype

    @classmethod
    def from_pretrained(
        cls, name: str, *, device: torch.device, dtype: torch.dtype, local_files_only: bool | None = None,
        variant: str | None = None,
    ) -> PixelDiffusionModel:
        from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

        offline = resolve_local_files_only(name, local_files_only)
        variant = resolve_variant(name, variant)
        try:
            if is_flat_unet_folder(Path(name)):
                unet = UNet2DModel.from_pretrained(name, torch_dtype=dtype, local_files_only=offline, variant=variant)
                scheduler = DDPMScheduler.from_pretrained(name, local_files_only=offline)
                pipe = PixelPipeline(unet, scheduler, "flat")
            else:
                loaded = DiffusionPipeline.from_pretrained(name, dtype=dtype, local_files_only=offline, variant=variant)
                pipe = PixelPipeline(loaded.unet, loaded.scheduler, "pipeline")
        except (OSError, ValueError, EnvironmentError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"could not load a pixel-space UNet2DModel from {name!r} ({first}); give a DDPM/DDIM pipeline "
                "folder or a folder with the UNet's config.json and weights at its root"
            ) from err
        pipe.unet.to(device).requires_grad_(False).eval()
        return cls(pipe, name)

    @property
    def resolution(self) -> int:
        size = self.pipe.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional UNet (None: unconditional)."""
        n = self.pipe.unet.config.num_class_embeds
        return None if n is None else int(n)

    @cached_property
    def fingerprint(self) -> str:
        unet = self.pipe.unet
        return fingerprint((unet,), dict(self.pipe.scheduler.config), (unet.conv_in.weight, unet.conv_out.weight))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return image.to(self.device, torch.float32) * 2 - 1

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return ((latent.to(self.device, torch.float32) + 1) / 2).clamp(0, 1)

    def encode_prompt(self, prompt: str) -> ClassConditioning:
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
        text = prompt.strip()
        n = self.num_classes
        if n is None:
            if text:
                raise ValueError(f"this pixel-space model is unconditional: give the empty prompt, not {prompt!r}")
            return ClassConditioning(torch.tensor([-1], device=self.device))
        if not text.isdigit() or not 0 <= int(text) < n:
            raise ValueError(f"this pixel-space model is conditioned on a class: give its index 0..{n - 1} as the "
                             f"prompt, not {prompt!r}")
        return ClassConditioning(torch.tensor([int(text)], device=self.device))

    def encode_negative(self, prompt: str) -> ClassConditioning:
        raise ValueError(
            "this pixel-space UNet has no unconditional branch, so classifier-free guidance cannot run on it; "
            "use guidance 1"
        )

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: ClassConditioning) -> torch.Tensor:
        labels = cond.labels.to(self.device) if self.num_classes is not None else None
        out = self.pipe.unet(x.to(self.device, self.dtype), t.to(self.device), class_labels=labels).sample
        channels = x.shape[1]
        return out[:, :channels] if out.shape[1] == 2 * channels else out  # a learned variance rides along
