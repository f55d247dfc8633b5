"""One specification per edit: every setting, its default, its bounds and its validation.

`EditSpec` is the edit the user asks for. `unsample.edit` takes one (or keyword arguments that
build one); the CLI's ``unsample edit`` options, the web page's edit controls, the batch
manifest's fields of an edit job and the edit bench's rows are made from its fields, and the JSON
sidecar written beside an edit holds `EditSpec.to_json` and reads back with `EditSpec.from_json`.
Adding a setting is one field here (with `setting`), its use, and a test.

Each field's metadata (`Setting`) says how the outer layers show it: its help line, how a text
value parses (a plain value, a comma list, ``WORD=SCALE`` pairs, repeated ``KEY=VALUE``), the key
it has in a batch manifest when that differs from the field's name (the manifest predates the
spec: its ``guidance`` is the inversion's, ``edit_guidance`` the edit's), and whether the page
shows it. The defaults are `unsample.defaults`' (chosen on the edit bench).
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from unsample import defaults
from unsample.core.bounds import BOUNDS_KEY, Bounds, bounds_of, check_kind
from unsample.editing.ladder import DEFAULT_BUDGET, rung_names
from unsample.editing.masks import MASK_SOURCES, NoiseMaskConfig
from unsample.errors import InputError
from unsample.images import Fit, canonical_fit
from unsample.methods.options import parse_options
from unsample.methods.registry import get_method

MAX_GUIDANCE = 100.0
"""The largest classifier-free guidance scale any entry point takes."""
GUIDANCE_BOUNDS = Bounds(0.0, MAX_GUIDANCE, note="1 means no classifier-free guidance", kind="a finite number ")
"""The range of every guidance scale (the edit's, the inversion's, FlowEdit's)."""

Control = Literal["none", "replace", "refine", "reweight"]
OutputSize = Literal["input", "working"]
MaskRule = Literal["otsu", "diffedit"]
Text = Literal["plain", "csv", "pairs", "repeat"]
"""How a setting's text (a CLI option, a page box) parses: as its type, a comma-separated list,
``WORD=SCALE`` pairs separated by commas, or a repeated ``KEY=VALUE`` option."""
SETTING_KEY = "setting"


@dataclass(frozen=True)
class Setting:
    """How the outer layers show one `EditSpec` field."""

    help: str
    text: Text = "plain"
    manifest_key: str | None = None
    """The field's key in a batch manifest when it is not the field's own name."""
    on_page: bool = True
    """The web page has a control for it (the page leaves a few to the CLI and the API)."""
    flag: str | None = None
    """The CLI option when it is not ``--`` + the name with dashes (``--option`` for ``options``)."""
    label: str | None = None
    """What errors call it when not its name (the words earlier messages used: "mask dilation")."""


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, bounds: Bounds | None = None, text: Text = "plain",
            manifest_key: str | None = None, on_page: bool = True, flag: str | None = None,
            label: str | None = None) -> Any:
    """An `EditSpec` field: its default, help line, declared range and how it is shown."""
    if bounds is None and (low is not None or high is not None):
        integer = isinstance(default, int) and not isinstance(default, bool)
        bounds = Bounds(low, high, low_open, high_open, integer)
    meta: dict[str, Any] = {SETTING_KEY: Setting(help, text, manifest_key, on_page, flag, label)}
    if bounds is not None:
        meta[BOUNDS_KEY] = bounds
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class EditSpec:
    """Every setting of an edit. ``None`` for ``source_prompt``, ``negative_prompt`` and
    ``guidance`` means "the inversion's own"; ``mask=None`` means the default rule (`mask_source`)."""

    target_prompt: str = setting("", "The prompt of the edited image.", label="the target prompt")
    source_prompt: str | None = setting(None, "Describes the source (default: the inversion's prompt); needed to "
                                              "edit an image.")
    negative_prompt: str | None = setting(None, "The negative prompt (default: the inversion's).", on_page=False)
    guidance: float | None = setting(defaults.EDIT_GUIDANCE, "CFG of the edit.", bounds=GUIDANCE_BOUNDS,
                                     manifest_key="edit_guidance")
    start_step: int = setting(0, "Resume sampling at this step (0 = from the noise).", low=0)
    control: Control = setting("none", "none|replace|refine|reweight (prompt-to-prompt).")
    blend_words: tuple[str, ...] = setting((), "Comma-separated words for local blend.", text="csv")
    reweight: dict[str, float] = setting({}, "WORD=SCALE, comma-separated or repeated (control reweight).",
                                         text="pairs")
    cross_steps: float = setting(0.8, "Fraction of steps with cross-attention injection.", low=0, high=1)
    self_steps: float = setting(0.4, "Fraction of steps with self-attention injection.", low=0, high=1)
    direct: bool = setting(False, "Direct Inversion: keep the source branch on the inverted path.", on_page=False)
    mask: Any = setting(None, f"noise|attention|intersect|none|FILE.png (white = may change); outside it the edit "
                              f"keeps the inverted trajectory (default: attention with --blend-words, else "
                              f"{defaults.EDIT_MASK}).")
    mask_dilate: int = setting(0, "Grow the mask by this many latent cells.", low=0, on_page=False,
                              label="mask dilation")
    blend_start: float = setting(0.0, "Step fraction from which the mask acts (0 = every step).", low=0, high=1,
                                 on_page=False, label="blend start")
    mask_rule: MaskRule = setting(defaults.EDIT_MASK_RULE, "Noise mask threshold: otsu|diffedit (DiffEdit's 1.5 x "
                                                           "mean).", on_page=False, label="mask rule")
    mask_smooth: int = setting(defaults.EDIT_MASK_SMOOTH, "Noise mask smoothing radius, latent cells.", low=0,
                               on_page=False, label="mask smooth")
    mask_strength: float = setting(0.5, "Noise level of the noise mask's draws (DiffEdit's 0.5).", low=0, high=1,
                                   low_open=True, high_open=True, on_page=False)
    mask_draws: int = setting(10, "Noise draws the noise mask averages (DiffEdit's 10).", low=1, on_page=False)
    mask_ratio: float = setting(3.0, "The noise mask's clamp, a multiple of the map's mean (DiffEdit's 3).", low=0,
                                low_open=True, on_page=False)
    mask_threshold: float = setting(0.5, "The noise mask's threshold on the clamped map (DiffEdit's 0.5).", low=0,
                                    high=1, low_open=True, high_open=True, on_page=False)
    check: bool = setting(True, "Judge the edit by the model's own denoising errors under the two prompts "
                                "(unsample.editing.check; about a fifth of the edit's cost).")
    recipe: str | None = setting(None, f"Pin one recipe of the ladder ({', '.join(rung_names())}) instead of "
                                       "escalating.", on_page=False)
    escalate: bool = setting(True, "When the check says the edit did not take, try the ladder's next recipe "
                                   "(unsample.editing.ladder) within the budget.")
    budget: int = setting(DEFAULT_BUDGET, "Network evaluations an escalating edit may spend in all.", low=1,
                          on_page=False)
    fidelity: bool = setting(True, "Say when the model cannot represent the input image (its autoencoder's round "
                                   "trip, one decode; unsample.editing.fidelity).")
    paste_back: bool = setting(True, "Outside the mask, take the input's own pixels (at the output size) over a "
                                     "feathered seam, so the background is exact (unsample.editing.paste); "
                                     "--no-paste-back keeps the decoded pixels.")
    paste_seam: int = setting(defaults.PASTE_SEAM, "Paste-back's seam width in pixels, feathered inside the mask "
                                                   "(0 = a hard cut).", low=0, high=defaults.PASTE_SEAM_MAX,
                              on_page=False, label="paste seam")
    fit: Fit = setting("area", "How an image is sized for the model: area (keep the aspect ratio at about the "
                       "model's native pixel count), crop (centre square; alias model), native (its own size; alias "
                       "multiple). See unsample.images.")
    output_size: OutputSize = setting("input", "input: the edit is written at the input image's own size (area, "
                                      "native); working: at the size the model edited it.")
    method: str = setting(defaults.EDIT_METHOD, "Inversion method when the source is an image.", on_page=False)
    steps: int = setting(defaults.EDIT_STEPS, "Steps when the source is an image.", low=1, on_page=False)
    inversion_guidance: float = setting(defaults.INVERSION_GUIDANCE, "CFG of the inversion when the source is an "
                                        "image.", bounds=GUIDANCE_BOUNDS, manifest_key="guidance", on_page=False)
    options: dict[str, Any] = setting({}, "Method option KEY=VALUE when the source is an image (repeatable).",
                                      text="repeat", on_page=False, flag="--option")
    seed: int = setting(0, "Seed of the inversion's and the noise mask's draws.", on_page=False)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            _check_field(f, hints[f.name], value)
        if self.control == "reweight" and not self.reweight:
            raise InputError("control='reweight' needs reweight={word: scale}")
        if isinstance(self.mask, str) and self.mask not in MASK_SOURCES and not Path(self.mask).suffix:
            raise InputError(f"mask={self.mask!r} is not one of {', '.join(MASK_SOURCES)} nor an image file (PNG)")
        if self.recipe is not None and self.recipe not in rung_names():
            raise InputError(f"recipe={self.recipe!r} is not a rung of the ladder; use one of {', '.join(rung_names())}")
        object.__setattr__(self, "blend_words", tuple(self.blend_words))
        object.__setattr__(self, "fit", canonical_fit(self.fit))

    # ------------------------------------------------------------ the rules that read settings

    def mask_source(self, classifier: bool = False) -> Any:
        """The mask the edit uses: the given one, else "attention" when blend words are given,
        "none" for a classifier-guided edit (the noise mask compares two prompts), else the default."""
        if self.mask is not None:
            return self.mask
        return "attention" if self.blend_words else "none" if classifier else defaults.EDIT_MASK

    def noise_mask(self) -> NoiseMaskConfig:
        """DiffEdit's knobs for this edit's noise mask."""
        return NoiseMaskConfig(strength=self.mask_strength, draws=self.mask_draws, ratio=self.mask_ratio,
                               threshold=self.mask_threshold, seed=self.seed, rule=self.mask_rule, smooth=self.mask_smooth)

    # ------------------------------------------------------------ reading and writing

    def replace(self, **changes: Any) -> EditSpec:
        """A copy with ``changes`` (checked like a new spec)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise InputError(f"an edit has no setting(s) {', '.join(unknown)}; its settings are {', '.join(names())}")
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Every setting as JSON values (a user mask given as an image is written as "user")."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "mask" and value is not None and not isinstance(value, (str, Path)):
                value = "user"
            out[f.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else \
                dict(value) if isinstance(value, dict) else value
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "edit") -> EditSpec:
        """The spec a JSON object (`to_json`'s, a sidecar's "edit", a manifest's fields) describes;
        unknown keys and values of the wrong type are one-line errors naming ``where``."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: the edit settings must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(names()))
        if unknown:
            raise InputError(f"{where}: unknown edit setting(s) {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) and k == "blend_words" else v for k, v in data.items()}
        try:
            return cls(**values)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None


def spec_from_text(values: dict[str, Any]) -> EditSpec:
    """The spec that text values describe, as a command line or a form gives them: each setting's
    value parsed by its declared `Text` (a comma list, ``WORD=SCALE`` pairs, repeated
    ``KEY=VALUE`` method options, checked against the chosen method's config); a missing key
    takes the default, an empty text of an optional setting means None."""
    parsed: dict[str, Any] = {}
    for info in settings():
        if info.name not in values:
            continue
        raw = values[info.name]
        if info.setting.text == "csv":
            raw = parse_words(raw or "") if isinstance(raw, str) or raw is None else tuple(raw)
        elif info.setting.text == "pairs":
            raw = parse_pairs(raw or [], info.flag)
        elif isinstance(raw, str) and not raw.strip() and type(None) in get_args(info.hint):
            raw = None
        parsed[info.name] = raw
    options = parsed.pop("options", None) or []
    method = parsed.get("method", defaults.EDIT_METHOD)
    if isinstance(options, dict):
        parsed["options"] = options
    elif isinstance(method, str):
        parsed["options"] = parse_options(get_method(method).config, list(options), method)
    return EditSpec(**parsed)


def _check_field(f: Field[Any], hint: Any, value: Any) -> None:
    """A field's value against its type hint and declared bounds (one-line InputError)."""
    name = f.metadata[SETTING_KEY].label or f.name
    args = get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional or f.name == "mask":
            return
        raise InputError(f"{name} must be given (got None); see EditSpec for every setting")
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if get_origin(base) is Literal:
        if value not in get_args(base):
            raise InputError(f"{name}={value!r} is not one of {', '.join(map(str, get_args(base)))}")
    elif base is float:
        check_kind(name, value, (int, float))
        if not math.isfinite(value):
            raise InputError(f"{name}={value} must be a finite number")
    elif base in (int, bool, str) and not (base is int and bounds_of(f) is not None):
        check_kind(name, value, (base,))
    elif get_origin(base) is tuple:
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{name} must be a list of words, got {value!r}")
    elif get_origin(base) is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise InputError(f"{name} must be a mapping of names to values, got {value!r}")
        if f.name == "reweight":
            for word, scale in value.items():
                check_kind(f"reweight[{word!r}]", scale, (int, float))
    bounds = bounds_of(f)
    if bounds is not None:
        bounds.check(name, value)


def names() -> list[str]:
    """The settings of an edit, in declaration order."""
    return [f.name for f in fields(EditSpec)]


@dataclass(frozen=True)
class SettingInfo:
    """One setting as an outer layer builds a control for it."""

    name: str
    hint: Any
    default: Any
    bounds: Bounds | None
    setting: Setting

    @property
    def flag(self) -> str:
        """The CLI option, e.g. ``--mask-dilate``."""
        return self.setting.flag or "--" + self.name.replace("_", "-")

    @property
    def manifest_key(self) -> str:
        return self.setting.manifest_key or self.name

    @property
    def choices(self) -> tuple[Any, ...]:
        base = next((a for a in get_args(self.hint) if a is not type(None)), self.hint) \
            if type(None) in get_args(self.hint) else self.hint
        return get_args(base) if get_origin(base) is Literal else ()


def settings() -> list[SettingInfo]:
    """Every setting with its type, default, bounds and presentation, in declaration order."""
    hints = typing.get_type_hints(EditSpec)
    rows = []
    for f in fields(EditSpec):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        rows.append(SettingInfo(f.name, hints[f.name], default, bounds_of(f), f.metadata[SETTING_KEY]))
    return rows


def setting_info(name: str) -> SettingInfo:
    """The `SettingInfo` of one setting."""
    for row in settings():
        if row.name == name:
            return row
    raise InputError(f"an edit has no setting {name!r}; its settings are {', '.join(names())}")


def parse_pairs(text: str | list[str], what: str = "reweight") -> dict[str, float]:
    """``"red=2, circle=0.5"`` (or a list of such texts) -> {"red": 2.0, "circle": 0.5}."""
    parts = [p.strip() for t in ([text] if isinstance(text, str) else text) for p in t.split(",") if p.strip()]
    out: dict[str, float] = {}
    for part in parts:
        word, sep, raw = part.partition("=")
        try:
            if not sep or not word.strip():
                raise ValueError
            out[word.strip()] = float(raw)
        except ValueError:
            raise InputError(f"{what} {part!r} is not WORD=SCALE (e.g. red=2)") from None
    return out


def parse_words(text: str) -> tuple[str, ...]:
    """``"red, circle"`` -> ("red", "circle")."""
    return tuple(w.strip() for w in text.split(",") if w.strip())
