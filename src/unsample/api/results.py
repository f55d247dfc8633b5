"""What the API's calls return: one result type per call, carrying the latent, the cost and, for
an edit, the image (the input's own pixels pasted back outside the mask), the mask, its overlay,
the inversion it started from and its spec."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from unsample.api.common import Output
from unsample.backends.base import Model
from unsample.editing.branches import EditResult
from unsample.editing.check import CheckResult
from unsample.editing.fidelity import InputFidelity
from unsample.editing.ladder import LadderResult
from unsample.editing.masks import overlay
from unsample.editing.paste import PasteBack, paste_back
from unsample.editing.spec import EditSpec
from unsample.errors import InputError
from unsample.images import tensor_to_pil
from unsample.inversion import Inversion


@dataclass
class Sample:
    """One replay of a sampler: the image latent it produced and what it cost."""

    latent: torch.Tensor
    nfe: int
    model_calls: int
    seconds: float
    start_step: int
    prompt: str
    guidance: float
    branches: int = 1  # images per evaluation: 2 when source and target run together
    image: Image.Image | None = None
    """The decoded latent (filled by ``output="result"`` and ``"pil"``)."""

    @property
    def network_evaluations(self) -> int:
        """Network function evaluations over all branches (``nfe`` counts one branch)."""
        return self.nfe * self.branches


@dataclass
class EditSample(Sample):
    """An edit: the sample, the mask it was confined to ([h, w] bool at latent resolution, or
    None), where the mask came from, and the source prompt. ``nfe`` includes the mask's calls
    and counts every branch: it is the edit's whole network cost."""

    mask: torch.Tensor | None = None
    mask_source: str = "none"
    source_prompt: str = ""
    mask_nfe: int = 0
    """Network evaluations of the noise mask (DiffEdit: 2 prompts x K draws, x 2 with CFG)."""
    mask_overlay: Image.Image | None = None
    """The mask drawn over the autoencoder's reconstruction of the source (``output="result"``)."""
    inversion: Inversion | None = None
    """The inversion the edit resumed (made first when the edit was given an image)."""
    spec: EditSpec | None = None
    """Every setting of the edit."""
    check: CheckResult | None = None
    """The model's judgement of the edit (``spec.check``), or None."""
    input_fidelity: InputFidelity | None = None
    """How well the model keeps the input image (``spec.fidelity``; `unsample.editing.fidelity`): None
    when off, or for an inversion file saved before inversions kept the input's pixels."""
    paste: PasteBack | None = None
    """Whether ``image`` took the input's own pixels outside the mask (``spec.paste_back``), and
    why not; None when no image was made (``output="latent"``)."""
    decoded: Image.Image | None = None
    """The decoded latent before paste-back (``image`` is this one when paste-back was not applied)."""
    ladder: LadderResult | None = None
    """The recipes the edit tried (`unsample.editing.ladder`), the one that took, the budget and the spend."""
    sizes: dict[str, Any] | None = None
    """{"fit": rule, "input": [W, H], "working": [W, H], "output": [W, H]} (width, height): the
    input image's size, the size the model edited it at and the size of ``image``."""
    working_image: Image.Image | None = None
    """The edit at the working size, pasted back (what the check judged); ``image`` is this one
    unless the edit was written back at the input's own size."""
    earlier_evaluations: int = 0
    """Network evaluations of the ladder's earlier attempts (counted in ``network_evaluations``)."""
    edit_result: EditResult | None = field(default=None, repr=False)
    """The editing loop's own result (both branches' latents)."""

    @property
    def network_evaluations(self) -> int:
        """The edit's whole network cost: every branch's evaluations plus the mask's and the check's."""
        return (self.nfe * self.branches + self.mask_nfe + (self.check.evaluations if self.check is not None else 0)
                + self.earlier_evaluations)

    @property
    def mask_area(self) -> float | None:
        """The share of latent cells the edit could change (None without a mask)."""
        return None if self.mask is None else round(float(self.mask.float().mean()), 4)


def present(model: Model, sample: Sample, output: Output) -> Any:
    """The sample as ``output`` asks: the latent, the decoded image, or the result with both (an
    edit's also with its mask overlay)."""
    if output not in ("pil", "latent", "result"):
        raise InputError(f"output={output!r} is not supported; use pil, latent or result")
    if output == "latent":
        return sample.latent
    if isinstance(sample, EditSample):
        if sample.image is None:
            decode_and_paste(model, sample)
    else:
        sample.image = tensor_to_pil(model.decode_latent(sample.latent.float()))
    if output == "pil":
        return sample.image
    if isinstance(sample, EditSample) and sample.mask is not None and sample.inversion is not None:
        source = tensor_to_pil(model.decode_latent(sample.inversion.image_latent.float()))
        sample.mask_overlay = overlay(source, sample.mask)
    return sample


def decode_and_paste(model: Model, sample: EditSample) -> None:
    """Decode the edit into ``sample.image`` and paste the input's pixels back outside its mask."""
    sample.image = tensor_to_pil(model.decode_latent(sample.latent.float()))
    _paste(sample)


def encode_pil(model: Model, image: Image.Image) -> torch.Tensor:
    """An RGB image at the working size -> the model's latent of it [1, C, h, w] (float32)."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        return model.encode_image(pixels.to(model.device)).float()


def _paste(sample: EditSample) -> None:
    """Paste the input's own pixels back outside the edit's mask (`unsample.editing.paste`) when the
    spec asks and there is something to paste; record in ``sample.paste`` what was done and why."""
    assert sample.image is not None
    sample.decoded = sample.image
    seam = sample.spec.paste_seam if sample.spec is not None else 0
    reason = _no_paste_reason(sample)
    if reason:
        sample.paste = PasteBack(applied=False, seam=seam, reason=reason)
        return
    assert sample.inversion is not None and sample.inversion.pixels is not None and sample.mask is not None
    source = sample.inversion.pixels[0].permute(1, 2, 0).numpy()
    decoded = np.asarray(sample.image)
    if decoded.shape != source.shape:
        raise InputError(f"the edit decoded to {decoded.shape[1]} x {decoded.shape[0]} pixels but its inversion "
                         f"holds the input at {source.shape[1]} x {source.shape[0]}: nothing to paste back at one "
                         "size; edit with paste_back=False")
    sample.image = Image.fromarray(paste_back(decoded, source, sample.mask, seam))
    sample.paste = PasteBack(applied=True, seam=seam)


def _no_paste_reason(sample: EditSample) -> str:
    """Why paste-back does not apply to ``sample`` (empty: it applies)."""
    if sample.spec is None or not sample.spec.paste_back:
        return "paste_back is off: the image is the decoded edit"
    if sample.mask is None:
        return "the edit has no mask: every pixel may change, nothing to paste back"
    if bool(sample.mask.all()):
        return "the mask covers every latent cell: nothing outside it to paste back"
    pixels = sample.inversion.pixels if sample.inversion is not None else None
    if pixels is None:
        return ("the inversion holds no input pixels (a file saved before inversions kept them): the image is the "
                "decoded edit; invert the image again to paste back")
    if pixels.shape[0] != 1:
        return f"the inversion holds {pixels.shape[0]} images: paste-back takes one"
    return ""


def to_output_size(sample: EditSample) -> None:
    """The edit at the size ``spec.output_size`` asks: at the input's own size ("input") when the
    inversion kept the input at another size (the decoded edit resized by Lanczos, then the input's
    own pixels pasted back outside the mask, the seam scaled with the image), else as edited.
    Records the three sizes in ``sample.sizes``."""
    assert sample.image is not None and sample.inversion is not None and sample.spec is not None
    inversion, spec = sample.inversion, sample.spec
    sample.working_image = sample.image
    working = list(sample.image.size)
    sizing = inversion.stats.get("sizing", {})
    original = inversion.original
    if spec.output_size == "input" and original is not None and original.shape[0] == 1:
        target = (int(original.shape[-1]), int(original.shape[-2]))
        decoded = sample.decoded if sample.decoded is not None else sample.image
        enlarged = decoded.resize(target, Image.Resampling.LANCZOS)
        if sample.paste is not None and sample.paste.applied and sample.mask is not None:
            seam = round(spec.paste_seam * math.sqrt(target[0] * target[1] / (working[0] * working[1])))
            source = original[0].permute(1, 2, 0).numpy()
            sample.image = Image.fromarray(paste_back(np.asarray(enlarged), source, sample.mask, seam))
            sample.paste = PasteBack(applied=True, seam=seam)
        else:
            sample.image = enlarged
    sample.sizes = {"fit": sizing.get("fit"), "input": list(sizing.get("input", working)), "working": working,
                    "output": list(sample.image.size)}
