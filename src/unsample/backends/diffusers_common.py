"""What every diffusers backend shares: loading a pipeline folder, the VAE's latent scaling, the
fingerprint of the weights, and reading the pipeline class a folder names (the table of the
supported ones is `unsample.backends.registry.BACKENDS`).

The VAE maps an image in [-1, 1] to the posterior mean m, and the methods work on the scaled
latent ``z = (m - shift_factor) * scaling_factor`` (SD 1.x/2.x have no shift; SD3 and Flux do),
so the same two functions serve every family.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from unsample.backends.base import Model
from unsample.errors import InputError, ModelLoadError


def is_flat_unet_folder(folder: Path) -> bool:
    """The UNet's config.json sits at the folder's root (google/ddpm-cifar10-32's layout)."""
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name") == "UNet2DModel"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def pipeline_class_name(name: str, local_files_only: bool) -> str | None:
    """``_class_name`` of a local folder's or a hub id's model_index.json ("UNet2DModel" for a flat
    UNet folder; None when the file names no class). A one-line error when there is no
    model_index.json to read (a hub id that is not in the local cache, offline)."""
    folder = Path(name)
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            if is_flat_unet_folder(folder):
                return "UNet2DModel"
            raise InputError(f"{name!r} is a folder without model_index.json; give a diffusers pipeline folder")
        try:
            found = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise InputError(f"{index} is not valid JSON; give a diffusers pipeline folder") from None
    else:
        from diffusers import DiffusionPipeline  # heavy: only a hub id's index needs it

        try:
            found = DiffusionPipeline.load_config(name, local_files_only=local_files_only).get("_class_name")
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(
                f"could not read the model_index.json of {name!r} ({first}); "
                "give a local diffusers folder or a hub id that is in the local cache"
            ) from err
    return None if found is None else str(found)


def resolve_local_files_only(name: str, local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    return os.path.isdir(name) or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


LoadError = ModelLoadError
"""A loading error whose message already says what to do (load_pipeline passes it on as is)."""


_WEIGHT_FILE = re.compile(
    r"^(?:diffusion_pytorch_model|model|pytorch_model)(?:\.(?P<variant>[A-Za-z0-9_]+))?"
    r"(?:-\d{5}-of-\d{5})?\.(?:safetensors|bin)(?:\.index\.json)?$"
)
_NOT_LOADED = frozenset({"safety_checker", "feature_extractor"})
"""Components a pipeline folder may carry that unsample never loads (their weights do not count)."""


def weight_variants(folder: Path) -> dict[str, set[str | None]]:
    """For each part of a pipeline folder that holds weights (its subfolders, and "" for the root),
    the variants of its weight files: None for plain ``model.safetensors``-style names, "fp16" for
    ``diffusion_pytorch_model.fp16.safetensors``, and so on (shards and shard indexes included)."""
    found: dict[str, set[str | None]] = {}
    for part in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        key = "" if part == folder else part.name
        if key in _NOT_LOADED:
            continue
        for file in part.iterdir():
            match = _WEIGHT_FILE.match(file.name)
            if match and file.is_file():
                found.setdefault(key, set()).add(match.group("variant"))
    return found


def resolve_variant(name: str, variant: str | None) -> str | None:
    """The weight variant to load from ``name``: ``variant`` when given, else, for a local folder
    whose parts have no plain weight files but all have ``.fp16.`` ones, "fp16" (as fp16-only
    downloads are laid out); a hub id is left to diffusers. A one-line error says what to pass
    when the folder has no weights of the asked (or of any loadable) variant."""
    folder = Path(name)
    if not folder.is_dir():
        return variant
    found = weight_variants(folder)
    present = sorted({v for vs in found.values() for v in vs if v is not None})
    if variant is not None:
        if variant not in present:
            have = ", ".join(repr(v) for v in present) or "none"
            raise LoadError(
                f"{name!r} has no weight files of variant {variant!r} (its variants: {have}); "
                "pass variant=None for the plain weights" + (f" or one of {have}" if present else "")
            )
        return variant
    without_plain = sorted(part or "." for part, vs in found.items() if None not in vs)
    if not without_plain:
        return None
    if all("fp16" in found["" if part == "." else part] for part in without_plain):
        return "fp16"
    have = ", ".join(repr(v) for v in present)
    raise LoadError(
        f"{name!r} has no plain weight files in {', '.join(without_plain)} (only variants {have}); "
        f"pass variant= one of {have}"
    )


def load_pipeline(pipeline_cls: Any, name: str, *, device: torch.device, dtype: torch.dtype,
                  local_files_only: bool | None, family: str, variant: str | None = None,
                  config: str | None = None, **kwargs: Any) -> Any:
    """``pipeline_cls.from_pretrained`` with a one-line error, on ``device``, frozen and in eval mode.

    ``variant`` picks weight files such as ``diffusion_pytorch_model.fp16.safetensors``; None
    loads the plain ones, or "fp16" when a local folder has only fp16-variant weights
    (`resolve_variant`). A single ``.safetensors`` checkpoint file (the original LDM / A1111
    layout) loads through ``pipeline_cls.from_single_file`` with ``config``, a local diffusers
    folder of the same architecture that gives the parts' configs (`check_single_file`); it is
    never looked up on the hub. The parts the file does not carry (SD3's text encoders, all but
    Flux's transformer) load from the config folder (`parts_missing_from_file`).
    """
    # diffusers is heavy: imported when a pipeline loads, not when the library is imported
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    single = is_single_file(name)
    try:
        if single:
            folder = check_single_file(name, config)
            parts = parts_missing_from_file(name, folder, dtype=dtype, given=kwargs)
            pipe = pipeline_cls.from_single_file(name, config=folder, dtype=dtype, local_files_only=True,
                                                 **kwargs, **parts)
        else:
            pipe = pipeline_cls.from_pretrained(
                name, dtype=dtype, local_files_only=resolve_local_files_only(name, local_files_only),
                variant=resolve_variant(name, variant), **kwargs,
            )
    except (OSError, ValueError, EnvironmentError, SingleFileComponentError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not single:
            raise
        if isinstance(err, ModelLoadError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        what = "a single-file checkpoint with config=" + repr(config) if single else "a local diffusers folder or a hub id that is in the local cache"
        raise ModelLoadError(f"could not load a {family} pipeline from {name!r} ({first}); give {what}") from err
    if single:
        unloaded = [f"{part}.{key}" for part, module in pipe.components.items() if isinstance(module, torch.nn.Module)
                    for key, tensor in module.state_dict().items() if tensor.is_meta]
        if unloaded:
            raise LoadError(
                f"diffusers left {len(unloaded)} weight{'s' if len(unloaded) > 1 else ''} of {name!r} unloaded ({', '.join(unloaded[:3])}"
                f"{', ...' if len(unloaded) > 3 else ''}): the file lacks them; give a file that carries them, "
                "or load the diffusers folder"
            )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.requires_grad_(False)
            part.eval()
    return pipe


SINGLE_FILE_SUFFIXES = (".safetensors",)
REFUSED_SINGLE_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def is_single_file(name: str) -> bool:
    """``name`` is a checkpoint file (not a folder or a hub id): ``*.safetensors``, or a pickled
    ``.ckpt``/``.pt``/``.pth``/``.bin`` (which `check_single_file` refuses)."""
    return name.lower().endswith(SINGLE_FILE_SUFFIXES + REFUSED_SINGLE_FILE_SUFFIXES) and not Path(name).is_dir()


def check_single_file(name: str, config: str | None) -> str:
    """The config folder for single-file checkpoint ``name``; a one-line `LoadError` otherwise."""
    path = Path(name)
    if name.lower().endswith(REFUSED_SINGLE_FILE_SUFFIXES):
        raise LoadError(
            f"{name!r} is a pickled checkpoint, which unsample does not unpickle; convert it to .safetensors "
            "or give its diffusers folder"
        )
    if not path.is_file():
        raise LoadError(f"single-file checkpoint {name!r} does not exist; give the path of a .safetensors file")
    if config is None:
        raise LoadError(
            f"a single-file checkpoint needs config=FOLDER (--model-config FOLDER in the CLI: a local diffusers "
            f"folder of the same architecture, "
            f"e.g. a downloaded SD 1.5 or SDXL folder) to load {name!r}; the hub is not reached to guess it"
        )
    if not (Path(config) / "model_index.json").is_file():
        raise LoadError(
            f"config (--model-config) {config!r} is not a local diffusers folder with model_index.json; give the folder of a "
            "pipeline of the same architecture (the hub is not reached to fetch configs)"
        )
    return str(config)


def single_file_shapes(name: str) -> dict[str, list[int]]:
    """Every tensor's name and shape in a ``.safetensors`` file (its header only; no weights are read)."""
    try:
        with safe_open(name, framework="pt") as file:
            return {key: list(file.get_slice(key).get_shape()) for key in file.keys()}
    except (SafetensorError, OSError) as err:
        raise LoadError(f"{name!r} is not a readable .safetensors file ({str(err).splitlines()[0]})") from None


_FAMILY_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sd3", ("joint_blocks.", "model.diffusion_model.joint_blocks.", "pos_embed.proj.")),
    ("flux", ("double_blocks.", "model.diffusion_model.double_blocks.", "single_transformer_blocks.")),
    ("sdxl", ("conditioner.embedders.", "model.diffusion_model.label_emb.")),
    ("sd", ("model.diffusion_model.input_blocks.",)),
)
"""Key prefixes that tell a single file's family (the first match wins): SD3's MMDiT (original or
diffusers layout), Flux's transformer (BFL or diffusers layout), SDXL's SGM conditioner or UNet
label embedding, an LDM UNet without one (SD 1.x/2.x)."""
FAMILY_NAMES = {"sd": "Stable Diffusion 1.x/2.x", "sdxl": "SDXL", "sd3": "Stable Diffusion 3", "flux": "Flux"}


def single_file_family(name: str) -> tuple[str, str] | None:
    """(backend, the key prefix that tells it) of single-file checkpoint ``name``; None when no
    known prefix occurs (diffusers then decides)."""
    keys = single_file_shapes(name)
    for backend, prefixes in _FAMILY_KEYS:
        for prefix in prefixes:
            if any(key.startswith(prefix) for key in keys):
                return backend, prefix
    return None


def parts_missing_from_file(name: str, config: str, *, dtype: torch.dtype, given: dict[str, Any]) -> dict[str, Any]:
    """The config folder's parts that single-file checkpoint ``name`` does not carry, loaded from
    the folder, to pass to ``from_single_file``.

    diffusers' ``from_single_file`` takes a part the file lacks from ``config`` only when that
    part's folder holds ``diffusion_pytorch_model.*`` weights, so it refuses transformers' text
    encoders (``model.safetensors``), and its VAE converter finds no weights in a file without a
    ``first_stage_model.``/``vae.`` VAE: its error says to load such parts and pass them, which
    this does. A part is "in the file" as diffusers decides it: a text encoder when
    ``is_clip_model_in_single_file`` or ``is_t5_in_single_file`` holds, a VAE when a key starts
    with one of ``LDM_VAE_KEYS``; other parts (the UNet or transformer) are always read from the
    file. A part that neither the file nor the folder has weights for is a one-line `LoadError`.
    """
    # diffusers and transformers are heavy: imported when a single file loads
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import LDM_VAE_KEYS, is_clip_model_in_single_file, is_t5_in_single_file
    from transformers import PreTrainedModel

    keys = set(single_file_shapes(name))
    folder = Path(config)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    found = weight_variants(folder)
    parts: dict[str, Any] = {}
    for part, entry in index.items():
        if part.startswith("_") or part in given or part in _NOT_LOADED:
            continue
        if not isinstance(entry, list) or len(entry) != 2:
            continue
        library, class_name = entry
        if library not in ("diffusers", "transformers"):
            continue
        cls = getattr(importlib.import_module(library), str(class_name), None)
        if not isinstance(cls, type):
            continue
        if issubclass(cls, PreTrainedModel):
            in_file = is_clip_model_in_single_file(cls, keys) or is_t5_in_single_file(keys)
        elif issubclass(cls, AutoencoderKL):
            in_file = any(key.startswith(tuple(LDM_VAE_KEYS)) for key in keys)
        else:
            continue
        if in_file:
            continue
        if part not in found:
            raise LoadError(
                f"{name!r} has no {part} weights and the config folder {config!r} has none either ({part}/ holds no "
                f"weight files); give a config folder with the {part} weights, or a file that carries them"
            )
        variants = found[part]
        variant = None if None in variants else "fp16" if "fp16" in variants else sorted(v for v in variants if v)[0]
        parts[part] = cls.from_pretrained(folder / part, dtype=dtype, local_files_only=True, variant=variant)
    return parts


def vae_scaling(vae: Any) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of a VAE config (shift 0 when absent)."""
    cfg = vae.config
    return float(cfg.scaling_factor), float(getattr(cfg, "shift_factor", None) or 0.0)


VAE_TILE_LATENT_SIDE = 64
"""Latents with a side above this many cells (512 px for an 8x VAE) go through the VAE in tiles
when tiling is automatic: above it an untiled decode's peak memory grows with the area (measured
on SD 1.5's VAE: docs/memory.md, ``python -m unsample_lab.bench.vae_tiling``)."""


def vae_tiled(latent_hw: tuple[int, int], tiling: bool | None) -> bool:
    """Whether latents of ``latent_hw`` go through the VAE in tiles: ``tiling`` when given, else
    above `VAE_TILE_LATENT_SIDE` cells a side."""
    return max(latent_hw) > VAE_TILE_LATENT_SIDE if tiling is None else bool(tiling)


@contextmanager
def vae_mode(vae: Any, tiled: bool, sliced: bool) -> Iterator[None]:
    """The VAE with diffusers' tiling and slicing (one image of a batch at a time) on or off, as
    asked, for the block; its own settings come back after."""
    before = (getattr(vae, "use_tiling", False), getattr(vae, "use_slicing", False))
    if hasattr(vae, "use_tiling"):
        vae.use_tiling = tiled
    if hasattr(vae, "use_slicing"):
        vae.use_slicing = sliced
    try:
        yield
    finally:
        if hasattr(vae, "use_tiling"):
            vae.use_tiling, vae.use_slicing = before


@torch.no_grad()
def vae_encode(vae: Any, image: torch.Tensor, device: torch.device, tiling: bool | None = None) -> torch.Tensor:
    """Images [B, 3, H, W] in [0, 1] -> scaled latents (float32, the posterior mean); tiled per
    `vae_tiled` (``tiling`` None: automatic), a batch one image at a time."""
    scale, shift = vae_scaling(vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    tiled = vae_tiled((image.shape[-2] // factor, image.shape[-1] // factor), tiling)
    with vae_mode(vae, tiled, image.shape[0] > 1):
        mean = vae.encode(image.to(device, vae.dtype) * 2 - 1).latent_dist.mean
    return (mean.float() - shift) * scale


@torch.no_grad()
def vae_decode(vae: Any, latent: torch.Tensor, device: torch.device, tiling: bool | None = None) -> torch.Tensor:
    """Scaled latents -> images [B, 3, H, W] in [0, 1] (float32); tiled per `vae_tiled`, a batch
    one image at a time."""
    scale, shift = vae_scaling(vae)
    z = latent.to(device, torch.float32) / scale + shift
    with vae_mode(vae, vae_tiled((latent.shape[-2], latent.shape[-1]), tiling), latent.shape[0] > 1):
        out = vae.decode(z.to(vae.dtype)).sample.float()
    return ((out + 1) / 2).clamp(0, 1)


def fingerprint(parts: Iterable[Any], scheduler_config: dict[str, Any], tensors: Iterable[torch.Tensor]) -> str:
    """A short digest of the parts' configs, the scheduler's config and a few small weight tensors."""
    digest = hashlib.sha256()
    for part in parts:
        config = part.config.to_dict() if hasattr(part.config, "to_dict") else dict(part.config)
        config.pop("transformers_version", None)
        digest.update(json.dumps(_jsonable(config), sort_keys=True).encode())
    digest.update(json.dumps(_jsonable(dict(scheduler_config)), sort_keys=True).encode())
    # A few small weight tensors tell two trainings of one architecture apart, cheaply.
    for tensor in tensors:
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class PooledTextConditioning:
    """Per-token text embeddings [B, L, D] and a pooled embedding [B, P] (SD3, Flux)."""

    embeds: torch.Tensor
    pooled: torch.Tensor

    def cat(self, other: PooledTextConditioning) -> PooledTextConditioning:
        return PooledTextConditioning(torch.cat([self.embeds, other.embeds]), torch.cat([self.pooled, other.pooled]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"embeds": self.embeds, "pooled": self.pooled}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PooledTextConditioning:
        return cls(tensors["embeds"], tensors["pooled"])


class TransformerPipelineModel(Model):
    """What the SD3 and Flux backends share: a transformer, a VAE with shift and scale, and text
    encoders whose output is per-token embeddings plus a pooled vector (cached per prompt)."""

    def __init__(self, pipe: Any, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.device = pipe.transformer.device
        self.dtype = pipe.transformer.dtype
        self._prompt_cache: dict[str, PooledTextConditioning] = {}

    @property
    def vae_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.pipe.vae, image, self.device, self.vae_tiling)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.pipe.vae, latent, self.device, self.vae_tiling)

    T5_TOKENIZER = ""
    """The pipeline's T5 tokenizer attribute (SD3: tokenizer_3, Flux: tokenizer_2)."""
    max_sequence_length: int = 0

    def prompt_window(self, prompt: str) -> tuple[int, int]:
        """With a T5 encoder the whole prompt reaches the transformer up to ``max_sequence_length``
        T5 tokens (CLIP reads its first 77 tokens for the pooled vector, as the pipeline does), so
        that is the window; without one, CLIP's."""
        t5 = getattr(self.pipe, self.T5_TOKENIZER, None) if self.T5_TOKENIZER else None
        if t5 is None or self.max_sequence_length <= 0:
            return super().prompt_window(prompt)
        return len(t5(prompt, truncation=False).input_ids), int(self.max_sequence_length)

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-token embeddings [1, L, D], pooled [1, P]) from the pipeline's own encode_prompt."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> PooledTextConditioning:
        if not isinstance(prompt, str):
            raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
        cached = self._prompt_cache.get(prompt)
        if cached is None:
            embeds, pooled = self._encode(prompt)
            cached = self._prompt_cache[prompt] = PooledTextConditioning(embeds.to(self.dtype), pooled.to(self.dtype))
        return cached
