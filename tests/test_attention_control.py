"""Prompt-to-prompt attention control on the tiny SD pipeline: processors, exactness, alignment, blend."""

from __future__ import annotations

import pytest
import torch

from unsample.editing import AttentionControl, PromptToPrompt
from unsample.editing.processor import ControlledAttnProcessor
from unsample.editing.tokens import refine_alignment, replace_alignment

STEPS = 10
SRC, TGT = "a red cat", "a green cat"


def _batch(model, guided: bool, source: str = SRC, target: str = TGT, seed: int = 0):
    """The UNet input of the editing loop: [src, tgt] per CFG half, uncond half first."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    cond = model.encode_prompt(source).cat(model.encode_prompt(target))
    if not guided:
        return x, cond
    null = model.encode_prompt("")
    return torch.cat([x, x]), null.cat(null).cat(cond)


def _run(model, p2p: PromptToPrompt | None, guided: bool, step: int, **prompts: str) -> torch.Tensor:
    x, cond = _batch(model, guided, **prompts)
    grid = model.schedule.grid(STEPS)
    t = grid.timesteps[step].expand(x.shape[0])
    with torch.no_grad():
        if p2p is None:
            return model.model_fn(x, t, cond)
        with p2p.installed():
            return p2p.wrap_model_fn(model.model_fn)(x, t, cond)


def _p2p(model, control: AttentionControl, guided: bool, source: str = SRC, target: str = TGT) -> PromptToPrompt:
    return PromptToPrompt(model, source, target, control, model.schedule.grid(STEPS).timesteps, guided=guided)


def _rows(guided: bool) -> tuple[list[int], int]:
    """Rows that must stay bit-exact (uncond half, source) and the target row."""
    return ([0, 1, 2], 3) if guided else ([0], 1)


def test_original_processors_come_back(tiny_model) -> None:
    unet = tiny_model.pipe.unet
    before = unet.attn_processors
    p2p = _p2p(tiny_model, AttentionControl("replace"), guided=False)
    with p2p.installed():
        inside = unet.attn_processors
        assert inside.keys() == before.keys()
        assert all(isinstance(p, ControlledAttnProcessor) for p in inside.values())
        assert all(inside[k].original is before[k] for k in before)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)

    with pytest.raises(RuntimeError, match="boom"):
        with p2p.installed():
            raise RuntimeError("boom")
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


@pytest.mark.parametrize("guided", [False, True])
def test_disabled_control_is_bit_exact(tiny_model, guided: bool) -> None:
    off = AttentionControl("replace", cross_steps=0.0, self_steps=0.0)
    base = _run(tiny_model, None, guided, 0)
    assert torch.equal(_run(tiny_model, _p2p(tiny_model, off, guided), guided, 0), base)
    # Recording maps for the local blend reads attention but changes nothing.
    blend_only = AttentionControl("refine", cross_steps=0.0, self_steps=0.0, blend_words=("cat",))
    p2p = _p2p(tiny_model, blend_only, guided)
    assert torch.equal(_run(tiny_model, p2p, guided, 0), base)
    assert set(p2p.blend_maps) == {64, 16}  # the 8 x 8 layers and the 4 x 4 mid block


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("mode,source,target", [("replace", SRC, TGT), ("refine", "a cat", "a red cat")])
def test_injection_changes_only_the_target(tiny_model, guided: bool, mode: str, source: str, target: str) -> None:
    keep, tgt = _rows(guided)
    base = _run(tiny_model, None, guided, 0, source=source, target=target)
    out = _run(tiny_model, _p2p(tiny_model, AttentionControl(mode), guided, source, target), guided, 0,  # type: ignore[arg-type]
               source=source, target=target)
    assert torch.equal(out[keep], base[keep])
    assert not torch.allclose(out[tgt], base[tgt])
    # Past the cross- and self-attention windows nothing is controlled: the stock output again.
    late = _run(tiny_model, _p2p(tiny_model, AttentionControl(mode), guided, source, target), guided, STEPS - 1,  # type: ignore[arg-type]
                source=source, target=target)
    assert torch.equal(late, _run(tiny_model, None, guided, STEPS - 1, source=source, target=target))


def test_self_attention_injection(tiny_model) -> None:
    base = _run(tiny_model, None, False, 0)
    self_only = AttentionControl("replace", cross_steps=0.0, self_steps=1.0, self_max_side=1.0)
    out = _run(tiny_model, _p2p(tiny_model, self_only, False), False, 0)
    assert torch.equal(out[0], base[0]) and not torch.allclose(out[1], base[1])
    # The default keeps self-attention injection to maps of at most 1/4 the latent side: none here.
    small_only = AttentionControl("replace", cross_steps=0.0, self_steps=1.0)
    assert torch.equal(_run(tiny_model, _p2p(tiny_model, small_only, False), False, 0), base)


def test_reweight(tiny_model) -> None:
    plain = _run(tiny_model, _p2p(tiny_model, AttentionControl("replace"), True), True, 0)
    unit = AttentionControl("replace", reweight={"green": 1.0})
    assert torch.equal(_run(tiny_model, _p2p(tiny_model, unit, True), True, 0), plain)
    strong = _run(tiny_model, _p2p(tiny_model, AttentionControl("replace", reweight={"green": 3.0}), True), True, 0)
    assert torch.equal(strong[:3], plain[:3]) and not torch.allclose(strong[3], plain[3])
    # A reweight acts alone, outside the injection window, too.
    alone = AttentionControl("reweight", cross_steps=0.0, self_steps=0.0, reweight={"green": 3.0})
    base = _run(tiny_model, None, False, 0)
    out = _run(tiny_model, _p2p(tiny_model, alone, False), False, 0)
    assert torch.equal(out[0], base[0]) and not torch.allclose(out[1], base[1])
    with pytest.raises(ValueError, match="not in the target prompt"):
        _p2p(tiny_model, AttentionControl("replace", reweight={"dog": 2.0}), False)
    with pytest.raises(ValueError, match="needs reweight"):
        AttentionControl("reweight")


def test_token_alignment(tiny_model) -> None:
    tok = tiny_model.pipe.tokenizer
    length = tok.model_max_length  # 12 for the tiny tokenizer
    assert torch.equal(replace_alignment(tok, "a red cat", "a green cat"), torch.arange(length))
    # "a cat" -> "a red cat": [bos a cat eos pad...] -> [bos a red cat eos pad...]; "red" is new.
    refine = refine_alignment(tok, "a cat", "a red cat")
    assert refine.tolist() == [0, 1, -1, 2] + list(range(3, length - 1))
    with pytest.raises(ValueError, match="use mode='refine'"):
        replace_alignment(tok, "a cat", "a red cat")
    with pytest.raises(ValueError, match="use mode='refine'"):
        _p2p(tiny_model, AttentionControl("replace"), False, "a cat", "a red cat")
    with pytest.raises(ValueError, match="in neither prompt"):
        _p2p(tiny_model, AttentionControl("refine", blend_words=("dog",)), False)


def test_blend_from_hand_made_maps(tiny_model) -> None:
    # blend_map_side=4: read the 4 x 4 maps (an SD-like quarter of the 8 x 8 latent side)
    control = AttentionControl("replace", blend_words=("cat",), blend_map_side=4)
    p2p = _p2p(tiny_model, control, False)
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0] = 1.0  # source's word attends to the top-left cell of a 4 x 4 map
    maps[1, 3, 3] = 0.5  # the target's to the bottom-right one
    p2p.blend_maps = {16: maps.reshape(2, 16), 64: torch.rand(2, 64)}  # 4 x 4 is the size used for 8 x 8
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:4, :4] = True  # 3 x 3 max-pool spreads a corner cell over 2 x 2 cells = 4 x 4 latent pixels
    expected[4:, 4:] = True
    mask = p2p.blend_mask((8, 8))
    assert torch.equal(mask, expected)

    # the default (16 cells when the latent has them) reads the finest maps on this small latent
    fine = _p2p(tiny_model, AttentionControl("replace", blend_words=("cat",)), False)
    fine.blend_maps = {16: torch.ones(2, 16), 64: torch.zeros(2, 64)}
    fine.blend_maps[64][1, 0] = 1.0  # the target's word attends to the top-left latent cell only
    expected_fine = torch.zeros(8, 8, dtype=torch.bool)
    expected_fine[:2, :2] = True
    assert torch.equal(fine.blend_mask((8, 8)), expected_fine)
    # on SD's 64 x 64 latents it is the paper's 16 x 16 maps (a quarter of the side)
    fine.blend_maps = {n: torch.zeros(2, n) for n in (4096, 1024, 256, 64)}
    fine.blend_maps[256][0, 0] = 1.0
    expected_sd = torch.zeros(64, 64, dtype=torch.bool)
    expected_sd[:8, :8] = True  # the corner cell and its pooled neighbours: 2 x 2 cells of 4 x 4 pixels
    assert torch.equal(fine.blend_mask((64, 64)), expected_sd)


def test_blend_after_a_real_step(tiny_model) -> None:
    control = AttentionControl("replace", blend_words=("red", "green"))
    p2p = _p2p(tiny_model, control, True)
    with pytest.raises(RuntimeError, match="no attention maps"):
        p2p.blend_mask((8, 8))
    _run(tiny_model, p2p, True, 0)
    maps = p2p.blend_maps[16]
    assert maps.shape == (2, 16) and (maps > 0).all()
    mask = p2p.blend_mask((8, 8))
    assert mask.shape == (8, 8) and mask.any()


def test_recomputed_layer_matches_the_stock_one(tiny_model) -> None:
    # An edit that hands back the target's own probabilities: every layer's target row goes through
    # our recomputation from the layer's parts and must agree with the stock processor.
    control = AttentionControl("replace", cross_steps=1.0, self_steps=1.0, self_max_side=1.0)
    p2p = _p2p(tiny_model, control, True)
    calls: list[bool] = []

    def keep_own(is_cross: bool, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(is_cross)
        return target

    p2p.edit_probs = keep_own  # type: ignore[method-assign]
    base = _run(tiny_model, None, True, 0)
    out = _run(tiny_model, p2p, True, 0)
    assert sorted(calls) == [False] * 4 + [True] * 4  # 4 self- and 4 cross-attention layers
    assert torch.equal(out[:3], base[:3])
    torch.testing.assert_close(out[3], base[3], rtol=1e-4, atol=1e-5)


def test_step_tracking(tiny_model) -> None:
    p2p = _p2p(tiny_model, AttentionControl("replace"), False)
    timesteps = tiny_model.schedule.grid(STEPS).timesteps
    assert p2p.step_of(timesteps[3] + 0.4) == 3 and p2p.fraction(3) == 0.3
    x, cond = _batch(tiny_model, False)
    with p2p.installed(), torch.no_grad(), pytest.raises(RuntimeError, match="wrap_model_fn"):
        tiny_model.model_fn(x, timesteps[0].expand(2), cond)  # controlled, but not through the wrapper
    with pytest.raises(ValueError, match="batch of 2"):
        p2p.wrap_model_fn(tiny_model.model_fn)(torch.cat([x, x]), timesteps[0].expand(4), cond.cat(cond))


def test_the_attention_store_is_one_head_averaged_map_per_size_whatever_the_steps(tiny_model) -> None:
    """The store holds [2, n] float32 per map size n: 8 bytes a cell, summed over layers and steps."""
    control = AttentionControl("replace", blend_words=("red", "green"))
    p2p = _p2p(tiny_model, control, True)
    _run(tiny_model, p2p, True, 0)
    one_step = p2p.store_bytes()
    sizes = sorted(p2p.blend_maps)
    assert sizes == [16, 64] and one_step == 2 * 4 * sum(sizes)
    x, cond = _batch(tiny_model, True)
    grid = tiny_model.schedule.grid(STEPS)
    with torch.no_grad(), p2p.installed():  # the store restarts at `installed`, then runs 5 steps
        for step in range(5):
            p2p.wrap_model_fn(tiny_model.model_fn)(x, grid.timesteps[step].expand(4), cond)
    assert p2p.store_bytes() == one_step
