"""The public API: load a model, invert an image, reconstruct it, edit it.

    model = unsample.load()                      # the embedded default, or a hub id / folder
    inv = unsample.invert(model, "cat.png", "a photo of a cat", method="ddim", steps=50)
    image = unsample.reconstruct(model, inv)
    edited = unsample.edit(model, inv, "a photo of a dog", start_step=10)
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from PIL import Image

from unsample.backends.base import Model
from unsample.core.denoiser import CallCounter
from unsample.images import Fit, fit_image, load_image, tensor_to_pil
from unsample.inversion import Inversion
from unsample.methods.base import MethodOutput, StepCallback
from unsample.methods.registry import get_method

Output = Literal["pil", "latent", "result"]


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

    @property
    def network_evaluations(self) -> int:
        """Network function evaluations over all branches (``nfe`` counts one branch)."""
        return self.nfe * self.branches


def load(
    model: str | None = None,
    *,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
) -> Model:
    """Load a Stable Diffusion pipeline (hub id or local folder); None loads the embedded default."""
    from unsample.backends.devices import resolve_device, resolve_dtype
    from unsample.backends.diffusers_sd import StableDiffusionModel

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if model is None:
        from unsample.embedded import embedded_model_path

        folder = embedded_model_path()
        if not (folder / "model_index.json").is_file():
            raise ValueError(
                f"the embedded model is not installed in {folder}; pass a model (hub id or folder) "
                "or train it with 'unsample train-embedded'"
            )
        loaded = StableDiffusionModel.from_pretrained(str(folder), device=dev, dtype=dt, local_files_only=True)
        loaded.name = "embedded"
        return loaded
    return StableDiffusionModel.from_pretrained(model, device=dev, dtype=dt, local_files_only=local_files_only)


@contextmanager
def _progress(enabled: bool, total: int, desc: str) -> Iterator[StepCallback | None]:
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False)
    try:
        yield lambda i, x: bar.update(1)
    finally:
        bar.close()


def prepare_image(model: Model, image: str | Path | Image.Image, fit: Fit = "model") -> torch.Tensor:
    """A user image -> [1, 3, H, W] in [0, 1], sized by `unsample.images`' rule."""
    pil = fit_image(load_image(image), model.resolution, model.size_multiple, fit)
    return model.image_to_tensor(pil)


def invert(
    model: Model,
    image: str | Path | Image.Image,
    prompt: str = "",
    *,
    method: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    negative_prompt: str = "",
    seed: int = 0,
    fit: Fit = "model",
    progress: bool = False,
    **method_options: Any,
) -> Inversion:
    """Find the noise that ``method``'s sampler turns back into ``image``."""
    spec = get_method(method)
    config = spec.config.from_options(method_options, method)
    if guidance < 0:
        raise ValueError(f"guidance={guidance} must be >= 0 (1 means no classifier-free guidance)")
    pixels = prepare_image(model, image, fit)
    grid = config.make_grid(model.schedule, steps)
    counter = CallCounter()
    denoiser = model.denoiser(prompt, guidance=guidance, negative_prompt=negative_prompt, dtype=config.dtype, counter=counter)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    latent = model.encode_image(pixels)
    with _progress(progress, steps, f"invert ({method})") as callback, torch.no_grad():
        out = spec.invert(denoiser, grid, latent.to(config.dtype), config, callback=callback, generator=generator)
    seconds = time.perf_counter() - start
    return Inversion(
        method=method,
        trajectory=out.trajectory,
        image_latent=latent,
        prompt=prompt,
        negative_prompt=negative_prompt,
        guidance=float(guidance),
        steps=steps,
        seed=seed,
        options=config.to_dict(),
        model_name=model.name,
        model_fingerprint=model.fingerprint,
        image_size=(int(pixels.shape[-2]), int(pixels.shape[-1])),
        nfe=counter.nfe,
        model_calls=counter.calls,
        seconds=seconds,
        extras=out.extras,
        stats=out.stats,
    )


def replay(
    model: Model,
    inversion: Inversion,
    prompt: str | None = None,
    *,
    start_step: int = 0,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    progress: bool = False,
) -> Sample:
    """Run the inversion's own sampler from ``start_step`` (prompt and guidance default to the inversion's)."""
    inversion.check_model(model)
    spec = get_method(inversion.method)
    config = spec.config.from_options(dict(inversion.options), inversion.method)
    grid = config.make_grid(model.schedule, inversion.steps)
    grid.check_start(start_step)
    prompt = inversion.prompt if prompt is None else prompt
    guidance = inversion.guidance if guidance is None else guidance
    negative = inversion.negative_prompt if negative_prompt is None else negative_prompt
    counter = CallCounter()
    denoiser = model.denoiser(prompt, guidance=guidance, negative_prompt=negative, dtype=config.dtype, counter=counter)
    inverted = MethodOutput(trajectory=inversion.trajectory.to(model.device), extras={k: v.to(model.device) for k, v in inversion.extras.items()})
    start = time.perf_counter()
    with _progress(progress, inversion.steps - start_step, f"sample ({inversion.method})") as callback, torch.no_grad():
        latent = spec.sample(denoiser, grid, inverted, start_step, config, callback=callback)
    return Sample(
        latent=latent,
        nfe=counter.nfe,
        model_calls=counter.calls,
        seconds=time.perf_counter() - start,
        start_step=start_step,
        prompt=prompt,
        guidance=float(guidance),
    )


def _present(model: Model, sample: Sample, output: Output) -> Image.Image | torch.Tensor | Sample:
    if output == "latent":
        return sample.latent
    if output == "result":
        return sample
    if output == "pil":
        return tensor_to_pil(model.decode_latent(sample.latent.float()))
    raise ValueError(f"output={output!r} is not supported; use pil, latent or result")


def reconstruct(model: Model, inversion: Inversion, *, output: Output = "pil", progress: bool = False) -> Any:
    """Replay the sampler from the inverted noise with the inversion's own prompt and guidance.

    ``output="pil"`` decodes to an image, ``"latent"`` returns the replayed image latent (to
    check exactness without 8-bit rounding), ``"result"`` the `Sample` with its cost.
    """
    return _present(model, replay(model, inversion, progress=progress), output)


def edit(
    model: Model,
    inversion: Inversion,
    prompt: str,
    *,
    start_step: int = 0,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    source_prompt: str | None = None,
    control: str = "none",
    blend_words: tuple[str, ...] | list[str] = (),
    reweight: dict[str, float] | None = None,
    cross_steps: float = 0.8,
    self_steps: float = 0.4,
    direct: bool = False,
    output: Output = "pil",
    progress: bool = False,
) -> Any:
    """Edit: resume the inversion's sampler at ``start_step`` with the target ``prompt``.

    With ``control="none"`` and no blend, reweight or ``direct``, this is a prompt swap (one
    branch). Otherwise source and target run together: ``control`` = "replace" (word swap),
    "refine" (words added) or "reweight" injects the source's attention maps into the target
    for the first ``cross_steps`` / ``self_steps`` fraction of steps (prompt-to-prompt);
    ``blend_words`` confines the change to where those words attend (local blend);
    ``direct=True`` pulls the source branch back onto the inverted trajectory every step
    (Direct Inversion). ``source_prompt`` defaults to the inversion's prompt.
    """
    if control not in ("none", "replace", "refine", "reweight"):
        raise ValueError(f"control={control!r} is not one of none, replace, refine, reweight")
    if control == "reweight" and not reweight:
        raise ValueError("control='reweight' needs reweight={word: scale}")
    two_branch = control != "none" or bool(blend_words) or bool(reweight) or direct
    if not two_branch:
        sample = replay(
            model, inversion, prompt, start_step=start_step, guidance=guidance, negative_prompt=negative_prompt,
            progress=progress,
        )
        return _present(model, sample, output)
    from unsample.editing.branches import edit_two_branch

    attention = None
    if control != "none" or blend_words or reweight:
        from unsample.editing.attention import AttentionControl

        attention = AttentionControl(
            mode="refine" if control == "none" else control,  # type: ignore[arg-type]
            cross_steps=cross_steps if control != "none" else 0.0,
            self_steps=self_steps if control != "none" else 0.0,
            reweight=dict(reweight or {}),
            blend_words=tuple(blend_words),
        )
    with _progress(progress, inversion.steps - start_step, f"edit ({inversion.method})") as callback:
        res = edit_two_branch(
            model, inversion, prompt, source_prompt=source_prompt, start_step=start_step, guidance=guidance,
            negative_prompt=negative_prompt, control=attention, direct=direct, progress=callback,
        )
    sample = Sample(
        latent=res["target_latent"], nfe=res["nfe"], model_calls=res["model_calls"], seconds=res["seconds"],
        start_step=start_step, prompt=prompt, guidance=res["guidance"], branches=res["branches"],
    )
    return _present(model, sample, output)
