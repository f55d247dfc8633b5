"""FlowEdit: edit an image without inverting it (every family)."""

from __future__ import annotations

import time
from typing import Any

import torch
from PIL import Image

from unsample import defaults
from unsample.api.common import (
    ImageSource,
    Output,
    UnknownWords,
    check_guidance,
    check_prompts,
    latent_size,
    naming_the_step,
    prepare_input,
    progress_bar,
)
from unsample.api.results import EditSample, present
from unsample.backends.base import Model
from unsample.core.denoiser import CallCounter
from unsample.editing.flowedit import flowedit_latent
from unsample.editing.spec import OutputSize
from unsample.errors import InputError
from unsample.images import Fit
from unsample.inversion import Inversion


def flowedit(
    model: Model,
    image: ImageSource,
    source_prompt: str,
    target_prompt: str,
    *,
    steps: int = defaults.FLOWEDIT_STEPS,
    start_step: int = defaults.FLOWEDIT_START_STEP,
    source_guidance: float = defaults.FLOWEDIT_SOURCE_GUIDANCE,
    target_guidance: float = defaults.FLOWEDIT_TARGET_GUIDANCE,
    draws: int = 1,
    negative_prompt: str = "",
    seed: int = 0,
    fit: Fit = "area",
    output_size: OutputSize = "input",
    output: Output = "pil",
    progress: bool = False,
    unknown_words: UnknownWords = "warn",
) -> Any:
    """Edit ``image`` from ``source_prompt`` to ``target_prompt`` by FlowEdit: no inversion, the
    edit path moves by the difference of the two prompts' predictions at shared noisy copies of
    the image (`unsample.editing.flowedit`; paper defaults for SD3: 50 steps, the first 17
    skipped, CFG 3.5 / 13.5). ``draws`` noise draws per step (n_avg); the noise comes from ``seed``.
    Runs on every family (in flow coordinates on the DDPM family). ``fit`` sizes the image
    (`unsample.images`) and ``output_size="input"`` writes the edit back at the input's own size
    (`EditSample.sizes` says the sizes)."""
    if output_size not in ("input", "working"):
        raise InputError(f"output_size={output_size!r} is not input or working")
    for value, name in ((source_guidance, "source_guidance"), (target_guidance, "target_guidance")):
        check_guidance(value, name)
    for text in (source_prompt, target_prompt):
        if not isinstance(text, str):
            raise InputError("flowedit needs a source and a target prompt (strings)")
    check_prompts(model, [source_prompt, target_prompt, negative_prompt], unknown_words)
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps={steps} must be a whole number >= 1")
    if not isinstance(start_step, int) or not 0 <= start_step < steps:
        raise InputError(f"start_step={start_step} is outside 0..{steps - 1} for {steps} steps (FlowEdit's n_max = "
                         "steps - start_step)")
    prepared = prepare_input(model, image, fit)
    pixels = prepared.pixels
    counter = CallCounter()
    begin = time.perf_counter()
    latent = model.encode_image(pixels)
    grid = Inversion.grid_for(model, "ddim", {}, steps, latent_size(latent))
    src = model.denoiser(source_prompt, guidance=source_guidance, negative_prompt=negative_prompt, counter=counter)
    tar = model.denoiser(target_prompt, guidance=target_guidance, negative_prompt=negative_prompt, counter=counter)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with progress_bar(progress, steps - start_step, "flowedit") as callback, torch.no_grad(), \
            naming_the_step(grid, "editing", "flowedit"):
        edited = flowedit_latent(src, tar, grid, latent, start_step=start_step, draws=draws, generator=generator,
                                 callback=callback)
    sample = EditSample(
        latent=edited, nfe=counter.nfe, model_calls=counter.calls, seconds=time.perf_counter() - begin,
        start_step=start_step, prompt=target_prompt, guidance=float(target_guidance), source_prompt=source_prompt,
    )
    if output == "latent":
        return present(model, sample, output)
    present(model, sample, "result")
    assert sample.image is not None
    sample.working_image = sample.image
    working = list(sample.image.size)
    if output_size == "input" and prepared.original is not None:
        size = (int(prepared.original.shape[-1]), int(prepared.original.shape[-2]))
        sample.image = sample.image.resize(size, Image.Resampling.LANCZOS)
    sample.sizes = prepared.sizing | {"working": working, "output": list(sample.image.size)}
    return sample.image if output == "pil" else sample
