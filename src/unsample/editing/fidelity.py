"""Can the model represent this image? The input's fidelity, said before an edit is trusted.

An edit keeps what it does not name at best at the autoencoder's floor: outside the mask an exact
inversion gives back decode(encode(x)). When that round trip already loses the image (a photograph
given to a model trained on flat shapes comes back as coloured blobs), every edit will look like the
reconstruction, whatever the method. So before editing, the input's own round trip is scored:

    autoencoder PSNR = PSNR(x, decode(encode(x)))     (8-bit pixels, the working size)

and the image is *representable* when that is at least a threshold (`unsample.defaults.
REPRESENTABLE_PSNR`, chosen on the bench: docs/edit_check.md, "Representability").

When the edit has the inversion's reconstruction for free (a source branch that replays the
inversion's own prompt, negative prompt and guidance: `branches.edit_latent`'s ``source_latent``),
its PSNR is scored too; an inexact method whose reconstruction falls more than
`RECONSTRUCTION_GAP_DB` below the autoencoder's floor is named, with an exact method that runs on
the model.

Cost: one decode when the caller has the image's latent already (an inversion encodes the image
first), one encode and one decode otherwise; no network evaluation. A model without an autoencoder
(a pixel-space model, whose "encoding" is an affine map) round-trips losslessly at 8 bits: its PSNR
is infinite, recorded as null, and the image is representable. Nothing here asks a model's family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unsample import defaults
from unsample.backends.base import Model
from unsample.errors import InputError
from unsample.images import psnr, tensor_to_pil
from unsample.methods.registry import available_methods, get_method

RECONSTRUCTION_GAP_DB = 3.0
"""How far (dB) below the autoencoder's floor an inexact inversion's reconstruction may fall before
the user is told to use an exact method. Measured (docs/edit_check.md, "Representability"; embedded
UNet model, 36 steps, 5 scenes): DDIM inverted and replayed unguided sits 0.0-0.3 dB below the floor,
at CFG 5 1.5-20.9 dB (median 12.6); EDICT 0.0. 3 dB (the error's power doubled beyond the floor's)
lies above the first and below most of the second."""


FIDELITY_KEY = "input_fidelity"
"""The key of `InputFidelity.to_json` in a sidecar, a batch record and an inversion's ``stats``."""

LOSSLESS_PSNR = 10 * math.log10(12 * 255**2)
"""The floor of a lossless round trip when a reconstruction is compared with it: the PSNR of 8-bit
rounding itself (uniform error of variance 1/12 grey level squared), 58.9 dB."""


@dataclass(frozen=True)
class InputFidelity:
    """How well the model keeps the input: its autoencoder's round trip and, when the edit produced
    it, the inversion's reconstruction (PSNR in dB against the input at the working size; None for
    a lossless round trip)."""

    autoencoder_psnr: float | None
    """PSNR of decode(encode(x)) against x; None when the round trip is lossless at 8 bits."""
    threshold: float
    """The representability threshold the image was judged by (dB)."""
    reconstruction_psnr: float | None = None
    """PSNR of the inversion's reconstruction against x, when the edit produced it (else None)."""
    method: str | None = None
    """The inversion method whose reconstruction was scored."""
    exact_method: str | None = None
    """An exact method to use instead, when an inexact one fell well below the floor (else None)."""

    @property
    def representable(self) -> bool:
        """The autoencoder keeps at least ``threshold`` dB of the image."""
        return self.autoencoder_psnr is None or self.autoencoder_psnr >= self.threshold

    @property
    def reconstruction_gap(self) -> float | None:
        """dB the reconstruction lies below the autoencoder's floor (None without a reconstruction)."""
        if self.reconstruction_psnr is None:
            return None
        floor = LOSSLESS_PSNR if self.autoencoder_psnr is None else self.autoencoder_psnr
        return max(0.0, floor - min(self.reconstruction_psnr, LOSSLESS_PSNR))

    def warnings(self) -> list[str]:
        """The lines to tell the user (none for a representable image reconstructed near its floor)."""
        lines = []
        if not self.representable:
            lines.append(f"warning: this model cannot represent this image well (its autoencoder keeps "
                         f"{self.autoencoder_psnr:.1f} dB); edits will look like the reconstruction")
        if self.exact_method is not None and self.reconstruction_psnr is not None:
            floor = "lossless" if self.autoencoder_psnr is None else f"{self.autoencoder_psnr:.1f} dB"
            lines.append(f"warning: the {self.method} inversion reconstructs this image at {self.reconstruction_psnr:.1f} dB, "
                         f"well below the autoencoder's {floor}; an exact method (--method {self.exact_method}) "
                         "reconstructs it at the floor")
        return lines

    def to_json(self) -> dict[str, Any]:
        """The sidecar's ``"input_fidelity"``: PSNRs rounded to 0.01 dB; null for a lossless round trip, and
        for a reconstruction not measured (``method`` null) or lossless (``method`` named)."""
        return {
            "autoencoder_psnr": _rounded(self.autoencoder_psnr),
            "threshold": self.threshold,
            "representable": self.representable,
            "reconstruction_psnr": _rounded(self.reconstruction_psnr),
            "method": self.method,
            "exact_method": self.exact_method,
        }


    @classmethod
    def from_json(cls, record: Any) -> InputFidelity:
        """Read back `to_json`'s record (an inversion file keeps one: it is checked like any input)."""
        if not isinstance(record, dict):
            raise InputError(f"an input_fidelity record must be a JSON object, got {type(record).__name__}")

        def db(key: str, optional: bool = True) -> float | None:
            value = record.get(key)
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"input_fidelity.{key} must be a finite number of dB{' or null' if optional else ''}, "
                                 f"got {value!r}")
            return float(value)

        names = {}
        for key in ("method", "exact_method"):
            value = record.get(key)
            if value is not None and value not in available_methods():
                raise InputError(f"input_fidelity.{key} {value!r} is not a registered method")
            names[key] = value
        threshold = db("threshold", optional=False)
        assert threshold is not None
        return cls(db("autoencoder_psnr"), threshold, db("reconstruction_psnr"), names["method"], names["exact_method"])


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 2)


def _pixels_uint8(pixels: torch.Tensor) -> np.ndarray:
    return np.asarray(tensor_to_pil(pixels.detach().float().cpu()))


def _latent_psnr(model: Model, pixels: np.ndarray, latent: torch.Tensor) -> float:
    with torch.no_grad():
        decoded = _pixels_uint8(model.decode_latent(latent.float()))
    return psnr(pixels, decoded)


def exact_method_for(model: Model) -> str | None:
    """An exact inversion method that runs on ``model`` (the default edit method first when it is one)."""
    names = [defaults.EDIT_METHOD] + [n for n in available_methods() if n != defaults.EDIT_METHOD]
    for name in names:
        method = get_method(name)
        if method.exact and (method.refuses is None or not method.refuses(model.schedule)):
            return name
    return None


def input_fidelity(
    model: Model,
    pixels: torch.Tensor,
    *,
    latent: torch.Tensor | None = None,
    reconstruction: torch.Tensor | None = None,
    method: str | None = None,
    threshold: float = defaults.REPRESENTABLE_PSNR,
) -> InputFidelity:
    """Score how well ``model`` keeps ``pixels`` ([1, 3, H, W] in [0, 1], the working size).

    ``latent`` is ``model.encode_image(pixels)`` when the caller has it (it saves the encode);
    ``reconstruction`` the latent of the inversion's reconstruction, made by ``method``, when the
    caller has it for free (it is never made here).
    """
    if pixels.dim() != 4 or pixels.shape[:2] != (1, 3):
        raise InputError(f"input_fidelity takes one image [1, 3, H, W] in [0, 1], got shape {tuple(pixels.shape)}")
    if not math.isfinite(threshold):
        raise InputError(f"the representability threshold must be a finite number of dB, got {threshold!r}")
    if reconstruction is not None and method is None:
        raise InputError("a reconstruction is scored with the method that made it; pass method")
    x = _pixels_uint8(pixels)
    if latent is None:
        with torch.no_grad():
            latent = model.encode_image(pixels)
    floor = _latent_psnr(model, x, latent)
    recon = None if reconstruction is None else _latent_psnr(model, x, reconstruction)
    fidelity = InputFidelity(
        autoencoder_psnr=floor if math.isfinite(floor) else None, threshold=float(threshold),
        reconstruction_psnr=recon, method=method,
    )
    gap = fidelity.reconstruction_gap
    if method is not None and gap is not None and gap > RECONSTRUCTION_GAP_DB and not get_method(method).exact:
        fidelity = InputFidelity(fidelity.autoencoder_psnr, fidelity.threshold, fidelity.reconstruction_psnr, method,
                                 exact_method_for(model))
    return fidelity
