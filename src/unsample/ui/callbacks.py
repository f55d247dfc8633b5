"""The plain functions the page calls: read an upload, offer a prompt, invert, edit (and write the files).

They take and return ordinary values (PIL images, dataclasses), raise `unsample.errors.InputError`
(`UIError`) with a one-line message for anything the user can fix, and know nothing about gradio,
so they are tested without a browser. `unsample.ui.app` wires them to the page and shows
`error_text` of what they raise. An edit's settings are one `EditSpec`: the request's defaults
are the spec's, and `edit` reads the request into one spec for `unsample.edit`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

import unsample
from unsample.api import check_prompt_words
from unsample.backends.base import Model
from unsample.editing.fidelity import FIDELITY_KEY, input_fidelity
from unsample.editing.ladder import verdict_line
from unsample.editing.masks import MASK_SOURCES, overlay
from unsample.editing.spec import EditSpec, setting_info, spec_from_text
from unsample.errors import InputError, UnsampleError
from unsample.images import canonical_fit, fit_image, load_image, psnr
from unsample.outputs import write_png_with_sidecar
from unsample.ui import scenes
from unsample.ui.controls import methods_for, options_from_values
from unsample.ui.scenes import SceneProvider
from unsample.ui.session import CachedInversion, InversionKey, SessionState
from unsample.ui.settings import DISPLAY_MIN_SIDE, MAX_IMAGE_PIXELS, MAX_STEPS

log = logging.getLogger(__name__)

UPLOADED_MASK = "uploaded mask"
DRAWN_MASK = "drawn mask"
MASK_CHOICES: tuple[str, ...] = (*sorted(MASK_SOURCES, key=lambda source: source == "none"), DRAWN_MASK, UPLOADED_MASK)
"""The edit's mask sources: `EditSpec`'s named ones ("none" last), or the user's (drawn on the
image, or a PNG), which the edit's spec gets as an image."""
CONTROL_CHOICES: tuple[tuple[str, str], ...] = (
    ("prompt swap", "none"), ("prompt-to-prompt: replace", "replace"), ("prompt-to-prompt: refine", "refine"),
    ("prompt-to-prompt: reweight", "reweight"),
)
"""(label, `EditSpec.control`)."""
DEFAULT_MASK: str = EditSpec().mask_source()
"""The mask an edit without blend words gets by default (`EditSpec.mask_source`)."""
DEFAULT_FIT: str = setting_info("fit").default
"""How the photo is sized for the model (`EditSpec.fit`): the page keeps the photo as it was
uploaded and the API fits it; an edit comes back at the photo's own size."""


def spec_default(name: str) -> Any:
    """The default of the edit setting ``name`` (the page shows `EditSpec`'s own defaults)."""
    return setting_info(name).default


class UIError(InputError):
    """Something the user can fix, said in one line in the page."""


def error_text(err: BaseException) -> str:
    """The one line the page shows for ``err``: the message of an error the user can fix
    (`unsample.errors.UnsampleError`; an `OSError`, such as a full disk); anything else is a bug:
    its traceback goes to the server's log and the page says its type and first line."""
    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, (UnsampleError, OSError)):
        return first or type(err).__name__
    log.error("unexpected error in the UI", exc_info=err)
    return f"unexpected {type(err).__name__}: {first} (details in the server's log)"


# ---------------------------------------------------------------- images in


def read_upload(path: str | Path | None, what: str = "an image") -> Image.Image:
    """An uploaded file -> RGB PIL image; a non-image or one over `MAX_IMAGE_PIXELS` is refused
    (the size from the header, before the pixels are decoded)."""

    if path is None or not str(path):
        raise UIError(f"upload {what} first")
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as header:
                width, height = header.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            SyntaxError, ValueError):
        raise UIError(f"{name!r} is not an image this page can read; upload a PNG, JPEG or WebP file") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise UIError(f"{name!r} is {width} x {height} = {width * height:,} pixels, more than the "
                      f"{MAX_IMAGE_PIXELS:,} this page takes; downscale it first")
    try:
        return load_image(Path(path))
    except (UnsampleError, OSError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's decoding errors
        raise UIError(f"{name!r} could not be read as an image ({str(err).splitlines()[0]})") from None


def fit_for_model(model: Model, image: Image.Image) -> Image.Image:
    """The image at the model's own square (shorter side to the resolution, centre crop): what a
    scene provider reads to suggest a source prompt (its scenes are square)."""

    return fit_image(image.convert("RGB"), model.resolution, model.size_multiple, "model")


def working_image(model: Model, image: Image.Image, fit: str) -> Image.Image:
    """``image`` as the model works on it under ``fit`` (`unsample.images.fit_image`): what its
    inversion encodes, and what the inversion's round trip is compared with."""

    return fit_image(image.convert("RGB"), model.resolution, model.size_multiple, fit)  # type: ignore[arg-type]


def _at_size_of(model: Model, image: Image.Image, other: Image.Image, fit: str) -> Image.Image:
    """``image`` (the photo as uploaded) at ``other``'s size: itself, or as the model works on it."""
    return image if image.size == other.size else working_image(model, image, fit)


def _provider(given: SceneProvider | None) -> SceneProvider:
    return given if given is not None else scenes.installed_scenes()


def scene_image(caption: str, size: int, seed: int = 0, provider: SceneProvider | None = None) -> Image.Image:
    """A built-in scene, rendered at ``size`` pixels (its geometry seeded) by ``provider`` (default:
    the installed one, `unsample.ui.scenes.installed_scenes`)."""
    return _provider(provider).render(caption, size, seed)


def suggested_prompt(model: Model, image: Image.Image, provider: SceneProvider | None = None) -> str | None:
    """The source prompt ``provider`` (default: the installed one) suggests for ``image`` fitted to
    the model, given the model's vocabulary (the lab's shapes world: the detected scene's caption,
    for a model whose tokenizer knows every caption word); None when it has none."""
    return _provider(provider).suggest(model.vocabulary(), fit_for_model(model, image))


@dataclass
class ImageView:
    """What the page shows once an image is chosen."""

    preview: Image.Image
    suggestion: str | None
    note: str


def set_image(model: Model, state: SessionState, image: Image.Image, name: str,
              provider: SceneProvider | None = None) -> ImageView:
    """Make ``image`` the session's input, as it is (the API sizes it for the model, and an edit comes
    back at its own size), and offer a source prompt (``provider``'s suggestion; default: the
    installed scene provider's)."""
    photo = image.convert("RGB")
    state.image, state.image_name = photo, name
    suggestion = suggested_prompt(model, photo, provider)
    note = f"{name}: {image.width} x {image.height} px; its edits come back at this size"
    if suggestion is not None:
        note += "; the source prompt is the detected scene's caption (correct it if it is wrong)"
    return ImageView(preview=for_display(photo), suggestion=suggestion, note=note)


def for_display(image: Image.Image, min_side: int = DISPLAY_MIN_SIDE) -> Image.Image:
    """Enlarged with nearest neighbour to at least ``min_side`` a side, so small images show their pixels."""
    scale = max(1, -(-min_side // min(image.size)))
    return image if scale == 1 else image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


# ---------------------------------------------------------------- invert


@dataclass(frozen=True)
class InvertRequest:
    """The inversion the page asks for: prompt, method, its option values, steps, guidance and how
    the photo is sized for the model."""

    prompt: str
    method: str
    option_values: dict[str, Any] = field(default_factory=dict)
    steps: int = spec_default("steps")
    guidance: float = spec_default("inversion_guidance")
    fit: str = DEFAULT_FIT
    """`EditSpec.fit`: one of its choices."""


@dataclass
class InvertView:
    """An inversion as the page shows it: the reconstruction, its PSNR, the cost, the file."""

    entry: CachedInversion
    reused: bool
    reconstruction: Image.Image
    cost: str


def _whole_number(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UIError(f"{name} must be a whole number in {low}..{high}, got {value}")
    return value


def _guidance(value: Any, name: str, setting: str) -> float:
    """A guidance box's value in the range the edit ``setting`` declares, checked before any model
    work; an empty box is said, not replaced by a default."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UIError(f"{name} is empty; give a number (1 = no classifier-free guidance)")
    bounds = setting_info(setting).bounds
    assert bounds is not None  # every guidance setting declares its range
    bounds.check(name, value)
    return float(value)


def _checked_key(model: Model, state: SessionState, request: InvertRequest) -> tuple[InversionKey, dict[str, Any]]:
    if state.image is None:
        raise UIError("upload an image or pick a built-in scene first")
    if request.method not in model_methods(model):
        raise UIError(f"method {request.method!r} does not run on this model; choose one of "
                      f"{', '.join(model_methods(model))}")
    options = options_from_values(request.method, request.option_values)
    steps = _whole_number(request.steps, "steps", 1, MAX_STEPS)
    guidance = _guidance(request.guidance, "inversion guidance", "inversion_guidance")
    check_prompt_words(model, request.prompt, allow=False)
    fit = canonical_fit(request.fit)  # the earlier names ("model", "multiple") key the same inversion as the new
    return InversionKey.of(state.image, request.prompt, request.method, options, steps, guidance, fit), options


def model_methods(model: Model) -> list[str]:
    """The methods that run on ``model``."""

    return methods_for(model.schedule)


def _inversion(model: Model, state: SessionState, request: InvertRequest, progress: bool,
               checked: tuple[InversionKey, dict[str, Any]] | None = None) -> tuple[CachedInversion, bool]:
    """The session's cached inversion for ``request``, or a new one (and whether it was cached)."""

    key, options = checked or _checked_key(model, state, request)
    found = state.lookup(key)
    if found is not None:
        state.last_key = key
        return found, True
    assert state.image is not None
    # the prompt's words were checked by _checked_key: the API need not check them again
    # the photo as uploaded: the API fits it (key.fit) and keeps its own size for the edits
    inv = unsample.invert(model, state.image, request.prompt, method=request.method, steps=key.steps,
                          guidance=key.guidance, fit=key.fit, progress=progress, unknown_words="checked", **options)
    entry = CachedInversion(inversion=inv, file=inv.save(state.next_path("inversion", ".safetensors")))
    state.store(key, entry)
    state.last_key = key
    return entry, False


def _inversion_cost(inv: Any) -> str:
    return (f"{inv.method}, {inv.steps} steps, guidance {inv.guidance:g}: NFE {inv.nfe} "
            f"({inv.model_calls} model calls), {inv.seconds:.2f} s")


def invert(model: Model, state: SessionState, request: InvertRequest, progress: bool = False) -> InvertView:
    """Invert the session's image (or reuse the cached inversion) and reconstruct it."""

    entry, reused = _inversion(model, state, request, progress)
    if entry.reconstruction is None:
        sample = unsample.reconstruct(model, entry.inversion, output="result", progress=progress)
        entry.reconstruction = sample.image
        assert state.image is not None
        entry.psnr_db = psnr(_at_size_of(model, state.image, entry.reconstruction, request.fit), entry.reconstruction)
        entry.reconstruction_nfe, entry.reconstruction_seconds = sample.nfe, sample.seconds
    made = "inversion reused from this session (no new model calls); it cost " if reused else "inversion: "
    cost = (f"{made}{_inversion_cost(entry.inversion)}. Reconstruction: PSNR {entry.psnr_db:.2f} dB against the input "
            f"(NFE {entry.reconstruction_nfe}, {entry.reconstruction_seconds:.2f} s).")
    return InvertView(entry=entry, reused=reused, reconstruction=for_display(entry.reconstruction), cost=cost)


# ---------------------------------------------------------------- edit


@dataclass(frozen=True)
class EditRequest:
    """The edit the page asks for, as its controls give it (defaults: `EditSpec`'s); `edit` reads
    it into one `EditSpec`."""

    prompt: str
    control: str = spec_default("control")
    mask: str = DEFAULT_MASK
    """One of `MASK_CHOICES`."""
    drawn_mask: Any = None
    """gr.ImageEditor's value: a dict with "background", "layers", "composite" (numpy RGBA)."""
    mask_file: str | None = None
    start_step: int = spec_default("start_step")
    guidance: float = spec_default("guidance")
    reweight: str = ""
    """``WORD=SCALE, WORD=SCALE`` for control "reweight" (`EditSpec.reweight`'s text)."""
    blend_words: str = ""
    """``word, word`` (`EditSpec.blend_words`' text)."""
    cross_steps: float = spec_default("cross_steps")
    self_steps: float = spec_default("self_steps")
    recipe: str | None = spec_default("recipe")
    """A rung of the ladder to pin (`EditSpec.recipe`); None: the ladder, escalating as the check says."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The values of the page's generated controls (`unsample.ui.advanced.generated_settings`), by setting name."""


@dataclass
class EditView:
    """An edit as the page shows it: before / after (at the photo's own size, or the working size
    when asked for), the mask overlay, the check's verdict and warnings, the cost and the files."""

    before: Image.Image
    after: Image.Image
    mask_overlay: Image.Image | None
    verdict: str
    """The edit check's verdict and the warnings (the model cannot represent the photo), one per line; or ""."""
    cost: str
    files: list[Path]
    """The edited PNG and its JSON sidecar."""
    inversion_file: Path
    inversion_reused: bool


def mask_from_drawing(value: Any) -> Image.Image | None:
    """What the user painted on gr.ImageEditor (any colour, any opacity) -> an "L" mask (white =
    may change), or None when nothing is painted."""
    if not isinstance(value, dict):
        return None
    painted = None
    for layer in value.get("layers") or []:
        arr = np.asarray(layer)
        if arr.ndim == 3 and arr.shape[2] == 4:
            alpha = arr[..., 3] > 0
            painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return None
    return Image.fromarray(painted.astype(np.uint8) * 255, mode="L")


def _mask_spec(request: EditRequest) -> Any:
    if request.mask == DRAWN_MASK:
        drawn = mask_from_drawing(request.drawn_mask)
        if drawn is None:
            raise UIError("paint the region that may change on the image under 'Draw a mask' first")
        return drawn
    if request.mask == UPLOADED_MASK:
        return read_upload(request.mask_file, "a mask image (white = may change)").convert("L")
    if request.mask not in MASK_CHOICES:
        raise UIError(f"mask {request.mask!r} is not one of {', '.join(MASK_CHOICES)}")
    return request.mask


def edit_spec(request: EditRequest, mask: Any, start_step: int, guidance: float) -> EditSpec:
    """The one `EditSpec` of ``request``: its text boxes (reweight ``WORD=SCALE, ...``, blend words
    ``a, b``) parsed as the spec declares (`spec_from_text`), ``mask`` a named source or the user's
    "L" image, ``start_step`` and ``guidance`` already checked by the page's own rules."""
    generated = {name: _as_declared(name, value) for name, value in request.settings.items()}
    return spec_from_text(generated | {
        "target_prompt": request.prompt, "control": request.control, "mask": mask, "start_step": start_step,
        "guidance": guidance, "reweight": request.reweight, "blend_words": request.blend_words,
        "cross_steps": request.cross_steps, "self_steps": request.self_steps, "recipe": request.recipe,
    })


def _as_declared(name: str, value: Any) -> Any:
    """A generated control's value as its setting declares it: a number box gives 3.0 for an integer setting's 3."""
    default = setting_info(name).default
    integer = isinstance(default, int) and not isinstance(default, bool)
    return int(value) if integer and isinstance(value, float) and value.is_integer() else value


def edit(model: Model, state: SessionState, inversion: InvertRequest, request: EditRequest,
         progress: bool = False) -> EditView:
    """Edit the session's image with the target prompt: from the cached inversion when there is
    one for ``inversion``, else inverting first. Writes the PNG with its JSON sidecar."""

    if not request.prompt.strip():
        raise UIError("write the target prompt (what the edited image shows)")
    check_prompt_words(model, request.prompt, allow=False)  # the target's one check (the source's: _checked_key)
    guidance = _guidance(request.guidance, "edit guidance", "guidance")
    mask = _mask_spec(request)
    checked = _checked_key(model, state, inversion)
    key, options = checked
    spec = edit_spec(request, mask, _whole_number(request.start_step, "start step", 0, key.steps), guidance)
    # the spec names the inversion it edits, so its record (the sidecar's "edit") reproduces the edit from the photo
    spec = spec.replace(method=key.method, steps=key.steps, inversion_guidance=key.guidance, options=options, fit=key.fit)
    entry, reused = _inversion(model, state, inversion, progress, checked)
    inv = entry.inversion
    sample = unsample.edit(model, inv, spec, output="result", progress=progress, unknown_words="checked")
    assert state.image is not None and sample.image is not None
    # the photo's round trip is one decode of the inversion's latent, against the photo as the model works on it
    working = working_image(model, state.image, key.fit)
    fidelity = input_fidelity(model, model.image_to_tensor(working), latent=inv.image_latent) if spec.fidelity \
        else None
    # before / after: the photo and the edit at one size (the photo's own, unless the spec asked for the working size)
    before = _at_size_of(model, state.image, sample.image, key.fit)
    # the page's overlay is on the photo (EditSample's is on the autoencoder's reconstruction)
    mask_view = None if sample.mask is None else overlay(before, sample.mask, min_side=DISPLAY_MIN_SIDE)
    png = state.next_path("edit", ".png")
    record = {
        "command": "ui edit", "model": model.name, "source": state.image_name, "prompt": spec.target_prompt,
        "source_prompt": sample.source_prompt, "start_step": spec.start_step, "guidance": sample.guidance,
        "control": spec.control, "reweight": dict(spec.reweight), "blend_words": list(spec.blend_words),
        "cross_steps": spec.cross_steps, "self_steps": spec.self_steps,
        "mask": sample.mask_source if sample.mask_source != "user" else request.mask, "mask_area": sample.mask_area,
        "nfe": sample.network_evaluations, "mask_nfe": sample.mask_nfe, "model_calls": sample.model_calls,
        "seconds": round(sample.seconds, 3), "inversion_reused": reused, "inversion_file": entry.file.name,
        "inversion": inv.metadata(), "edit": spec.to_json(),
        "check": sample.check.to_json() if sample.check is not None else None,
        FIDELITY_KEY: fidelity.to_json() if fidelity is not None else None,
        "paste": sample.paste.to_json() if sample.paste is not None else None, "sizes": sample.sizes,
        "ladder": sample.ladder.to_json() if sample.ladder is not None else None,
    }
    sidecar = write_png_with_sidecar(sample.image, png, record)
    entry.edits += 1
    mask_part = f" (mask {sample.mask_nfe})" if sample.mask_nfe else ""
    cost = (f"edit {entry.edits} of this inversion: NFE {sample.network_evaluations}{mask_part}, {sample.model_calls} "
            f"model calls, {sample.seconds:.2f} s; ")
    if reused:
        cost += "inversion reused (no new model calls)"
    else:
        cost += (f"inverted first: {_inversion_cost(inv)} (total NFE {sample.network_evaluations + inv.nfe}); "
                 "the next edit reuses it")
    lines = []
    if sample.check is not None:
        c = sample.check
        line = verdict_line(c.edit_took, c.score, c.stderr, c.threshold, sample.ladder)
        lines.append(f"{line[0].upper()}{line[1:]}" if c.edit_took else f"**{line[0].upper()}{line[1:]}**")
    lines += [f"**{line[0].upper()}{line[1:]}**" for line in (fidelity.warnings() if fidelity is not None else [])]
    return EditView(before=before, after=sample.image, mask_overlay=mask_view, verdict="\n\n".join(lines), cost=cost,
                    files=[png, sidecar], inversion_file=entry.file, inversion_reused=reused)
