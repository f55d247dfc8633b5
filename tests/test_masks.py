"""Edit masks and masked blending with the inverted trajectory, against exact answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unsample
from unsample.core.denoiser import Denoiser
from unsample.core.schedule import NoiseSchedule
from unsample.editing.masks import NoiseMaskConfig, dilate, noise_map, noise_mask, pool_to_latent, threshold_map, user_mask


class _Cond:
    """A conditioning that is just a per-sample scale (batch [B])."""

    def __init__(self, scale: torch.Tensor) -> None:
        self.scale = scale

    def cat(self, other: "_Cond") -> "_Cond":
        return _Cond(torch.cat([self.scale, other.scale]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "_Cond":
        return cls(tensors["scale"])


def _schedule() -> NoiseSchedule:
    return NoiseSchedule.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})


def test_noise_map_is_the_mean_absolute_eps_difference() -> None:
    """eps(x, c) = c * w * x, so |eps_tgt - eps_src| = |c_t - c_s| * w * |x|, averaged over draws and channels."""
    w = torch.zeros(1, 2, 4, 4)
    w[..., 1:3, 1:3] = 1.0  # only the centre reacts to the prompt
    model = lambda x, t, cond: cond.scale.view(-1, 1, 1, 1) * w * x  # noqa: E731
    den = Denoiser(model, _schedule(), _Cond(torch.tensor([1.0, 3.0])))
    latent = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    cfg = NoiseMaskConfig(draws=3, seed=5)
    got = noise_map(den, latent, cfg)
    # the same noised latents by hand
    a = _schedule().alpha_at(torch.tensor([round(0.5 * 999.0)], dtype=torch.float64)).float()
    noise = torch.randn((3, 2, 4, 4), generator=torch.Generator().manual_seed(5))
    x = a.sqrt() * latent + (1 - a).sqrt() * noise
    expected = (2.0 * w * x).abs().mean(dim=(0, 1))
    assert torch.allclose(got, expected[0] if expected.dim() == 3 else expected, atol=1e-6)
    assert den.counter.calls == 1  # K draws x 2 prompts in one batched call
    mask = noise_mask(den, latent, cfg)
    assert mask[1:3, 1:3].all() and not mask[0].any() and not mask[:, 0].any()


def test_threshold_follows_diffedit() -> None:
    diff = torch.tensor([[0.0, 1.0], [2.0, 9.0]])  # mean 3, clamp at 9 -> [0, 1/9, 2/9, 1]
    assert torch.equal(threshold_map(diff, 3.0, 0.5), torch.tensor([[False, False], [False, True]]))
    assert torch.equal(threshold_map(diff, 1.0, 0.5), torch.tensor([[False, False], [True, True]]))
    assert not threshold_map(torch.zeros(2, 2), 3.0, 0.5).any()


def test_noise_mask_config_refuses_bad_values() -> None:
    for bad in ({"strength": 0.0}, {"strength": float("nan")}, {"draws": 0}, {"ratio": -1.0}, {"threshold": 1.0}):
        with pytest.raises(ValueError, match="mask"):
            NoiseMaskConfig(**bad)


def test_dilate_and_pooling() -> None:
    m = torch.zeros(5, 5, dtype=torch.bool)
    m[2, 2] = True
    assert int(dilate(m, 1).sum()) == 9 and int(dilate(m, 2).sum()) == 25 and torch.equal(dilate(m, 0), m)
    pixels = np.zeros((8, 8), dtype=bool)
    pixels[5, 6] = True
    assert torch.equal(pool_to_latent(pixels, (2, 2)), torch.tensor([[False, False], [False, True]]))
    with pytest.raises(ValueError, match="tile"):
        pool_to_latent(np.zeros((7, 8), dtype=bool), (2, 2))


def test_user_mask_from_png_array_and_latent(tmp_path) -> None:
    from PIL import Image

    arr = np.zeros((8, 8), dtype=np.uint8)
    arr[0:2, 0:5] = 255  # touches latent cells (0, 0) and (0, 1) of a 2 x 2 latent
    Image.fromarray(arr).save(tmp_path / "m.png")
    expected = torch.tensor([[True, True], [False, False]])
    assert torch.equal(user_mask(tmp_path / "m.png", (8, 8), (2, 2)), expected)
    assert torch.equal(user_mask(arr > 0, (8, 8), (2, 2)), expected)
    assert torch.equal(user_mask(np.eye(2, dtype=bool), (8, 8), (2, 2)), torch.eye(2, dtype=torch.bool))
    assert not user_mask(np.zeros((8, 8)), (8, 8), (2, 2)).any()
    with pytest.raises(ValueError, match="fits neither"):
        user_mask(np.zeros((3, 3)), (8, 8), (2, 2))
    with pytest.raises(ValueError, match="bool or hold values"):
        user_mask(np.full((2, 2), 7.0), (8, 8), (2, 2))


@pytest.mark.parametrize("method", ["edict", "bdia", "ddim", "null-text"])
def test_all_zero_mask_returns_the_image_latent_bit_for_bit(tiny_model, tiny_image, method: str) -> None:
    """Outside the mask every step takes the trajectory's state, and its last state is the image latent."""
    opts = {"inner_steps": 2} if method == "null-text" else {}
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method=method, steps=4, guidance=3.0, **opts)
    zero = torch.zeros(inv.trajectory.shape[-2:], dtype=torch.bool)
    res = unsample.edit(tiny_model, inv, "a green dog", mask=zero, output="result")
    assert torch.equal(res.latent, inv.image_latent.to(res.latent.dtype))
    assert torch.equal(res.mask, zero)
    if method in ("edict", "bdia"):  # exact methods: that is their reconstruction, to float precision
        rec = unsample.reconstruct(tiny_model, inv, output="latent")
        assert torch.allclose(rec.float(), inv.image_latent, atol=1e-3)


def test_masked_edit_keeps_the_trajectory_outside_and_matches_the_swap_inside(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=4, guidance=1.0)
    mask = torch.zeros(inv.trajectory.shape[-2:], dtype=torch.bool)
    mask[:, : mask.shape[1] // 2] = True
    res = unsample.edit(tiny_model, inv, "a green dog", guidance=3.0, mask=mask, check=False, output="result")
    swap = unsample.edit(tiny_model, inv, "a green dog", guidance=3.0, mask="none", check=False, output="latent")
    keep = ~mask
    assert torch.equal(res.latent[..., keep], inv.image_latent[..., keep])
    assert not torch.equal(res.latent[..., mask], inv.image_latent[..., mask])
    assert not torch.equal(res.latent, swap)  # the kept half changes what the model sees in the edited half
    assert res.network_evaluations == 4 * 2


def test_blend_start_delays_blending(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=4, guidance=1.0)
    zero = torch.zeros(inv.trajectory.shape[-2:], dtype=torch.bool)
    late = unsample.edit(tiny_model, inv, "a green dog", guidance=3.0, mask=zero, blend_start=0.75, check=False, output="latent")
    assert torch.equal(late, inv.image_latent)  # the last step (fraction 0.75) still blends
    never = unsample.edit(tiny_model, inv, "a green dog", guidance=3.0, mask=zero, blend_start=1.0, check=False, output="latent")
    swap = unsample.edit(tiny_model, inv, "a green dog", guidance=3.0, mask="none", check=False, output="latent")
    assert torch.equal(never, swap)


def test_noise_mask_edit_counts_the_mask_evaluations(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=4, guidance=1.0)
    res = unsample.edit(tiny_model, inv, "a green dog", guidance=3.0, mask="noise", check=False, output="result")
    assert res.mask_source == "noise" and res.mask.shape == inv.trajectory.shape[-2:]
    assert res.mask_nfe == 2 * 10 * 2 and res.network_evaluations == 4 * 2 + 40
    again = unsample.edit(tiny_model, inv, "a green dog", guidance=3.0, mask="noise", check=False, output="result")
    assert torch.equal(again.mask, res.mask)  # seeded draws


def test_bad_masks_are_refused(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=2)
    with pytest.raises(ValueError, match="not one of"):
        unsample.edit(tiny_model, inv, "a green dog", mask="blob")
    with pytest.raises(ValueError, match="differ between the prompts"):
        unsample.edit(tiny_model, inv, "a red cat", mask="attention")
    with pytest.raises(ValueError, match="dilation"):
        unsample.edit(tiny_model, inv, "a green dog", mask=torch.ones(inv.trajectory.shape[-2:], dtype=torch.bool), mask_dilate=-1)


def test_otsu_rule_selects_a_large_region_that_diffedit_cannot() -> None:
    """A map high on 80% of the cells: DiffEdit's rule (> 1.5 x mean) keeps none, Otsu keeps them all."""
    diff = torch.full((10, 10), 0.1)
    diff[:8] = 1.0
    assert not threshold_map(diff, 3.0, 0.5).any()
    from unsample.editing.masks import otsu_map

    assert torch.equal(otsu_map(diff), diff > 0.5)


def test_smoothing_averages_the_map_before_thresholding() -> None:
    w = torch.zeros(1, 1, 6, 6)
    w[..., :, :3] = 1.0  # the left half reacts to the prompt, in a 0/1 stripe pattern below
    w[..., 1::2, :3] = 0.2
    model = lambda x, t, cond: cond.scale.view(-1, 1, 1, 1) * w * torch.ones_like(x)  # noqa: E731
    den = Denoiser(model, _schedule(), _Cond(torch.tensor([0.0, 1.0])))
    latent = torch.zeros(1, 1, 6, 6)
    plain = noise_mask(den, latent, NoiseMaskConfig(rule="otsu", draws=2))
    smooth = noise_mask(den, latent, NoiseMaskConfig(rule="otsu", draws=2, smooth=1))
    assert plain[0::2, :3].all() and not plain[1::2].any()  # the stripes split the region
    assert smooth[:, :2].all() and not smooth[:, 4:].any()  # averaged, the region is whole
    with pytest.raises(ValueError, match="smooth"):
        NoiseMaskConfig(smooth=-1)
