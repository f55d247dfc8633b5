"""Loading a model: a hub id, a local diffusers folder, a single-file checkpoint or an embedded model by name."""

from __future__ import annotations

import torch

from unsample.api.quiet import filter_known_warnings, library_bars
from unsample.backends.base import Model
from unsample.backends.registry import load_backend
from unsample.embedded import EMBEDDED_MODELS, embedded_model_path
from unsample.errors import InputError


def load(
    model: str | None = None,
    *,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    variant: str | None = None,
    config: str | None = None,
    progress: bool = False,
    offload: str = "none",
    vae_tiling: bool | None = None,
) -> Model:
    """Load a diffusers pipeline (hub id or local folder); None loads the embedded default.

    The embedded models load by name too: "embedded" (the default), "embedded-pixel" and "embedded-flow".

    ``variant`` picks weight files such as ``diffusion_pytorch_model.fp16.safetensors``; with
    None a local folder loads its plain weights, or its "fp16" ones when it has no plain ones
    (as an fp16-only download). A single-file checkpoint (``model.safetensors`` in the original
    LDM / A1111 layout) loads with ``config=FOLDER``, a local diffusers folder of the same
    architecture whose model_index.json picks the backend and whose parts give the configs; the
    hub is never asked for them. Pickled ``.ckpt`` files are refused, and so is a file whose keys
    name another family than the config folder's (`single_file_family`).

    The backend follows the folder's model_index.json ``_class_name``: Stable Diffusion 1.x/2.x,
    SDXL, Stable Diffusion 3 or Flux (`unsample.backends.registry.BACKENDS`); any other class
    is refused with the list of supported ones.

    Loading is quiet: diffusers' and transformers' loading bars show only with ``progress=True``, and
    the libraries' known noise (`unsample.api.quiet.KNOWN_NOISE`) is filtered; their other warnings show.

    Memory (docs/memory.md): ``offload`` "model" keeps the weights in main memory and moves each
    part to the accelerator while it runs, "sequential" each layer (least memory, slowest); both
    need ``device`` "cuda" or "mps". ``vae_tiling`` True / False forces the VAE's tiled encode and
    decode on / off; None (automatic) tiles latents above
    `unsample.backends.diffusers_common.VAE_TILE_LATENT_SIDE` cells a side.
    """
    if vae_tiling not in (None, True, False):
        raise InputError(f"vae_tiling={vae_tiling!r} must be True, False or None (automatic)")
    filter_known_warnings()
    if model is None or model in EMBEDDED_MODELS:
        loaded = _load_embedded(model or "embedded", device, dtype, progress, offload)
    else:
        with library_bars(progress):
            loaded = load_backend(model, device=device, dtype=dtype, local_files_only=local_files_only, variant=variant,
                                  config=config, offload=offload)
    loaded.vae_tiling = vae_tiling
    return loaded


def _load_embedded(name: str, device: str, dtype: str | torch.dtype | None, progress: bool, offload: str = "none") -> Model:
    """An embedded model by name, from the package's own folder (never the hub)."""
    folder = embedded_model_path(name)
    if not (folder / "model_index.json").is_file():
        raise InputError(f"the {name} model is not installed in {folder}; pass a model (hub id or folder) "
                         f"or train it with '{EMBEDDED_MODELS[name][1]}'")
    loaded = load(str(folder), device=device, dtype=dtype, local_files_only=True, progress=progress, offload=offload)
    loaded.name = name
    return loaded
