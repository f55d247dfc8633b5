"""Image and noise statistics for the benchmarks (metrics from scikit-image, not hand-written)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from unsample.images import tensor_to_pil


def decoded_uint8(model: Any, latent: torch.Tensor) -> np.ndarray:
    """The model's decode of an image latent as a uint8 (H, W, 3) array, as the user would see it."""
    return np.asarray(tensor_to_pil(model.decode_latent(latent.float())))


def image_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """MSE and PSNR on [0, 1] pixels, SSIM (scikit-image); optionally only where ``mask`` is True.

    SSIM is computed on the whole image and averaged over the mask's pixels when a mask is given.
    """
    from skimage.metrics import structural_similarity  # heavy (scikit-image): loaded on use

    p = pred.astype(np.float64) / 255
    t = target.astype(np.float64) / 255
    _, ssim_map = structural_similarity(p, t, channel_axis=2, data_range=1.0, full=True)
    if mask is not None:
        if not mask.any():
            return {"mse": float("nan"), "psnr": float("nan"), "ssim": float("nan")}
        sq = ((p - t) ** 2)[mask]
        ssim = float(ssim_map[mask].mean())
    else:
        sq = (p - t) ** 2
        ssim = float(ssim_map.mean())
    mse = float(sq.mean())
    psnr = float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
    return {"mse": mse, "psnr": psnr, "ssim": ssim}


def lag1_autocorrelation(noise: torch.Tensor) -> float:
    """Mean correlation of horizontally and vertically neighbouring latent values, per channel.

    White noise gives ~0; image structure left in an "inverted noise" shows as a positive value.
    """
    x = noise.double()
    x = x - x.mean(dim=(-1, -2), keepdim=True)
    var = (x**2).mean(dim=(-1, -2)).clamp_min(1e-12)
    h = (x[..., :, 1:] * x[..., :, :-1]).mean(dim=(-1, -2)) / var
    v = (x[..., 1:, :] * x[..., :-1, :]).mean(dim=(-1, -2)) / var
    return float(((h + v) / 2).mean())


def expected_noise_std(alpha_T: float, latent: torch.Tensor, sigma_space: bool) -> float:
    """The std the inverted noise should have: sqrt(a_T var(x0) + 1 - a_T), times sqrt(1 + sigma^2) in sigma space."""
    var0 = float(latent.double().var())
    std = math.sqrt(alpha_T * var0 + 1 - alpha_T)
    return std * math.sqrt(1 / alpha_T) if sigma_space else std
