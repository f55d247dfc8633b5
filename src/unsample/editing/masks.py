"""Edit masks at latent resolution: where an edit may change the image.

Sources (`MASK_SOURCES`), each usable alone, all needing only the Denoiser's inputs:

- ``noise``: DiffEdit's mask (Couairon et al., "DiffEdit: Diffusion-based semantic image editing
  with mask guidance", ICLR 2023). With the image latent x0 noised to strength s,
  ``x_k = sqrt(a_s) x0 + sqrt(1 - a_s) n_k`` for K seeded draws n_k, the map is

      D = mean_k mean_c |eps(x_k, s, target) - eps(x_k, s, source)|       [H, W]
      M = (clamp(D, 0, r * mean(D)) / (r * mean(D))) > tau

  with the paper's / diffusers' ``generate_mask`` defaults s = 0.5, K = 10, r = 3, tau = 0.5. Both
  prompts see the same K noised latents, all 2K (4K with CFG) in one batched model call.
  The rule cannot select more than 1 / (r tau) of the image (2/3 with the defaults: a cell is kept
  when D > r tau mean(D)), so an edit of a large region (the background) gets too small a mask;
  ``rule="otsu"`` thresholds D at Otsu's split instead (scikit-image's ``threshold_otsu``), which
  picks the high-difference class whatever its size. ``smooth`` = r averages D over (2r + 1)^2
  cells first, so a textured region (stripes, dots) does not split into its light and dark parts.
- ``attention``: the cross-attention maps of the words that differ between the prompts
  (prompt-to-prompt's local blend, `unsample.editing.attention`); it evolves during sampling, so
  it is computed by the editing loop, not here.
- ``intersect``: both at once (LEDITS++'s intersection of an attention map and a noise map).
- a user mask: a PNG (white = may change), fitted like the image, pooled to the latent (a cell
  may change if any of its pixels may).

Symbols -> names: s -> ``strength``, K -> ``draws``, r -> ``ratio``, tau -> ``threshold``.
Every mask can be dilated by ``dilate`` latent cells (a square neighbourhood).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unsample.errors import InputError
from unsample.images import load_image

MASK_SOURCES: tuple[str, ...] = ("none", "noise", "attention", "intersect")


@dataclass(frozen=True)
class NoiseMaskConfig:
    """DiffEdit's knobs (defaults from the paper / diffusers' ``generate_mask``)."""

    strength: float = 0.5
    """Noise level the image latent is taken to, as a fraction of the training timesteps."""
    draws: int = 10
    ratio: float = 3.0
    threshold: float = 0.5
    seed: int = 0
    rule: str = "diffedit"
    """"diffedit" (clamp at ratio x mean, threshold) or "otsu" (Otsu's threshold on the map)."""
    smooth: int = 0
    """Box-filter radius in latent cells applied to the map before thresholding (0 = none)."""

    def __post_init__(self) -> None:
        if self.rule not in ("diffedit", "otsu"):
            raise InputError(f"mask rule={self.rule!r} is not diffedit or otsu")
        if not isinstance(self.smooth, int) or self.smooth < 0:
            raise InputError(f"mask smooth={self.smooth} must be a whole number of latent cells >= 0")
        if not (math.isfinite(self.strength) and 0.0 < self.strength < 1.0):
            raise InputError(f"mask strength={self.strength} must be a fraction in (0, 1) (DiffEdit: 0.5)")
        if not isinstance(self.draws, int) or self.draws < 1:
            raise InputError(f"mask draws={self.draws} must be a positive whole number (DiffEdit: 10)")
        if not (math.isfinite(self.ratio) and self.ratio > 0):
            raise InputError(f"mask ratio={self.ratio} must be a positive number (DiffEdit: 3)")
        if not (math.isfinite(self.threshold) and 0.0 < self.threshold < 1.0):
            raise InputError(f"mask threshold={self.threshold} must be in (0, 1) (DiffEdit: 0.5)")


def repeat_conditioning(cond: Any, times: int) -> Any:
    """A conditioning with every sample repeated ``times`` times in a row (batch B -> B * times)."""
    tensors = {k: v.repeat_interleave(times, dim=0) for k, v in cond.tensors().items()}
    return type(cond).from_tensors(tensors)


def noise_map(
    denoiser: Any, latent: torch.Tensor, config: NoiseMaskConfig = NoiseMaskConfig()
) -> torch.Tensor:
    """DiffEdit's difference map D [H, W] (float), before clamping and thresholding.

    ``denoiser`` is a `Denoiser` whose conditioning is the batch [source, target] (and the
    matching unconditional pair when guided); ``latent`` is the image latent [1, C, H, W].
    """
    if latent.shape[0] != 1:
        raise InputError(f"noise_map takes one image latent [1, C, H, W], got batch {latent.shape[0]}")
    schedule = denoiser.schedule
    steps = int(schedule.num_train_timesteps)
    t = torch.tensor(float(round(config.strength * (steps - 1))), dtype=torch.float64)
    alpha, sigma = (c.to(latent.device, denoiser.dtype) for c in schedule.alpha_sigma_at(t.reshape(1)))
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    k = config.draws
    noise = torch.randn((k, *latent.shape[1:]), generator=generator, dtype=torch.float32).to(latent.device, denoiser.dtype)
    # noise the latent K times; both prompts see the same K noised latents
    noised = alpha * latent.to(denoiser.dtype) + sigma * noise
    batched = denoiser.with_conditioning(
        repeat_conditioning(denoiser.cond, k),
        uncond=repeat_conditioning(denoiser.uncond, k) if denoiser.uncond is not None else None,
    )
    eps = batched(torch.cat([noised, noised]), t)
    source, target = eps[:k], eps[k:]
    return (target - source).abs().mean(dim=(0, 1))


def threshold_map(diff: torch.Tensor, ratio: float, threshold: float) -> torch.Tensor:
    """DiffEdit's rule: clamp at ``ratio`` times the mean, scale to [0, 1], keep what is above ``threshold``."""
    clamp = diff.mean() * ratio
    if not bool(clamp > 0):
        return torch.zeros_like(diff, dtype=torch.bool)
    return (diff.clamp(0, clamp) / clamp) > threshold


def otsu_map(diff: torch.Tensor) -> torch.Tensor:
    """Cells of ``diff`` above Otsu's threshold (the split that best separates two classes)."""
    from skimage.filters import threshold_otsu  # scikit-image takes ~0.4 s to import: loaded on use

    values = diff.detach().cpu().double().numpy()
    if float(values.max() - values.min()) <= 0:
        return torch.zeros_like(diff, dtype=torch.bool)
    return torch.from_numpy(values > threshold_otsu(values)).to(diff.device)


def noise_mask(denoiser: Any, latent: torch.Tensor, config: NoiseMaskConfig = NoiseMaskConfig()) -> torch.Tensor:
    """DiffEdit's mask [H, W] (bool) at latent resolution: True where the edit may change."""
    diff = noise_map(denoiser, latent, config)
    if config.smooth:
        r = config.smooth
        diff = F.avg_pool2d(diff[None, None], 2 * r + 1, stride=1, padding=r, count_include_pad=False)[0, 0]
    if config.rule == "otsu":
        return otsu_map(diff)
    return threshold_map(diff, config.ratio, config.threshold)


def dilate(mask: torch.Tensor, cells: int) -> torch.Tensor:
    """``mask`` [H, W] grown by ``cells`` latent cells in every direction (square neighbourhood)."""
    if cells < 0:
        raise InputError(f"mask dilation {cells} must be >= 0 latent cells")
    if cells == 0:
        return mask.bool()
    grown = F.max_pool2d(mask.float()[None, None], kernel_size=2 * cells + 1, stride=1, padding=cells)
    return grown[0, 0] > 0


def pool_to_latent(pixels: np.ndarray | torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A pixel mask [H, W] (bool) -> [h, w]: a latent cell may change when any of its pixels may."""
    m = torch.as_tensor(np.asarray(pixels, dtype=bool))
    h, w = latent_hw
    if m.ndim != 2 or m.shape[0] % h or m.shape[1] % w:
        raise InputError(f"a mask of {tuple(m.shape)} pixels does not tile a {h} x {w} latent; give the image's size")
    fh, fw = m.shape[0] // h, m.shape[1] // w
    return m.reshape(h, fh, w, fw).any(dim=3).any(dim=1)


def user_mask(
    mask: str | Path | Any, image_hw: tuple[int, int], latent_hw: tuple[int, int], fit: Any = None
) -> torch.Tensor:
    """A user's mask -> [h, w] bool at latent resolution.

    Accepted: a path or PIL image (white = may change, fitted to the image like the image itself
    by ``fit(pil) -> pil``), a bool / 0-1 array or tensor of the image's size or the latent's size
    (or, with ``fit``, of another size, such as the input's own before sizing: fitted like an image).
    """

    if isinstance(mask, (str, Path)):
        mask = load_image(mask)
    if isinstance(mask, Image.Image):
        pil = mask.convert("L")
        if fit is not None:
            pil = fit(pil.convert("RGB")).convert("L")
        if pil.size != (image_hw[1], image_hw[0]):
            pil = pil.resize((image_hw[1], image_hw[0]), Image.Resampling.NEAREST)
        return pool_to_latent(np.asarray(pil) >= 128, latent_hw)
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InputError(f"a mask array must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InputError("a mask array must be bool or hold values in [0, 1] (1 = may change)")
        arr = arr >= 0.5
    if tuple(arr.shape) == tuple(latent_hw):
        return torch.from_numpy(arr.copy())
    if tuple(arr.shape) == tuple(image_hw):
        return pool_to_latent(arr, latent_hw)
    if fit is not None:  # another size (the input's own, before sizing): fitted like the image
        return user_mask(Image.fromarray(arr.astype(np.uint8) * 255), image_hw, latent_hw, fit)
    raise InputError(f"a mask of shape {arr.shape} fits neither the image {image_hw} nor the latent {latent_hw}")


def overlay(
    image: Any, mask: torch.Tensor, color: tuple[int, int, int] = (255, 230, 0), alpha: float = 0.5, min_side: int = 256
) -> Any:
    """The image (PIL) with the mask's cells tinted: what the edit was allowed to change.

    Small images are enlarged (nearest neighbour) to at least ``min_side`` pixels so the cells show.
    """

    image = image.convert("RGB")
    scale = max(1, -(-min_side // min(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    rgb = np.asarray(image, dtype=np.float32)
    h, w = rgb.shape[:2]
    m = Image.fromarray(mask.cpu().numpy().astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
    sel = (np.asarray(m) > 0)[..., None]
    tinted = np.where(sel, (1 - alpha) * rgb + alpha * np.asarray(color, dtype=np.float32), rgb)
    return Image.fromarray(np.clip(np.rint(tinted), 0, 255).astype(np.uint8))
