"""Prompt-to-prompt attention control (Hertz et al., "Prompt-to-Prompt Image Editing with Cross
Attention Control", 2022), through diffusers attention processors.

The editing loop samples two branches in one batch, source and target (``[src, tgt]`` inside each
CFG half). At step i of a grid of N steps (time label ``timesteps[i]``, fraction f = i / N,
counted from the noise end), with M_src, M_tgt the attention probabilities of one layer:

    cross-attention, f < cross_steps:   M_tgt <- align(M_src)           (replace / refine / reweight)
    cross-attention, every step:        M_tgt[..., j] *= w_j             (reweight, after any alignment)
    self-attention,  f < self_steps:    M_tgt <- M_src                   (small maps only, see below)
    edit mask after step i:             m from the blend words' maps (`blend_mask`), which the editing
                                        loop blends with the inverted trajectory (`unsample.editing.branches`)

``align`` is the token alignment of `unsample.editing.tokens`: for "replace" target token j takes
source map j (equal token counts; a swapped word gets the map of the word it replaces), for
"refine" and "reweight" tokens common to both prompts take the source's maps and new tokens keep
their own (refine rows are not renormalised, as in the paper). The reweight factors w_j scale the
target tokens of the chosen words; all other w_j are 1.

Choices, where the paper's text or code leaves room:

- Only the conditional half is controlled. The unconditional half (the null or negative prompt,
  the same for both branches) runs untouched, bit-exact the stock attention; the paper's code
  likewise edits only the conditional half of its CFG batch.
- Reweighting applies at every step (the paper only inside the cross-attention window), so a
  reweight alone, with cross_steps = 0, still acts.
- Self-attention injection acts only at layers whose map side is at most ``self_max_side`` times
  the latent side (default 1/4: the paper's 16 x 16 and smaller maps for SD's 64 x 64 latents);
  large self-attention maps carry the source's fine detail and would freeze the target.
- Local blend: at every step the head-averaged cross-attention maps of the blend words (each word
  as found in the source and/or the target prompt) are summed over layers and steps so far, per
  map size. The mask uses the map size whose side is closest to a quarter of the latent side (SD's 16 x 16
  maps of its 64 x 64 latents, as in the paper) but at least ``blend_map_side`` = 16 cells when the
  latent has them (on a 16 x 16 latent a 4 x 4 map could not place an object): 3 x 3 max-pooled, resized to
  the latent (nearest), divided by its maximum, thresholded at ``blend_threshold``; the source
  mask and the target mask are united. (The paper blends the target with the source branch from
  step fraction 0.2; here the editing loop blends with the inversion itself, from its own start.)

Every call that is not controlled goes to the layer's original processor, so with control off
the UNet's output is bit-exact its stock output; controlled calls run the original processor
first too and only overwrite the target row, so the source branch stays bit-exact as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from unsample.core.denoiser import CFG_LAYOUT, ModelFn
from unsample.editing.processor import CallPlan, ControlledAttnProcessor
from unsample.editing.tokens import prompt_words, refine_alignment, replace_alignment, word_positions
from unsample.errors import InputError

Mode = Literal["replace", "refine", "reweight"]
MODES: tuple[str, ...] = ("replace", "refine", "reweight")


@dataclass(frozen=True)
class AttentionControl:
    """The knobs of prompt-to-prompt control (see the module docstring for what each does)."""

    mode: Mode
    cross_steps: float = 0.8
    """Fraction of sampling steps, from the noise end, in which the target's cross-attention is the source's."""
    self_steps: float = 0.4
    """Fraction of sampling steps in which the target's (small) self-attention maps are the source's."""
    reweight: dict[str, float] = field(default_factory=dict)
    """Target-prompt word -> scale of its cross-attention (at every step)."""
    blend_words: tuple[str, ...] = ()
    """Words whose cross-attention maps define the region the edit may change (local blend)."""
    blend_threshold: float = 0.3
    self_max_side: float = 0.25
    """Largest self-attention map side that gets injected, as a fraction of the latent side."""
    blend_map_side: int = 16
    """Fewest cells per side of the maps the blend mask is read from, when the latent has them
    (see the module docstring): on small latents a quarter-side map could not place an object."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode={self.mode!r} is not one of {', '.join(MODES)}")
        for name in ("cross_steps", "self_steps", "self_max_side"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name}={value} must be a fraction in [0, 1]")
        if self.blend_map_side < 1:
            raise InputError(f"blend_map_side={self.blend_map_side} must be a positive number of cells")
        if not 0.0 < self.blend_threshold < 1.0:
            raise InputError(f"blend_threshold={self.blend_threshold} must be in (0, 1) (maps are scaled to max 1)")
        for word, scale in self.reweight.items():
            if not isinstance(word, str) or not word.strip():
                raise InputError(f"reweight keys must be words of the target prompt, got {word!r}")
            if not math.isfinite(float(scale)):
                raise InputError(f"reweight[{word!r}]={scale} must be a finite number")
        if self.mode == "reweight" and not self.reweight:
            raise InputError("mode='reweight' needs reweight={word: scale} with at least one word of the target prompt")
        if isinstance(self.blend_words, str):
            raise InputError(f"blend_words must be a tuple of words, got the string {self.blend_words!r}")


class PromptToPrompt:
    """Attention control for one edit: token alignment, step tracking, processors, local blend.

    Use: ``model_fn = p2p.wrap_model_fn(model.model_fn)``; sample the [source, target] batch with
    that model_fn inside ``with p2p.installed():``; ``p2p.blend_mask(size)`` is the blend words' mask so far.
    """

    def __init__(
        self,
        model: Any,
        source_prompt: str,
        target_prompt: str,
        control: AttentionControl,
        timesteps: torch.Tensor,
        guided: bool,
        cfg_layout: tuple[str, str] = CFG_LAYOUT,
    ) -> None:
        if sorted(cfg_layout) != ["cond", "uncond"]:
            raise InputError(f"cfg_layout={cfg_layout!r} must order the two halves 'uncond' and 'cond'")
        self.model = model
        self.control = control
        self.source_prompt = source_prompt
        self.target_prompt = target_prompt
        self.timesteps = torch.as_tensor(timesteps).detach().to("cpu", torch.float64).flatten()
        if self.timesteps.numel() == 0:
            raise InputError("timesteps is empty; pass the grid's time labels")
        self.guided = bool(guided)
        self.cfg_layout = tuple(cfg_layout)
        self.batch = 4 if self.guided else 2
        half = self.cfg_layout.index("cond") if self.guided else 0
        self.source_row, self.target_row = 2 * half, 2 * half + 1

        tokenizer = model.pipe.tokenizer
        if control.mode == "replace":
            self.source_index = replace_alignment(tokenizer, source_prompt, target_prompt)
        else:
            self.source_index = refine_alignment(tokenizer, source_prompt, target_prompt)
        self.token_count = int(self.source_index.numel())
        self.scale = torch.ones(self.token_count)
        for word, factor in control.reweight.items():
            positions = word_positions(tokenizer, target_prompt, word)
            if not positions:
                raise InputError(
                    f"reweight word {word!r} is not in the target prompt {target_prompt!r} "
                    f"(its words: {prompt_words(tokenizer, target_prompt)})"
                )
            self.scale[positions] = float(factor)
        self.source_blend = torch.tensor(
            [p for w in control.blend_words for p in word_positions(tokenizer, source_prompt, w)], dtype=torch.long
        )
        self.target_blend = torch.tensor(
            [p for w in control.blend_words for p in word_positions(tokenizer, target_prompt, w)], dtype=torch.long
        )
        for word in control.blend_words:
            if not word_positions(tokenizer, source_prompt, word) and not word_positions(tokenizer, target_prompt, word):
                raise InputError(
                    f"blend word {word!r} is in neither prompt (source words: {prompt_words(tokenizer, source_prompt)}, "
                    f"target words: {prompt_words(tokenizer, target_prompt)})"
                )

        self.blend_maps: dict[int, torch.Tensor] = {}
        """The attention store: map size (query tokens n) -> [2, n] float32, the blend words'
        attention of [source, target], averaged over heads, summed over the words, the layers and
        the steps since `installed` was entered. It does not grow with the steps: its size is
        `store_bytes` (SD 1.5 at 512 px: maps of 4096, 1024, 256 and 64 cells, 2 x 4 x 5440 =
        43,520 bytes), and only cross-attention calls with blend words record into it."""
        self._step: int | None = None
        self._latent_tokens: int | None = None
        self._installed = False
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    # ---- step tracking -------------------------------------------------------------------------

    def step_of(self, t: torch.Tensor | float) -> int:
        """The grid index whose time label is nearest to ``t``."""
        value = float(torch.as_tensor(t, dtype=torch.float64).flatten()[0])
        return int((self.timesteps - value).abs().argmin())

    def fraction(self, step: int) -> float:
        return step / len(self.timesteps)

    def wrap_model_fn(self, model_fn: ModelFn) -> ModelFn:
        """``model_fn`` that first records the call's step (from its time label) and latent size."""

        def controlled(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
            if x.shape[0] != self.batch:
                raise InputError(
                    f"prompt-to-prompt expects a batch of {self.batch} ([source, target]"
                    f"{' per CFG half' if self.guided else ''}), got {x.shape[0]}; guided={self.guided} "
                    "must match the Denoiser's guidance"
                )
            self._step = self.step_of(t)
            self._latent_tokens = int(x.shape[-2] * x.shape[-1])
            try:
                return model_fn(x, t, cond)
            finally:
                self._step = None

        return controlled

    @property
    def _does_anything(self) -> bool:
        c = self.control
        return c.cross_steps > 0 or c.self_steps > 0 or bool(self._reweights) or bool(c.blend_words)

    @property
    def _reweights(self) -> bool:
        return bool((self.scale != 1).any())

    # ---- the processors' side ------------------------------------------------------------------

    def plan_call(self, is_cross: bool, n_query: int, batch: int) -> CallPlan | None:
        if not self._does_anything:
            return None
        if self._step is None or self._latent_tokens is None:
            raise RuntimeError(
                "the UNet ran under prompt-to-prompt control without a step; call it through "
                "PromptToPrompt.wrap_model_fn(model_fn)"
            )
        if batch != self.batch:
            raise InputError(f"prompt-to-prompt expects a UNet batch of {self.batch}, got {batch}")
        f = self.fraction(self._step)
        c = self.control
        if is_cross:
            edit = f < c.cross_steps or self._reweights
            record = bool(c.blend_words)
        else:
            small = n_query <= (c.self_max_side**2) * self._latent_tokens
            edit = f < c.self_steps and small
            record = False
        if not (edit or record):
            return None
        return CallPlan(self.source_row, self.target_row, edit=edit, record=record)

    def _on(self, name: str, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = tensor.to(like.device, like.dtype if tensor.is_floating_point() else tensor.dtype)
        return self._cache[key]

    def edit_probs(self, is_cross: bool, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The target's new attention probabilities [heads, queries, keys] for this call."""
        if not is_cross:
            return source
        if target.shape[-1] != self.token_count:
            raise InputError(
                f"the cross-attention has {target.shape[-1]} key tokens but the prompts were aligned over "
                f"{self.token_count}; this backend's text conditioning does not match its tokenizer"
            )
        if self._step is not None and self.fraction(self._step) < self.control.cross_steps:
            index = self._on("index", self.source_index, target)
            mapped = source[..., index.clamp(min=0)]
            target = torch.where(index >= 0, mapped, target)
        if self._reweights:
            target = target * self._on("scale", self.scale, target)
        return target

    def record_probs(self, n_query: int, source: torch.Tensor, target: torch.Tensor) -> None:
        """Add the blend words' columns of one layer's probabilities [heads, n_query, keys] of the
        source and the target, averaged over heads and summed over the words, to the store."""
        maps = []
        for probs, index in ((source, self.source_blend), (target, self.target_blend)):
            if index.numel() == 0:
                maps.append(torch.zeros(n_query, dtype=torch.float32, device="cpu"))
            else:  # the words' columns first: the copy made is [heads, n_query, words], not every key's
                maps.append(probs[..., index.to(probs.device)].float().mean(0).sum(-1).cpu())
        stacked = torch.stack(maps)
        if n_query in self.blend_maps:
            self.blend_maps[n_query] = self.blend_maps[n_query] + stacked
        else:
            self.blend_maps[n_query] = stacked

    def store_bytes(self) -> int:
        """Bytes the attention store holds now (`blend_maps`): 2 x 4 x the sum of its map sizes."""
        return sum(m.numel() * m.element_size() for m in self.blend_maps.values())

    # ---- installation --------------------------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[PromptToPrompt]:
        """Our processors on every attention layer of ``model.pipe.unet``; the originals come back on exit."""
        if self._installed:
            raise RuntimeError("this PromptToPrompt is installed already; nest nothing, use one `with` block")
        unet = self.model.pipe.unet
        originals = dict(unet.attn_processors)
        self.blend_maps = {}
        self._installed = True
        try:
            unet.set_attn_processor(
                {name: ControlledAttnProcessor(self, proc, name) for name, proc in originals.items()}
            )
            yield self
        finally:
            # set_attn_processor consumes the dict it is given; hand it a copy.
            unet.set_attn_processor(dict(originals))
            self._installed = False
            self._step = None

    # ---- local blend ---------------------------------------------------------------------------

    def blend_mask(self, size: tuple[int, int]) -> torch.Tensor:
        """The editable region [h, w] (bool) at latent size ``size``, from the blend words' maps so far."""
        if not self.blend_maps:
            raise RuntimeError(
                "local blend has no attention maps yet; run a step through wrap_model_fn inside installed()"
            )
        h, w = int(size[0]), int(size[1])
        shapes = {}
        for n in self.blend_maps:
            f = math.sqrt(h * w / n)
            hl, wl = round(h / f), round(w / f)
            if hl * wl == n:
                shapes[n] = (hl, wl)
        if not shapes:
            raise InputError(f"no recorded attention map size {sorted(self.blend_maps)} fits a {h} x {w} latent")
        # The map size whose side is nearest (in log scale) to the wanted side; ties -> finer.
        latent_side = math.sqrt(h * w)
        side = max(latent_side / 4.0, min(float(self.control.blend_map_side), latent_side))
        n = min(shapes, key=lambda k: (abs(math.log(math.sqrt(k) / side)), -k))
        hl, wl = shapes[n]
        maps = self.blend_maps[n].reshape(2, 1, hl, wl)
        maps = F.max_pool2d(maps, kernel_size=3, stride=1, padding=1)
        maps = F.interpolate(maps, size=(h, w), mode="nearest")
        peak = maps.amax(dim=(-2, -1), keepdim=True)
        maps = torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))
        return (maps > self.control.blend_threshold).any(dim=0)[0]
