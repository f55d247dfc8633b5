"""What every API call shares: argument checks, the prompt check, progress bars, naming a bad step."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from unsample.api.quiet import PhaseProgress
from unsample.backends.base import Model
from unsample.backends.vocabulary import UnknownWordsWarning, prompt_problems
from unsample.core.classifier import ClassifierGuidance
from unsample.core.schedule import TimestepGrid
from unsample.editing.spec import GUIDANCE_BOUNDS, MAX_GUIDANCE
from unsample.errors import InputError, NonFiniteError, SizeWarning
from unsample.images import Fit, canonical_fit, fit_image, load_image, size_warning
from unsample.inversion import Inversion
from unsample.methods.base import StepCallback

__all__ = ["MAX_GUIDANCE", "ImageSource", "Output", "UnknownWords", "check_guidance", "check_prompt_words",
           "check_prompts", "prepare_image"]

Output = Literal["pil", "latent", "result"]
ImageSource = Any
"""A path, a PIL image, a numpy array (H x W x 3 uint8 or float in [0, 1]) or a tensor ([3, H, W] in [0, 1])."""
UnknownWords = Literal["warn", "refuse", "checked"]
"""What a call does with words the model's tokenizer does not know: warn (`UnknownWordsWarning`)
and go on, refuse (InputError), or nothing because the caller has checked the prompts already."""


def check_guidance(value: Any, name: str, allow_none: bool = False) -> None:
    """A finite classifier-free guidance scale in [0, MAX_GUIDANCE]; one-line error otherwise."""
    if value is None and allow_none:
        return
    GUIDANCE_BOUNDS.check(name, value)


def check_prompt_words(model: Model, prompt: str, *, allow: bool = True) -> list[str]:
    """The words of ``prompt`` that ``model``'s tokenizer does not know (they would be dropped).

    A prompt longer than the text encoder's window is said the same way (its tail would be cut).

    When there are any, ``allow=True`` warns with `UnknownWordsWarning` (from
    ``unsample.backends.vocabulary``) and returns them; ``allow=False`` raises InputError. The
    message is one line naming the words and, for a closed vocabulary, the words the model knows.
    """
    if not isinstance(prompt, str):
        raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
    overflow, words, unknown = prompt_problems(model, prompt)
    for message in (overflow, unknown):
        if message is not None:
            if not allow:
                raise InputError(message)
            warnings.warn(message, UnknownWordsWarning, stacklevel=2)
    return words


def check_prompts(model: Model, prompts: list[str | None], unknown_words: UnknownWords) -> None:
    """Each distinct prompt of a call checked once (None and empty prompts need no check)."""
    if unknown_words not in ("warn", "refuse", "checked"):
        raise InputError(f"unknown_words={unknown_words!r} is not warn, refuse or checked")
    if unknown_words == "checked":
        return
    for text in dict.fromkeys(p for p in prompts if p):
        check_prompt_words(model, text, allow=unknown_words == "warn")


def prepare_image(model: Model, image: ImageSource, fit: Fit = "area") -> torch.Tensor:
    """A user image -> [1, 3, H, W] in [0, 1], sized by `unsample.images`' rule."""
    return prepare_input(model, image, fit, warn=False).pixels


@dataclass(frozen=True)
class PreparedInput:
    """A user image as an inversion takes it: the pixels at the working size, the input at its
    own size when the sizing kept the whole image at another size, and the sizes."""

    pixels: torch.Tensor
    """[1, 3, H, W] in [0, 1] at the working size."""
    original: torch.Tensor | None
    """[1, 3, H0, W0] uint8: the input at its own size (fit "area" or "native" and a size that
    differs from the working size), else None."""
    sizing: dict[str, Any]
    """{"fit": rule, "input": [W0, H0], "working": [W, H]} (width, height)."""


def prepare_input(model: Model, image: ImageSource, fit: Fit = "area", *, warn: bool = True) -> PreparedInput:
    """A user image sized by `unsample.images`' rule, with what an edit needs to write it back at
    its own size; a working size far above the model's native area warns (`SizeWarning`)."""
    rule = canonical_fit(fit)
    pil = load_image(image)
    fitted = fit_image(pil, model.resolution, model.size_multiple, rule)
    message = size_warning(fitted.size, model.resolution)
    if warn and message is not None:
        warnings.warn(message, SizeWarning, stacklevel=3)
    original = None
    if rule != "crop" and fitted.size != pil.size:
        original = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)[None].contiguous()
    return PreparedInput(model.image_to_tensor(fitted), original,
                         {"fit": rule, "input": list(pil.size), "working": list(fitted.size)})


def latent_size(latent: torch.Tensor) -> tuple[int, int]:
    return int(latent.shape[-2]), int(latent.shape[-1])


@contextmanager
def progress_bar(enabled: bool, total: int, desc: str) -> Iterator[StepCallback | None]:
    """A phase's progress advanced by the sampler's step callback (None when disabled): a bar on a
    terminal, one line when the phase ends otherwise (`unsample.api.quiet.PhaseProgress`)."""
    if not enabled:
        yield None
        return
    bar = PhaseProgress(total, desc)
    finished = False
    try:
        yield lambda i, x: bar.update(1)
        finished = True
    finally:
        bar.close(finished)


@contextmanager
def naming_the_step(grid: TimestepGrid, phase: Literal["inverting", "sampling", "editing"], method: str) -> Iterator[None]:
    """A `NonFiniteError` inside says at which step (1-based, in the phase's own order) it happened:
    inversion walks the grid from its last position (the image) to its first (the noise)."""
    try:
        yield
    except NonFiniteError as err:
        if err.time_label is None:
            raise
        labels = torch.as_tensor(grid.timesteps, dtype=torch.float64)
        position = int((labels - err.time_label).abs().argmin())
        step = len(grid) - position if phase == "inverting" else position + 1
        raise NonFiniteError(f"{phase} with {method}, step {step} of {len(grid)}: {err}", time_label=None) from None


def classifier_record(guidance: ClassifierGuidance | None) -> dict[str, Any]:
    """What an inversion records of the classifier guidance it was made with."""
    if guidance is None:
        return {}
    return {"classifier_guidance": {"scale": float(guidance.scale), "labels": [int(v) for v in guidance.labels.flatten()]}}


def check_classifier(inversion: Inversion, guidance: ClassifierGuidance | None, what: str) -> None:
    """An inversion made with classifier guidance replays exactly only with a classifier again."""
    made = inversion.stats.get("classifier_guidance")
    if made and guidance is None:
        raise InputError(
            f"this inversion was made with classifier guidance (scale {made['scale']:g}, labels {made['labels']}); "
            f"pass classifier_guidance to {what} (the file holds no classifier)"
        )
