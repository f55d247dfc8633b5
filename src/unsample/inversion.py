"""`Inversion`: the result of inverting one image, and its file format.

A file is one ``.safetensors`` holding the tensors (``trajectory``, ``image_latent``, the
method's ``extra.*`` tensors and, when known, ``pixels``: the inverted image at the working size
as uint8, which an edit pastes back outside its mask; files written before it load without; and
``original``: the input at its own size when that differs from the working size, so an edit is
written back at the photo's own size) and,
under the metadata key ``"unsample"``, a JSON object with every parameter, the cost and a
SHA-256 of the tensor bytes and of that metadata (so an edited prompt is caught like an edited
tensor). Loading never unpickles; it checks the format name and version, the digest and the
pixels' shape, and `Inversion.check_model` checks that the model an inversion is replayed with
is the one it was made with.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unsample.core.schedule import TimestepGrid
from unsample.errors import InputError, InversionFileError
from unsample.images import MAX_PIXELS
from unsample.methods.registry import get_method

FORMAT = "unsample.inversion"
FORMAT_VERSION = 2
"""2: the digest covers the metadata too (version 1 covered the tensors only)."""


@dataclass
class Inversion:
    """An inverted image: the trajectory, what replaying it needs, and what it cost."""

    method: str
    trajectory: torch.Tensor
    """[steps + 1, B, C, h, w]: [0] the inverted noise ... [steps] the image latent (method's own space)."""
    image_latent: torch.Tensor
    """[B, C, h, w]: the VAE's posterior mean, scaled; what a perfect reconstruction returns."""
    prompt: str
    negative_prompt: str
    guidance: float
    steps: int
    seed: int
    options: dict[str, Any]
    """The method's config (including ``precision``), as a dict."""
    model_name: str
    model_fingerprint: str
    image_size: tuple[int, int]
    """(height, width) in pixels of the image that was inverted."""
    nfe: int
    model_calls: int
    seconds: float
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    pixels: torch.Tensor | None = None
    """[B, 3, H, W] uint8: the image that was inverted, at the working size (``image_size``), or
    None (a file written before it was kept); an edit pastes it back outside its mask."""
    original: torch.Tensor | None = None
    """[1, 3, H0, W0] uint8: the input at its own size, kept when the sizing rule kept the whole
    image at another size (``fit`` "area" or "native", `unsample.images`); an edit is written
    back at this size, and outside its mask takes these pixels. None otherwise."""

    def __post_init__(self) -> None:
        if self.pixels is not None:
            problem = _pixels_problem(self.pixels, self.image_latent, self.image_size)
            if problem:
                raise InputError(f"an inversion's pixels {problem}")
        if self.original is not None:
            problem = _original_problem(self.original)
            if problem:
                raise InputError(f"an inversion's original {problem}")

    def input_pixels(self, device: Any = "cpu") -> torch.Tensor | None:
        """The inverted image at the working size as [B, 3, H, W] floats in [0, 1] (exact: each
        kept value is k / 255), or None when the inversion keeps no pixels."""
        return None if self.pixels is None else self.pixels.float().div(255.0).to(device)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the input image: the original's when kept, else the working size."""
        if self.original is not None:
            return int(self.original.shape[-2]), int(self.original.shape[-1])
        recorded = self.stats.get("sizing", {}).get("input")
        return (int(recorded[1]), int(recorded[0])) if recorded else tuple(self.image_size)  # type: ignore[return-value]

    @property
    def noise(self) -> torch.Tensor:
        """The inverted noise, trajectory[0]."""
        return self.trajectory[0]

    def metadata(self) -> dict[str, Any]:
        """Every field but the tensors, JSON-able."""
        meta = {k: v for k, v in asdict(self).items() if k not in ("trajectory", "image_latent", "extras", "pixels", "original")}
        meta["image_size"] = list(self.image_size)
        return meta

    @staticmethod
    def grid_for(model: Any, method: str, options: dict[str, Any], steps: int,
                 latent_size: tuple[int, int]) -> TimestepGrid:
        """The timestep grid ``method`` (with ``options``) walks for ``steps`` steps on ``model`` at
        a latent of ``latent_size``: the one function every inversion, replay and edit builds it with."""
        config = get_method(method).config.from_options(dict(options), method)
        return config.make_grid(model.schedule_for(latent_size), steps)

    def grid(self, model: Any) -> TimestepGrid:
        """The grid this inversion walked (and its replays and edits walk) on ``model``."""
        return Inversion.grid_for(model, self.method, self.options, self.steps,
                                  (int(self.trajectory.shape[-2]), int(self.trajectory.shape[-1])))

    def check_model(self, model: Any) -> None:
        """Refuse a model other than the one this inversion was made with."""
        if model.fingerprint != self.model_fingerprint:
            if model.name == self.model_name:
                raise InputError(
                    f"this inversion was made with model {self.model_name!r} at fingerprint {self.model_fingerprint}; the "
                    f"{model.name!r} loaded now has fingerprint {model.fingerprint} (other weights, or another --dtype: "
                    "the fingerprint covers both); load it as it was when inverting, or invert again"
                )
            raise InputError(
                f"this inversion was made with model {self.model_name!r} (fingerprint {self.model_fingerprint}), "
                f"not with {model.name!r} (fingerprint {model.fingerprint}); load that model or invert again"
            )

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"trajectory": self.trajectory, "image_latent": self.image_latent}
        tensors.update({f"extra.{k}": v for k, v in self.extras.items()})
        if self.pixels is not None:
            tensors["pixels"] = self.pixels
        if self.original is not None:
            tensors["original"] = self.original
        return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    def save(self, path: str | Path) -> Path:
        """Write one .safetensors file atomically (a temp file, then a rename)."""

        path = Path(path)
        if path.suffix != ".safetensors":
            raise InputError(f"{str(path)!r}: an inversion file must end in .safetensors")
        if not path.parent.is_dir():
            raise InputError(f"folder {str(path.parent)!r} does not exist; create it first")
        tensors = self._tensors()
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.metadata()}
        header = {**meta, "sha256": _digest(tensors, meta)}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"unsample": json.dumps(header)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Inversion:
        """Read a file written by `save`; refuse anything else with a clear message."""

        path = Path(path)
        if not path.is_file():
            raise InversionFileError(f"inversion file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("unsample")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types for damaged headers
            raise InversionFileError(f"{str(path)!r} is not a readable safetensors file ({err}); give a file made by 'unsample invert'") from err
        if raw is None:
            raise InversionFileError(f"{str(path)!r} is a safetensors file but not an unsample inversion (no 'unsample' metadata)")
        try:
            header = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InversionFileError(f"{str(path)!r}: its unsample metadata is not valid JSON ({err}); the file is damaged") from err
        if header.get("format") != FORMAT:
            raise InversionFileError(f"{str(path)!r} is not an unsample inversion (format {header.get('format')!r})")
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            raise InversionFileError(
                f"{str(path)!r} has inversion format version {version}, this unsample reads version {FORMAT_VERSION}; "
                "invert the image again with this version"
            )
        meta = {k: v for k, v in header.items() if k != "sha256"}
        if header.get("sha256") != _digest(tensors, meta):
            raise InversionFileError(
                f"{str(path)!r}: its tensors or metadata do not match their recorded digest; the file was changed or damaged"
            )
        for name in ("trajectory", "image_latent"):
            if name not in tensors:
                raise InversionFileError(f"{str(path)!r}: the tensor {name!r} is missing; the file is damaged")
        extras = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
        try:
            fields_ = {k: header[k] for k in _META_FIELDS}
        except KeyError as err:
            raise InversionFileError(f"{str(path)!r}: its metadata lacks the field {err}; the file is damaged") from err
        _check_field_types(fields_, path)
        fields_["image_size"] = tuple(fields_["image_size"])
        pixels = tensors.get("pixels")
        if pixels is not None:
            problem = _pixels_problem(pixels, tensors["image_latent"], fields_["image_size"])
            if problem:
                raise InversionFileError(f"{str(path)!r}: its tensor 'pixels' {problem}; the file is damaged")
        original = tensors.get("original")
        if original is not None:
            problem = _original_problem(original)
            if problem:
                raise InversionFileError(f"{str(path)!r}: its tensor 'original' {problem}; the file is damaged")
        inv = cls(trajectory=tensors["trajectory"], image_latent=tensors["image_latent"], extras=extras, pixels=pixels,
                  original=original, **fields_)
        if inv.trajectory.shape[0] != inv.steps + 1:
            raise InversionFileError(f"{str(path)!r}: trajectory has {inv.trajectory.shape[0]} states for {inv.steps} steps; damaged file")
        return inv


_META_FIELDS = (
    "method", "prompt", "negative_prompt", "guidance", "steps", "seed", "options", "model_name",
    "model_fingerprint", "image_size", "nfe", "model_calls", "seconds", "stats",
)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "prompt": (str,), "negative_prompt": (str,), "guidance": (int, float), "steps": (int,),
    "seed": (int,), "options": (dict,), "model_name": (str,), "model_fingerprint": (str,), "image_size": (list,),
    "nfe": (int,), "model_calls": (int,), "seconds": (int, float), "stats": (dict,),
}


def _check_field_types(fields_: dict[str, Any], path: Path) -> None:
    for name, kinds in _FIELD_TYPES.items():
        value = fields_[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise InversionFileError(
                f"{str(path)!r}: its metadata field {name!r} is {type(value).__name__}, not "
                f"{' or '.join(k.__name__ for k in kinds)}; the file is damaged"
            )
    size = fields_["image_size"]
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise InversionFileError(f"{str(path)!r}: its metadata field 'image_size' is {size!r}, not [height, width]; the file is damaged")


def _pixels_problem(pixels: Any, image_latent: torch.Tensor, image_size: tuple[int, int]) -> str:
    """What is wrong with an inversion's ``pixels`` (empty: nothing): a uint8 [B, 3, H, W] tensor,
    B the latent's batch, (H, W) the recorded ``image_size``."""
    if not isinstance(pixels, torch.Tensor):
        return f"must be a tensor, got {type(pixels).__name__}"
    want = (int(image_latent.shape[0]), 3, *image_size)
    if pixels.dtype != torch.uint8 or tuple(pixels.shape) != want:
        return f"are {pixels.dtype} of shape {list(pixels.shape)}, not torch.uint8 of shape {list(want)}"
    return ""


def _original_problem(original: Any) -> str:
    """What is wrong with an inversion's ``original`` (empty: nothing): a uint8 [1, 3, H0, W0]
    tensor of at most `unsample.images.MAX_PIXELS` pixels."""
    if not isinstance(original, torch.Tensor):
        return f"must be a tensor, got {type(original).__name__}"
    shape = tuple(original.shape)
    if original.dtype != torch.uint8 or len(shape) != 4 or shape[:2] != (1, 3) or 0 in shape:
        return f"is {original.dtype} of shape {list(shape)}, not torch.uint8 of shape [1, 3, height, width]"
    if shape[2] * shape[3] > MAX_PIXELS:
        return f"holds {shape[3]} x {shape[2]} pixels, more than the {MAX_PIXELS:,} images may have"
    return ""


def _digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
