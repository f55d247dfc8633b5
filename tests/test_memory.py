"""Memory options: CPU offload (`unsample.load(offload=...)`, ``--offload``), the VAE's automatic
tiling and slicing, the row cap of one network call (`unsample.core.rows`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unsample
from unsample.backends import devices
from unsample.backends.diffusers_common import VAE_TILE_LATENT_SIDE, vae_decode, vae_tiled
from unsample.cli import app
from unsample.core.rows import call_in_chunks, capped
from unsample.errors import InputError


def test_offload_on_the_cpu_is_one_clear_line(tiny_pipeline_dir: Path) -> None:
    with pytest.raises(InputError, match="needs --device cuda"):
        unsample.load(str(tiny_pipeline_dir), device="cpu", offload="model")
    with pytest.raises(InputError, match="not one of none, model, sequential"):
        unsample.load(str(tiny_pipeline_dir), device="cpu", offload="disk")
    r = CliRunner().invoke(app, ["vocabulary", "--model", str(tiny_pipeline_dir), "--device", "cpu", "--offload", "sequential"])
    assert r.exit_code == 2 and "needs --device cuda" in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_installs_diffusers_hooks_and_keeps_the_results(tiny_pipeline_dir: Path, offload: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' offload accepts the CPU as its execution device, so the hooks run here as on a GPU."""
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = unsample.load(str(tiny_pipeline_dir), device="cpu")
    monkeypatch.setattr(devices, "OFFLOAD_DEVICE_TYPES", ("cpu",))
    off = unsample.load(str(tiny_pipeline_dir), device="cpu", offload=offload)
    for part in (off.pipe.unet, off.pipe.vae, off.pipe.text_encoder):
        assert hasattr(part, "_hf_hook")  # accelerate's hook, installed by diffusers' enable_*_cpu_offload
    assert not hasattr(plain.pipe.unet, "_hf_hook")
    if offload == "sequential":
        assert off.pipe.unet.conv_in.weight.device.type == "meta"  # the weights live in the hook's map
    assert off.device == torch.device(off.pipe._execution_device)
    assert off.fingerprint == plain.fingerprint
    if offload == "sequential":
        # accelerate 1.16's sequential hooks fail to put a CPU weight back on the meta device under
        # torch 2.13 (a Parameter rebuild), so with the CPU as the execution device the run stops there
        return
    a = unsample.invert(plain, image, "a red cat", method="ddim", steps=3)
    b = unsample.invert(off, image, "a red cat", method="ddim", steps=3)
    assert torch.allclose(a.trajectory, b.trajectory, atol=1e-5)


def test_vae_tiling_is_automatic_above_the_threshold_and_can_be_forced(tiny_model) -> None:
    side = VAE_TILE_LATENT_SIDE
    assert not vae_tiled((side, side), None) and vae_tiled((side + 1, 8), None)
    assert vae_tiled((8, 8), True) and not vae_tiled((side * 4, side * 4), False)
    vae = tiny_model.pipe.vae
    seen: list[tuple[bool, bool]] = []
    decode = vae.decode

    def spy(z, *args, **kwargs):
        seen.append((vae.use_tiling, vae.use_slicing))
        return decode(z, *args, **kwargs)

    vae.decode = spy
    z = torch.randn(2, 4, 8, 8)
    vae_decode(vae, z[:1], tiny_model.device)
    vae_decode(vae, z, tiny_model.device, tiling=True)
    assert seen == [(False, False), (True, True)]  # slicing for a batch, tiling as forced
    assert (vae.use_tiling, vae.use_slicing) == (False, False)  # the VAE's own settings come back
    with pytest.raises(InputError, match="vae_tiling"):
        unsample.load(None, device="cpu", vae_tiling="yes")  # type: ignore[arg-type]


class _Cond:
    def __init__(self, embeds: torch.Tensor, pooled: torch.Tensor) -> None:
        self.embeds, self.pooled = embeds, pooled

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"embeds": self.embeds, "pooled": self.pooled}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> _Cond:
        return cls(tensors["embeds"], tensors["pooled"])


def test_a_capped_call_is_the_same_rows_in_chunks() -> None:
    calls: list[int] = []

    def net(x: torch.Tensor, t: torch.Tensor, cond: _Cond) -> torch.Tensor:
        calls.append(x.shape[0])
        assert cond.embeds.shape[0] == x.shape[0] and t.shape[0] == x.shape[0]
        return x * t.view(-1, 1) + cond.embeds.sum(-1) + cond.pooled.sum()  # pooled: one row, broadcast

    x, t = torch.randn(7, 3), torch.rand(7)
    cond = _Cond(torch.randn(7, 3, 2).sum(-1, keepdim=True).expand(7, 3, 2).clone(), torch.randn(1, 5))
    whole = net(x, t, cond)
    for cap in (1, 3, 7, None):
        calls.clear()
        assert torch.equal(call_in_chunks(net, x, t, cond, cap), whole)
        assert calls == {1: [1] * 7, 3: [3, 3, 1], 7: [7], None: [7]}[cap]
    assert capped(net, None) is net
    with pytest.raises(InputError, match="max_rows"):
        capped(net, 0)


def test_the_networks_attend_through_scaled_dot_product_attention(tiny_model) -> None:
    """diffusers' default processors on torch 2 call F.scaled_dot_product_attention; nothing of
    unsample replaces them outside prompt-to-prompt's `installed` block."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for part in (tiny_model.pipe.unet, tiny_model.pipe.vae):
        assert part.attn_processors and all(isinstance(p, AttnProcessor2_0) for p in part.attn_processors.values())
