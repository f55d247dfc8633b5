"""The editing loop on the tiny pipeline: two branches, Direct Inversion, img2img, the CLI's options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unsample
from unsample.cli import app
from unsample.editing.branches import edit_latent
from unsample.editing.img2img import img2img


@pytest.fixture(scope="module")
def inversion(tiny_model, tiny_image):
    return unsample.invert(tiny_model, tiny_image, "a red cat", steps=6, guidance=1.0)


def _swap(model, inv, prompt: str, **kw):
    return unsample.edit(model, inv, prompt, mask="none", check=False, **kw)


def test_two_branch_source_replays_like_the_single_branch(tiny_model, inversion) -> None:
    """Without control the source branch of the batch is the plain replay (batching aside)."""
    res = edit_latent(tiny_model, inversion, "a green cat", guidance=1.0, two_branch=True)
    single = unsample.reconstruct(tiny_model, inversion, output="latent")
    swap = _swap(tiny_model, inversion, "a green cat", guidance=1.0, output="latent")
    assert torch.allclose(res.source_latent, single, atol=1e-5)
    assert torch.allclose(res.target_latent, swap, atol=1e-5)
    assert res.nfe == 6 and res.branches == 2  # one batched evaluation per step at guidance 1
    assert res.mask is None


def test_one_branch_swap_is_the_replay_with_the_target_prompt(tiny_model, inversion) -> None:
    swap = _swap(tiny_model, inversion, "a green cat", guidance=3.0, output="result")
    replayed = unsample.replay(tiny_model, inversion, "a green cat", guidance=3.0)
    assert torch.equal(swap.latent, replayed.latent)
    assert swap.branches == 1 and swap.network_evaluations == 6 * 2 and swap.mask is None


def test_attention_mask_is_returned(tiny_model, inversion) -> None:
    res = unsample.edit(tiny_model, inversion, "a green cat", guidance=3.0, mask="attention", output="result")
    assert res.mask.dtype == torch.bool and res.mask.shape == res.latent.shape[-2:]
    assert res.branches == 2 and res.mask_source == "attention"


def test_direct_inversion_keeps_the_source_on_the_inverted_path(tiny_model, inversion) -> None:
    res = edit_latent(tiny_model, inversion, "a green cat", guidance=3.0, direct=True)
    assert torch.equal(res.source_latent, inversion.trajectory[-1].to(res.source_latent.dtype))
    free = edit_latent(tiny_model, inversion, "a green cat", guidance=3.0, two_branch=True)
    assert not torch.equal(free.source_latent, inversion.trajectory[-1])


def test_direct_is_refused_for_exact_methods(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", method="edict", steps=3)
    with pytest.raises(ValueError, match="reconstructs exactly already"):
        unsample.edit(tiny_model, inv, "a green cat", direct=True)


@pytest.mark.parametrize("control", ["replace", "refine"])
def test_attention_control_changes_the_target_only(tiny_model, inversion, control: str) -> None:
    swap = _swap(tiny_model, inversion, "a green cat", guidance=3.0, output="latent")
    p2p = _swap(tiny_model, inversion, "a green cat", guidance=3.0, control=control, output="latent")
    assert p2p.shape == swap.shape and not torch.equal(p2p, swap)


def test_bad_edit_options_are_refused(tiny_model, inversion) -> None:
    with pytest.raises(ValueError, match="control="):
        unsample.edit(tiny_model, inversion, "a green cat", control="swap")
    with pytest.raises(ValueError, match="reweight"):
        unsample.edit(tiny_model, inversion, "a green cat", control="reweight")


def test_img2img_starts_from_the_strength_step(tiny_model, inversion) -> None:
    res = img2img(tiny_model, inversion.image_latent, "a green cat", strength=0.5, steps=6, guidance=2.0)
    assert res["start_step"] == 3 and res["nfe"] == 3 * 2
    with pytest.raises(ValueError, match="strength"):
        img2img(tiny_model, inversion.image_latent, "a cat", strength=0.0)


def test_cli_edit_from_an_image_with_p2p_options(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    out = tmp_path / "edit.png"
    r = CliRunner().invoke(app, [
        "edit", str(src), "-o", str(out), "--source-prompt", "a red cat", "--target-prompt", "a green cat",
        "--steps", "4", "--guidance", "2", "--control", "replace", "--blend-words", "cat", "--reweight", "green=2",
        "--method", "ddim",
        "--direct", "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet",
    ], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["control"] == "replace" and side["direct"] is True and side["reweight"] == {"green": 2.0}
    assert side["blend_words"] == ["cat"] and side["inversion"]["method"] == "ddim"
    assert side["mask"] == "attention" and (tmp_path / "edit.mask.png").is_file() and side["mask_file"] == "edit.mask.png"
    bad = CliRunner().invoke(app, ["edit", str(src), "-o", str(tmp_path / "x.png"), "--prompt", "a cat",
                                   "--model", str(tiny_pipeline_dir)])
    assert bad.exit_code == 2 and "--source-prompt" in bad.output


def test_cli_edit_refuses_unknown_words_unless_allowed(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    args = ["edit", str(src), "--source-prompt", "a red cat", "--target-prompt", "a green zebra", "--steps", "2",
            "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"]
    bad = CliRunner().invoke(app, args + ["-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "zebra" in bad.output and "--allow-unknown-words" in bad.output
    assert not (tmp_path / "x.png").exists()
    ok = CliRunner().invoke(app, args + ["-o", str(tmp_path / "y.png"), "--allow-unknown-words"])
    assert ok.exit_code == 0, ok.output
    assert "warning:" in ok.output and "zebra" in ok.output


def test_cli_edit_with_a_user_mask_png(tiny_pipeline_dir: Path, tiny_image, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    src = tmp_path / "in.png"
    tiny_image.save(src)
    w, h = tiny_image.size
    Image.fromarray(np.zeros((h, w), dtype=np.uint8)).save(tmp_path / "mask.png")
    out = tmp_path / "e.png"
    r = CliRunner().invoke(app, ["edit", str(src), "-o", str(out), "--source-prompt", "a red cat", "--target-prompt",
                                 "a green cat", "--steps", "3", "--mask", str(tmp_path / "mask.png"), "--model",
                                 str(tiny_pipeline_dir), "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["mask_area"] == 0.0 and side["mask"].endswith("mask.png")
    missing = CliRunner().invoke(app, ["edit", str(src), "-o", str(tmp_path / "f.png"), "--source-prompt", "a red cat",
                                       "--prompt", "a green cat", "--mask", str(tmp_path / "nope.png"),
                                       "--model", str(tiny_pipeline_dir)])
    assert missing.exit_code == 2 and "nope.png" in missing.output


def test_demo_runs_the_edit_defaults_and_shows_the_mask(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    from unsample import defaults
    from unsample_lab.demo import run_demo

    res = run_demo(tmp_path / "demo", model=str(tiny_pipeline_dir), device="cpu", steps=3)
    record = json.loads(res.files["record"].read_text())
    assert record["method"] == defaults.EDIT_METHOD and record["mask"] == defaults.EDIT_MASK
    assert record["edit_guidance"] == defaults.EDIT_GUIDANCE and record["guidance"] == defaults.INVERSION_GUIDANCE
    for name in ("source", "reconstruction", "edit", "mask", "sheet"):
        assert res.files[name].stat().st_size > 0, name
