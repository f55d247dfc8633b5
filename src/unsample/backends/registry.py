"""The one table of the pipeline classes unsample loads, and loading a model by it.

A model folder's model_index.json names the pipeline class that saved it (``_class_name``);
`BACKENDS` maps each supported class to its `Backend`: the family it belongs to and the `Model`
class that loads it, named "module:Class" and imported on use (every backend module imports
diffusers' pipelines, which no one should pay for at import time). `load_backend` reads the class,
looks it up and loads; `unsample.load` is a thin call to it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import torch

from unsample.backends.base import Model
from unsample.backends.devices import check_offload, resolve_device, resolve_dtype
from unsample.backends.diffusers_common import (
    FAMILY_NAMES,
    check_single_file,
    is_single_file,
    pipeline_class_name,
    resolve_local_files_only,
    single_file_family,
)
from unsample.errors import InputError, ModelLoadError


class ModelLoader(Protocol):
    """A backend's `Model` class, as `load_backend` calls it. ``config`` (the config folder of a
    single-file checkpoint) is passed only to backends that load single files."""

    def from_pretrained(
        self, name: str, *, device: torch.device, dtype: torch.dtype, local_files_only: bool | None = None,
        variant: str | None = None, config: str | None = None,
    ) -> Model: ...


@dataclass(frozen=True)
class Backend:
    """What loads one kind of pipeline folder."""

    family: str
    """The model family: "sd", "sdxl", "sd3", "flux" or "pixel" (a single file's weights are
    checked against it, `single_file_family`)."""
    model_class: str
    """The `Model` subclass that loads it, as "module:Class" (imported by `loader`)."""
    loads_single_file: bool
    """It also loads a single-file checkpoint (with ``config=FOLDER``)."""

    def loader(self) -> ModelLoader:
        """The `Model` class, imported now."""
        module, _, name = self.model_class.partition(":")
        loader: ModelLoader = getattr(importlib.import_module(module), name)
        return loader


_SD = Backend("sd", "unsample.backends.diffusers_sd:StableDiffusionModel", loads_single_file=True)
_SDXL = Backend("sdxl", "unsample.backends.diffusers_sdxl:StableDiffusionXLModel", loads_single_file=True)
_SD3 = Backend("sd3", "unsample.backends.diffusers_sd3:StableDiffusion3Model", loads_single_file=True)
_FLUX = Backend("flux", "unsample.backends.diffusers_flux:FluxModel", loads_single_file=True)
_PIXEL = Backend("pixel", "unsample.backends.diffusers_pixel:PixelDiffusionModel", loads_single_file=False)

BACKENDS: dict[str, Backend] = {
    "StableDiffusionPipeline": _SD,
    "StableDiffusionImg2ImgPipeline": _SD,
    "StableDiffusionInpaintPipeline": _SD,
    "StableDiffusionXLPipeline": _SDXL,
    "StableDiffusionXLImg2ImgPipeline": _SDXL,
    "StableDiffusion3Pipeline": _SD3,
    "StableDiffusion3Img2ImgPipeline": _SD3,
    "FluxPipeline": _FLUX,
    "FluxImg2ImgPipeline": _FLUX,
    "DDPMPipeline": _PIXEL,
    "DDIMPipeline": _PIXEL,
    "UNet2DModel": _PIXEL,
}
"""The pipeline classes (model_index.json's ``_class_name``; "UNet2DModel" for a flat UNet folder)
unsample loads, and the backend of each."""


def backend_for(class_name: str | None) -> Backend:
    """The backend of pipeline class ``class_name`` (None: a model_index.json without one); a
    one-line `ModelLoadError` listing the supported classes otherwise."""
    supported = ", ".join(sorted(BACKENDS))
    if class_name is None:
        raise ModelLoadError(f"the model_index.json names no pipeline class (_class_name); set it to one of {supported}")
    backend = BACKENDS.get(class_name)
    if backend is None:
        raise ModelLoadError(f"pipeline class {class_name!r} is not supported; unsample loads {supported}")
    return backend


def load_backend(
    model: str,
    *,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    variant: str | None = None,
    config: str | None = None,
    offload: str = "none",
) -> Model:
    """Load a diffusers pipeline (hub id, local folder, or single-file checkpoint with ``config``)
    with the backend its model_index.json's ``_class_name`` names (`BACKENDS`); see `unsample.load`.
    ``offload`` "model" or "sequential" loads the weights into main memory and lets diffusers move
    them to ``device`` when used (`offload_model`)."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    check_offload(offload, dev)
    if offload != "none":
        return offload_model(load_backend(model, device="cpu", dtype=dt, local_files_only=local_files_only,
                                          variant=variant, config=config), offload, dev)
    single = is_single_file(model)
    if single:
        config = check_single_file(model, config)
    elif config is not None:
        raise InputError(f"config={config!r} is for a single-file checkpoint; {model!r} is a folder or hub id, give it alone")
    source = config if single and config is not None else model
    class_name = pipeline_class_name(source, resolve_local_files_only(source, local_files_only))
    backend = backend_for(class_name)
    if single and not backend.loads_single_file:
        raise InputError(
            f"single-file checkpoints load for Stable Diffusion, SDXL, SD3 and Flux; {config!r} is a pixel-space UNet"
        )
    if single:
        found = single_file_family(model)
        if found is not None and found[0] != backend.family:
            raise InputError(
                f"{model!r} holds {FAMILY_NAMES[found[0]]} weights (keys starting {found[1]!r}) but the config folder "
                f"{config!r} is {class_name} ({FAMILY_NAMES[backend.family]}); give a config folder of the same family"
            )
        return backend.loader().from_pretrained(model, device=dev, dtype=dt, local_files_only=local_files_only,
                                                variant=variant, config=config)
    return backend.loader().from_pretrained(model, device=dev, dtype=dt, local_files_only=local_files_only, variant=variant)


def offload_model(model: Model, offload: str, device: torch.device) -> Model:
    """``model`` (loaded on the CPU) with diffusers' CPU offload toward ``device``: "model" moves each
    part (text encoder, UNet or transformer, VAE) to the device when it runs and back when the next
    one does (``enable_model_cpu_offload``); "sequential" moves each layer's weights when it runs
    (``enable_sequential_cpu_offload``: least memory, slowest). ``model.device`` becomes the
    pipeline's execution device, where the backends put their inputs."""
    pipe = getattr(model, "pipe", None)
    if not hasattr(pipe, "enable_model_cpu_offload"):
        raise InputError(f"offload {offload!r} is for diffusers pipelines; {model.name!r} is a pixel-space UNet alone, "
                         "load it without offload")
    # the fingerprint reads a few weights, which sequential offload leaves on the meta device
    _ = model.fingerprint
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    model.device = torch.device(pipe._execution_device)
    return model
