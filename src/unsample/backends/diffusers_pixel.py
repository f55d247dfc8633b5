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
A folder may name its classes in ``class_labels.json`` ({"names": [...], "unconditional": k},
as the embedded pixel model does): a class's name is then a prompt too, and a declared
unconditional class k (trained by label dropout) is what the empty prompt means and what the
negative branch of classifier-free guidance uses. A UNet trained without a null class has no
unconditional branch, so classifier-free guidance (guidance != 1) is refused with that reason. A UNet whose output has twice the image's channels
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
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

from unsample.backends.base import Model
from unsample.backends.diffusers_common import fingerprint, is_flat_unet_folder, resolve_local_files_only, resolve_variant
from unsample.core.schedule import NoiseSchedule
from unsample.errors import InputError


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


CLASS_LABELS_FILE = "class_labels.json"


@dataclass(frozen=True)
class ClassNames:
    """The names of a class-conditional UNet's classes and its unconditional class, if any."""

    names: tuple[str, ...] = ()
    unconditional: int | None = None

    @classmethod
    def read(cls, folder: Path, num_class_embeds: int | None) -> ClassNames:
        path = folder / CLASS_LABELS_FILE
        if num_class_embeds is None or not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            names = tuple(str(n) for n in raw.get("names", ()))
            null = raw.get("unconditional")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
            raise InputError(f"{path} is not a JSON object with 'names' and 'unconditional'; fix or remove it") from None
        if null is not None and (not isinstance(null, int) or not 0 <= null < num_class_embeds):
            raise InputError(f"{path}: unconditional={null!r} is not a class index 0..{num_class_embeds - 1}")
        if len(names) > num_class_embeds:
            raise InputError(f"{path} names {len(names)} classes but the UNet has {num_class_embeds}")
        return cls(names, null)


@dataclass
class PixelPipeline:
    """The two parts the backend uses, however the folder was laid out, and the class names."""

    unet: Any
    scheduler: Any
    layout: str
    classes: ClassNames = ClassNames()


class PixelDiffusionModel(Model):
    """A pixel-space UNet2DModel through diffusers."""

    def __init__(self, pipe: PixelPipeline, name: str) -> None:
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
            raise InputError(
                f"could not load a pixel-space UNet2DModel from {name!r} ({first}); give a DDPM/DDIM pipeline "
                "folder or a folder with the UNet's config.json and weights at its root"
            ) from err
        folder = Path(name)
        if folder.is_dir():
            pipe.classes = ClassNames.read(folder, pipe.unet.config.num_class_embeds)
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
        """Classes of a class-conditional UNet (None: unconditional), its unconditional class included."""
        n = self.pipe.unet.config.num_class_embeds
        return None if n is None else int(n)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes' names from the folder's class_labels.json (empty when it has none)."""
        return self.pipe.classes.names

    def class_index(self, label: str) -> int:
        """A class given by name or index; a one-line error naming the choices otherwise."""
        text = label.strip()
        n = self.num_classes
        if n is not None and text.isdigit() and 0 <= int(text) < n:
            return int(text)
        if text in self.class_names:
            return self.class_names.index(text)
        named = f" or one of {', '.join(self.class_names)}" if self.class_names else ""
        raise InputError(f"this pixel-space model is conditioned on a class: give its index 0..{(n or 1) - 1}{named} "
                         f"as the prompt, not {label!r}")

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
            raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
        text = prompt.strip()
        n = self.num_classes
        if n is None:
            if text:
                raise InputError(f"this pixel-space model is unconditional: give the empty prompt, not {prompt!r}")
            return ClassConditioning(torch.tensor([-1], device=self.device))
        null = self.pipe.classes.unconditional
        if not text and null is not None:
            return ClassConditioning(torch.tensor([null], device=self.device))
        return ClassConditioning(torch.tensor([self.class_index(prompt)], device=self.device))

    def encode_negative(self, prompt: str) -> ClassConditioning:
        if self.pipe.classes.unconditional is not None:
            return self.encode_prompt(prompt)
        raise InputError(
            "this pixel-space UNet has no unconditional branch, so classifier-free guidance cannot run on it; "
            "use guidance 1"
        )

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: ClassConditioning) -> torch.Tensor:
        labels = cond.labels.to(self.device) if self.num_classes is not None else None
        out = self.pipe.unet(x.to(self.device, self.dtype), t.to(self.device), class_labels=labels).sample
        channels = x.shape[1]
        return out[:, :channels] if out.shape[1] == 2 * channels else out  # a learned variance rides along
