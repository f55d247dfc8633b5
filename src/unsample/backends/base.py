"""The interface every model family provides to the methods and the API.

A backend turns images into latents and back, prompts into conditionings, and exposes its
denoising network as ``model_fn(x, t, cond)`` plus its schedule (a `Schedule`). Nothing else about the
model leaks into the methods, so SDXL (a conditioning with pooled embeddings and time ids) or a
flow-matching model (a different schedule object) is a new backend, not a change to the methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from PIL import Image

from unsample.backends.vocabulary import known_vocabulary, unknown_words
from unsample.core.classifier import ClassifierGuidance
from unsample.core.denoiser import CallCounter, Denoiser
from unsample.core.rows import capped
from unsample.core.schedule import Schedule


class Model(ABC):
    """A loaded diffusion model, as `unsample.load` returns it."""

    name: str
    """What the user passed to `unsample.load` (hub id, folder) or "embedded"."""
    schedule: Schedule
    device: torch.device
    dtype: torch.dtype

    @property
    @abstractmethod
    def resolution(self) -> int:
        """The image side the model was trained at, in pixels."""

    @property
    @abstractmethod
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE factor times UNet downsampling)."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A short digest identifying the weights and configs (checked when an inversion is reused)."""

    @abstractmethod
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> scaled latents (float32, the posterior mean)."""

    @abstractmethod
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images [B, 3, H, W] in [0, 1] (float32)."""

    @abstractmethod
    def encode_prompt(self, prompt: str) -> Any:
        """A prompt -> a conditioning (an object with ``cat``) for `model_fn`."""

    def encode_negative(self, prompt: str) -> Any:
        """The unconditional (negative) branch's conditioning for ``prompt``: its encoding, unless the
        pipeline itself uses something else (SDXL's zeros for an empty negative prompt)."""
        return self.encode_prompt(prompt)

    @abstractmethod
    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The denoising network's raw output (eps, v or x0 per ``schedule.prediction_type``)."""

    max_rows: int | None = None
    """Most rows of one network call made through `denoiser` (`unsample.core.rows`): a larger
    call is split into chunks of at most this many rows, which bounds peak memory (None: no cap).
    ``unsample batch --max-rows`` sets it."""

    vae_tiling: bool | None = None
    """The VAE's tiled encode and decode: forced on (True) or off (False), or automatic (None:
    above `unsample.backends.diffusers_common.VAE_TILE_LATENT_SIDE` latent cells a side)."""

    supports_attention_control: bool = False
    """Prompt-to-prompt control and attention masks install processors on a UNet's
    cross-attention; backends whose network has it say so."""

    def schedule_for(self, latent_size: tuple[int, int]) -> Schedule:
        """The schedule whose grids fit latents of ``latent_size`` (h, w). Most families have one
        grid whatever the size; a flow model with dynamic shifting (Flux) shifts it by the image's
        sequence length."""
        return self.schedule

    def denoiser(
        self,
        prompt: str,
        *,
        guidance: float = 1.0,
        negative_prompt: str = "",
        dtype: torch.dtype = torch.float32,
        counter: CallCounter | None = None,
        classifier: ClassifierGuidance | None = None,
    ) -> Denoiser:
        """The Denoiser for a prompt pair; the unconditional branch is built only when guided.
        ``classifier`` adds classifier guidance (`unsample.core.classifier`)."""
        cond = self.encode_prompt(prompt)
        uncond = self.encode_negative(negative_prompt) if guidance != 1.0 else None
        return Denoiser(
            model=capped(self.model_fn, self.max_rows),
            schedule=self.schedule,
            cond=cond,
            uncond=uncond,
            guidance=guidance,
            dtype=dtype,
            counter=counter or CallCounter(),
            classifier=classifier,
        )

    def image_to_tensor(self, image: Image.Image) -> torch.Tensor:
        """A PIL image -> [1, 3, H, W] float32 in [0, 1] on the model's device."""

        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(self.device)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` the model's tokenizer maps to its unknown token ([] without a tokenizer).

        Such words reach the text encoder as the unknown token only, so they are in effect dropped.
        """

        tokenizer = getattr(getattr(self, "pipe", None), "tokenizer", None)
        return [] if tokenizer is None else unknown_words(tokenizer, prompt)

    def vocabulary(self) -> list[str] | None:
        """The sorted words a closed word-level tokenizer knows; None for open (BPE) vocabularies."""

        tokenizer = getattr(getattr(self, "pipe", None), "tokenizer", None)
        return None if tokenizer is None else known_vocabulary(tokenizer)

    def prompt_window(self, prompt: str) -> tuple[int, int]:
        """(tokens the prompt has, tokens the text encoder reads), start and end tokens included;
        (0, 0) without a tokenizer. Tokens beyond the window are cut by the encoder."""
        tokenizer = getattr(getattr(self, "pipe", None), "tokenizer", None)
        if tokenizer is None:
            return 0, 0
        return len(tokenizer(prompt, truncation=False).input_ids), int(tokenizer.model_max_length)
