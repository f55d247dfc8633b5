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

from unsample import defaults
from unsample.backends.base import Model
from unsample.backends.registry import load_backend
from unsample.core.classifier import ClassifierGuidance
from unsample.core.denoiser import CallCounter
from unsample.editing.masks import MASK_SOURCES as MASK_KINDS
from unsample.editing.masks import NoiseMaskConfig
from unsample.errors import InputError
from unsample.images import Fit, fit_image, load_image, tensor_to_pil
from unsample.inversion import Inversion
from unsample.methods.base import MethodOutput, StepCallback
from unsample.methods.registry import get_method

Output = Literal["pil", "latent", "result"]
ImageSource = Any
"""A path, a PIL image, a numpy array (H x W x 3 uint8 or float in [0, 1]) or a tensor ([3, H, W] in [0, 1])."""


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

    @property
    def network_evaluations(self) -> int:
        """The edit's whole network cost: every branch's evaluations plus the mask's."""
        return self.nfe * self.branches + self.mask_nfe


def load(
    model: str | None = None,
    *,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    local_files_only: bool | None = None,
    variant: str | None = None,
    config: str | None = None,
) -> Model:
    """Load a diffusers pipeline (hub id or local folder); None loads the embedded default.

    The embedded models load by name too: "embedded" (the default) and "embedded-pixel".

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
    """
    from unsample.embedded import EMBEDDED_MODELS

    if model is None or model in EMBEDDED_MODELS:
        return _load_embedded(model or "embedded", device, dtype)
    return load_backend(model, device=device, dtype=dtype, local_files_only=local_files_only, variant=variant,
                        config=config)


def _load_embedded(name: str, device: str, dtype: str | torch.dtype | None) -> Model:
    """An embedded model by name, from the package's own folder (never the hub)."""
    from unsample.embedded import EMBEDDED_MODELS, embedded_model_path

    folder = embedded_model_path(name)
    if not (folder / "model_index.json").is_file():
        raise InputError(f"the {name} model is not installed in {folder}; pass a model (hub id or folder) "
                         f"or train it with '{EMBEDDED_MODELS[name][1]}'")
    loaded = load(str(folder), device=device, dtype=dtype, local_files_only=True)
    loaded.name = name
    return loaded


MAX_GUIDANCE = 100.0


def _check_guidance(value: float | None, name: str, allow_none: bool = False) -> None:
    """A finite classifier-free guidance scale in [0, MAX_GUIDANCE]; one-line error otherwise."""
    if value is None and allow_none:
        return
    import math

    if not isinstance(value, (int, float)) or not math.isfinite(float(value)) or not 0 <= value <= MAX_GUIDANCE:
        raise InputError(
            f"{name}={value} must be a finite number in [0, {MAX_GUIDANCE:g}] (1 means no classifier-free guidance)"
        )


def _target_row_callback(bar: StepCallback | None, on_step: StepCallback | None) -> StepCallback | None:
    """One step callback for the progress bar and the user's ``on_step``; the user's sees the last
    row of the state (the target branch: a two-branch edit stacks source, target)."""
    if on_step is None:
        return bar

    def step(i: int, x: torch.Tensor) -> None:
        if bar is not None:
            bar(i, x)
        on_step(i, x[-1:])

    return step


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


def _classifier_record(guidance: ClassifierGuidance | None) -> dict[str, Any]:
    if guidance is None:
        return {}
    return {"classifier_guidance": {"scale": float(guidance.scale), "labels": [int(v) for v in guidance.labels.flatten()]}}


def _check_classifier(inversion: Inversion, guidance: ClassifierGuidance | None, what: str) -> None:
    """An inversion made with classifier guidance replays exactly only with a classifier again."""
    made = inversion.stats.get("classifier_guidance")
    if made and guidance is None:
        raise InputError(
            f"this inversion was made with classifier guidance (scale {made['scale']:g}, labels {made['labels']}); "
            f"pass classifier_guidance to {what} (the file holds no classifier)"
        )


def _latent_size(latent: torch.Tensor) -> tuple[int, int]:
    return int(latent.shape[-2]), int(latent.shape[-1])


@contextmanager
def _naming_the_step(grid: Any, phase: Literal["inverting", "sampling", "editing"], method: str) -> Iterator[None]:
    """A `NonFiniteError` inside says at which step (1-based, in the phase's own order) it happened:
    inversion walks the grid from its last position (the image) to its first (the noise)."""
    from unsample.core.denoiser import NonFiniteError

    try:
        yield
    except NonFiniteError as err:
        if err.time_label is None:
            raise
        labels = torch.as_tensor(grid.timesteps, dtype=torch.float64)
        position = int((labels - err.time_label).abs().argmin())
        step = len(grid) - position if phase == "inverting" else position + 1
        raise NonFiniteError(f"{phase} with {method}, step {step} of {len(grid)}: {err}", time_label=None) from None


def prepare_image(model: Model, image: ImageSource, fit: Fit = "model") -> torch.Tensor:
    """A user image -> [1, 3, H, W] in [0, 1], sized by `unsample.images`' rule."""
    pil = fit_image(load_image(image), model.resolution, model.size_multiple, fit)
    return model.image_to_tensor(pil)


def invert(
    model: Model,
    image: ImageSource,
    prompt: str = "",
    *,
    method: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    negative_prompt: str = "",
    seed: int = 0,
    fit: Fit = "model",
    progress: bool = False,
    classifier_guidance: ClassifierGuidance | None = None,
    **method_options: Any,
) -> Inversion:
    """Find the noise that ``method``'s sampler turns back into ``image``.

    ``classifier_guidance`` guides the inversion's sampler with a noise-aware classifier toward a
    class (`unsample.core.classifier`); the inversion records its scale and labels, and its
    replay and edits need a classifier passed again (the file holds no code).
    """
    spec = get_method(method)
    config = spec.config.from_options(method_options, method)
    _check_guidance(guidance, "guidance")
    check_prompt_words(model, prompt)
    spec.check_applies(model.schedule)
    pixels = prepare_image(model, image, fit)
    counter = CallCounter()
    denoiser = model.denoiser(prompt, guidance=guidance, negative_prompt=negative_prompt, dtype=config.dtype, counter=counter,
                              classifier=classifier_guidance)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    latent = model.encode_image(pixels)
    grid = config.make_grid(model.schedule_for(_latent_size(latent)), steps)
    with _progress(progress, steps, f"invert ({method})") as callback, torch.no_grad(), \
            _naming_the_step(grid, "inverting", method):
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
        stats=out.stats | _classifier_record(classifier_guidance),
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
    classifier_guidance: ClassifierGuidance | None = None,
) -> Sample:
    """Run the inversion's own sampler from ``start_step`` (prompt and guidance default to the inversion's)."""
    inversion.check_model(model)
    _check_classifier(inversion, classifier_guidance, "replay")
    spec = get_method(inversion.method)
    config = spec.config.from_options(dict(inversion.options), inversion.method)
    grid = config.make_grid(model.schedule_for(_latent_size(inversion.trajectory)), inversion.steps)
    grid.check_start(start_step)
    prompt = inversion.prompt if prompt is None else prompt
    guidance = inversion.guidance if guidance is None else guidance
    negative = inversion.negative_prompt if negative_prompt is None else negative_prompt
    counter = CallCounter()
    denoiser = model.denoiser(prompt, guidance=guidance, negative_prompt=negative, dtype=config.dtype, counter=counter,
                              classifier=classifier_guidance)
    inverted = MethodOutput(trajectory=inversion.trajectory.to(model.device), extras={k: v.to(model.device) for k, v in inversion.extras.items()})
    start = time.perf_counter()
    with _progress(progress, inversion.steps - start_step, f"sample ({inversion.method})") as callback, torch.no_grad(), \
            _naming_the_step(grid, "sampling", inversion.method):
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
    raise InputError(f"output={output!r} is not supported; use pil, latent or result")


def reconstruct(model: Model, inversion: Inversion, *, output: Output = "pil", progress: bool = False,
                classifier_guidance: ClassifierGuidance | None = None) -> Any:
    """Replay the sampler from the inverted noise with the inversion's own prompt and guidance.

    ``output="pil"`` decodes to an image, ``"latent"`` returns the replayed image latent (to
    check exactness without 8-bit rounding), ``"result"`` the `Sample` with its cost.
    """
    return _present(model, replay(model, inversion, progress=progress, classifier_guidance=classifier_guidance), output)


MaskSpec = Any
"""An edit mask: "none", "noise", "attention", "intersect", a PNG path, a PIL image, or a bool
array / tensor of the image's or the latent's size (True / white = may change)."""


def edit(
    model: Model,
    inversion: Inversion,
    prompt: str,
    *,
    start_step: int = 0,
    guidance: float | None = defaults.EDIT_GUIDANCE,
    negative_prompt: str | None = None,
    source_prompt: str | None = None,
    control: str = "none",
    blend_words: tuple[str, ...] | list[str] = (),
    reweight: dict[str, float] | None = None,
    cross_steps: float = 0.8,
    self_steps: float = 0.4,
    direct: bool = False,
    mask: MaskSpec = None,
    mask_dilate: int = 0,
    blend_start: float = 0.0,
    noise_mask: NoiseMaskConfig | None = None,
    output: Output = "pil",
    progress: bool = False,
    classifier_guidance: ClassifierGuidance | None = None,
    on_step: StepCallback | None = None,
) -> Any:
    """Edit: resume the inversion's sampler at ``start_step`` with the target ``prompt``.

    ``guidance`` is the edit's CFG (default ``unsample.defaults.EDIT_GUIDANCE``; None: the
    inversion's own, which replays an exact inversion exactly). ``mask`` (default None:
    "attention" when ``blend_words`` are given, else ``unsample.defaults.EDIT_MASK``; "none" for
    no mask) confines the change: outside it, after every step from fraction ``blend_start``, the
    edit takes the inverted trajectory's state, so the background ends as the image latent itself.
    "noise" is DiffEdit's mask from the noise predictions of the two prompts (``noise_mask`` holds
    its knobs; default: DiffEdit's with ``unsample.defaults.EDIT_MASK_RULE`` / ``EDIT_MASK_SMOOTH``), "attention" the cross-attention maps of ``blend_words`` (default: the words that
    differ between the prompts), "intersect" both, or a user mask (PNG path, PIL image, array);
    ``mask_dilate`` grows it by latent cells. A noise or user mask needs one branch only.

    ``control`` = "replace" (word swap), "refine" (words added) or "reweight" injects the
    source's attention maps into the target for the first ``cross_steps`` / ``self_steps``
    fraction of steps (prompt-to-prompt); ``direct=True`` pulls the source branch back onto the
    inverted trajectory every step (Direct Inversion). Those run source and target together (two
    branches). ``source_prompt`` defaults to the inversion's prompt. ``output="result"`` gives an
    `EditSample` with the mask and the cost (the noise mask's model calls included).

    ``classifier_guidance`` steers the edit toward its class (e.g. an inversion at the source
    class edited toward the target class); it needs one branch, and the mask defaults to "none"
    (the noise mask compares two prompts, which a classifier edit may not have).

    ``on_step(i, latent)`` is called after each sampling step with the target branch's state
    ([1, C, h, w], the model's latent space), e.g. to collect the edit's trajectory.
    """
    from unsample.editing.branches import Blend, edit_latent
    from unsample.editing.tokens import changed_words

    if control not in ("none", "replace", "refine", "reweight"):
        raise InputError(f"control={control!r} is not one of none, replace, refine, reweight")
    if control == "reweight" and not reweight:
        raise InputError("control='reweight' needs reweight={word: scale}")
    if not isinstance(prompt, str) or (not prompt.strip() and classifier_guidance is None):
        raise InputError("edit needs the target prompt (a non-empty string); to replay the source use reconstruct()")
    _check_guidance(guidance, "guidance", allow_none=True)
    for text in (prompt, source_prompt):
        if text is not None:
            check_prompt_words(model, text)
    inversion.check_model(model)
    if not isinstance(start_step, int) or not 0 <= start_step <= inversion.steps:
        raise InputError(f"start_step={start_step} is outside 0..{inversion.steps} for this {inversion.steps}-step inversion")
    source = inversion.prompt if source_prompt is None else source_prompt
    if mask is None:
        mask = "attention" if blend_words else "none" if classifier_guidance is not None else defaults.EDIT_MASK
    kind = mask if isinstance(mask, str) and mask in MASK_KINDS else "user"
    if kind == "user" and isinstance(mask, str) and not Path(mask).suffix:
        raise InputError(f"mask={mask!r} is not one of {', '.join(MASK_KINDS)} nor an image file (PNG)")
    words = tuple(blend_words) or tuple(dict.fromkeys(sum(changed_words(source, prompt), [])))
    if kind in ("attention", "intersect") and not words:
        raise InputError("an attention mask needs words that differ between the prompts, or blend_words")
    if (control != "none" or kind in ("attention", "intersect") or reweight) and not model.supports_attention_control:
        raise InputError(
            f"prompt-to-prompt control and attention masks need a UNet's cross-attention; {type(model).__name__} "
            "has none the editor can hook yet: use mask='noise' (the default) or a mask image, and control='none'"
        )
    counter, mask_counter = CallCounter(), CallCounter()
    mask_nfe = 0
    begin = time.perf_counter()
    latent_hw = (int(inversion.trajectory.shape[-2]), int(inversion.trajectory.shape[-1]))
    fixed = None
    if kind in ("noise", "intersect"):
        from unsample.editing.masks import noise_mask as diffedit_mask

        g = inversion.guidance if guidance is None else guidance
        negative = inversion.negative_prompt if negative_prompt is None else negative_prompt
        den = model.denoiser(source, guidance=g, negative_prompt=negative, counter=mask_counter)
        den = den.with_conditioning(
            den.cond.cat(model.encode_prompt(prompt)),
            uncond=den.uncond.cat(den.uncond) if den.uncond is not None else None,
        )
        settings = noise_mask or NoiseMaskConfig(rule=defaults.EDIT_MASK_RULE, smooth=defaults.EDIT_MASK_SMOOTH)
        with torch.no_grad():
            fixed = diffedit_mask(den, inversion.image_latent.to(model.device), settings)
        # the counter counts a batched call as one evaluation per CFG half; the mask's batch is 2K
        mask_nfe = 2 * settings.draws * (2 if den.guided else 1)
    elif kind == "user":
        from unsample.editing.masks import user_mask

        fixed = user_mask(mask, tuple(inversion.image_size), latent_hw,
                          fit=lambda pil: fit_image(pil, model.resolution, model.size_multiple, "model"))
    attention = None
    if control != "none" or kind in ("attention", "intersect") or reweight:
        from unsample.editing.attention import AttentionControl

        attention = AttentionControl(
            mode="refine" if control == "none" else control,  # type: ignore[arg-type]
            cross_steps=cross_steps if control != "none" else 0.0,
            self_steps=self_steps if control != "none" else 0.0,
            reweight=dict(reweight or {}),
            blend_words=words if kind in ("attention", "intersect") else (),
        )
    blend = None
    if kind != "none":
        blend = Blend(mask=fixed, attention=kind in ("attention", "intersect"), start=blend_start, dilate=mask_dilate)
    spec = get_method(inversion.method)
    grid = spec.config.from_options(dict(inversion.options), inversion.method).make_grid(
        model.schedule_for(_latent_size(inversion.trajectory)), inversion.steps)
    with _progress(progress, inversion.steps - start_step, f"edit ({inversion.method})") as bar, \
            _naming_the_step(grid, "editing", inversion.method):
        res = edit_latent(
            model, inversion, prompt, source_prompt=source_prompt, start_step=start_step, guidance=guidance,
            negative_prompt=negative_prompt, control=attention, direct=direct, blend=blend,
            progress=_target_row_callback(bar, on_step),
            counter=counter, classifier=classifier_guidance,
        )
    sample = EditSample(
        latent=res.target_latent, nfe=counter.nfe, model_calls=counter.calls + mask_counter.calls,
        seconds=time.perf_counter() - begin,
        start_step=start_step, prompt=prompt, guidance=res.guidance, branches=res.branches,
        mask=res.mask, mask_source=kind, source_prompt=source, mask_nfe=mask_nfe,
    )
    return _present(model, sample, output)


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
    fit: Fit = "model",
    output: Output = "pil",
    progress: bool = False,
) -> Any:
    """Edit ``image`` from ``source_prompt`` to ``target_prompt`` by FlowEdit: no inversion, the
    edit path moves by the difference of the two prompts' predictions at shared noisy copies of
    the image (`unsample.editing.flowedit`; paper defaults for SD3: 50 steps, the first 17
    skipped, CFG 3.5 / 13.5). ``draws`` noise draws per step (n_avg); the noise comes from ``seed``.
    Runs on every family (in flow coordinates on the DDPM family)."""
    from unsample.editing.flowedit import flowedit_latent

    for value, name in ((source_guidance, "source_guidance"), (target_guidance, "target_guidance")):
        _check_guidance(value, name)
    for text in (source_prompt, target_prompt):
        if not isinstance(text, str):
            raise InputError("flowedit needs a source and a target prompt (strings)")
        check_prompt_words(model, text)
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps={steps} must be a whole number >= 1")
    if not isinstance(start_step, int) or not 0 <= start_step < steps:
        raise InputError(f"start_step={start_step} is outside 0..{steps - 1} for {steps} steps (FlowEdit's n_max = "
                         "steps - start_step)")
    pixels = prepare_image(model, image, fit)
    counter = CallCounter()
    begin = time.perf_counter()
    latent = model.encode_image(pixels)
    grid = get_method("ddim").config.from_options({}, "ddim").make_grid(model.schedule_for(_latent_size(latent)), steps)
    src = model.denoiser(source_prompt, guidance=source_guidance, negative_prompt=negative_prompt, counter=counter)
    tar = model.denoiser(target_prompt, guidance=target_guidance, negative_prompt=negative_prompt, counter=counter)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with _progress(progress, steps - start_step, "flowedit") as callback, torch.no_grad(), \
            _naming_the_step(grid, "editing", "flowedit"):
        edited = flowedit_latent(src, tar, grid, latent, start_step=start_step, draws=draws, generator=generator,
                                 callback=callback)
    sample = EditSample(
        latent=edited, nfe=counter.nfe, model_calls=counter.calls, seconds=time.perf_counter() - begin,
        start_step=start_step, prompt=target_prompt, guidance=float(target_guidance), source_prompt=source_prompt,
    )
    return _present(model, sample, output)


def check_prompt_words(model: Model, prompt: str, *, allow: bool = True) -> list[str]:
    """The words of ``prompt`` that ``model``'s tokenizer does not know (they would be dropped).

    A prompt longer than the text encoder's window is said the same way (its tail would be cut).

    When there are any, ``allow=True`` warns with `UnknownWordsWarning` (from
    ``unsample.backends.vocabulary``) and returns them; ``allow=False`` raises ValueError. The
    message is one line naming the words and, for a closed vocabulary, the words the model knows.
    """
    import warnings

    from unsample.backends.vocabulary import UnknownWordsWarning, prompt_problems

    overflow, words, unknown = prompt_problems(model, prompt)
    for message in (overflow, unknown):
        if message is not None:
            if not allow:
                raise InputError(message)
            warnings.warn(message, UnknownWordsWarning, stacklevel=2)
    return words
