"""Say when an image is beyond the model (issue 33): the autoencoder's round trip against exact
answers, the warning on a photograph and not on a shapes scene, the pixel model, the sidecar."""

from __future__ import annotations

import dataclasses

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from unsample import defaults
from unsample.editing.fidelity import (
    FIDELITY_KEY,
    RECONSTRUCTION_GAP_DB,
    InputFidelity,
    exact_method_for,
    input_fidelity,
)
from unsample.errors import InputError

WARNING = "warning: this model cannot represent this image well (its autoencoder keeps "


class _ShiftingAutoencoder:
    """decode(encode(x)) = x + shift / 255 exactly: the round trip's PSNR is 20 log10(255 / shift)."""

    def __init__(self, shift: int, schedule: Any = None) -> None:
        self.shift, self.schedule = shift, schedule

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return image.double() * 255

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent.double() + self.shift) / 255


def _pixels(seed: int = 0, size: int = 16) -> torch.Tensor:
    """Values in 20..200 grey levels, so no shift below 55 is clipped."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(20, 200, (1, 3, size, size)).astype(np.float32) / 255)


@pytest.mark.parametrize("shift", [1, 5, 40])
def test_the_round_trip_psnr_is_the_exact_answer(shift: int) -> None:
    fid = input_fidelity(_ShiftingAutoencoder(shift), _pixels())  # type: ignore[arg-type]
    assert fid.autoencoder_psnr == pytest.approx(20 * math.log10(255 / shift), abs=1e-9)
    assert fid.representable == (fid.autoencoder_psnr >= defaults.REPRESENTABLE_PSNR)
    assert fid.reconstruction_psnr is None and fid.exact_method is None
    lines = fid.warnings()
    if shift == 40:  # 16.1 dB
        assert lines == [f"{WARNING}16.1 dB); edits will look like the reconstruction"]
    else:
        assert lines == []


def test_a_given_latent_saves_the_encode() -> None:
    class NoEncode(_ShiftingAutoencoder):
        def encode_image(self, image: torch.Tensor) -> torch.Tensor:
            raise AssertionError("the caller gave the latent")

    x = _pixels()
    fid = input_fidelity(NoEncode(5), x, latent=x.double() * 255)  # type: ignore[arg-type]
    assert fid.autoencoder_psnr == pytest.approx(20 * math.log10(51), abs=1e-9)


def test_a_lossless_round_trip_is_representable_and_recorded_as_null() -> None:
    fid = input_fidelity(_ShiftingAutoencoder(0), _pixels())  # type: ignore[arg-type]
    assert fid.autoencoder_psnr is None and fid.representable and fid.warnings() == []
    assert fid.to_json() == {"autoencoder_psnr": None, "threshold": defaults.REPRESENTABLE_PSNR, "representable": True,
                             "reconstruction_psnr": None, "method": None, "exact_method": None}


def test_an_inexact_reconstruction_well_below_the_floor_names_an_exact_method(tiny_model: Any) -> None:
    model = _ShiftingAutoencoder(4, tiny_model.schedule)  # floor 20 log10(255 / 4) = 36.1 dB
    x = _pixels()
    latent = x.double() * 255
    near = input_fidelity(model, x, reconstruction=latent + 1, method="ddim")  # type: ignore[arg-type]
    assert near.reconstruction_psnr == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)
    assert near.reconstruction_gap == pytest.approx(20 * math.log10(5 / 4), abs=1e-9)
    assert near.reconstruction_gap < RECONSTRUCTION_GAP_DB  # type: ignore[operator]
    assert near.exact_method is None and near.warnings() == []
    far = input_fidelity(model, x, reconstruction=latent + 12, method="ddim")  # type: ignore[arg-type]
    assert far.reconstruction_gap == pytest.approx(20 * math.log10(16 / 4), abs=1e-9)
    assert far.reconstruction_gap > RECONSTRUCTION_GAP_DB  # type: ignore[operator]
    assert far.exact_method == exact_method_for(tiny_model) == defaults.EDIT_METHOD
    assert far.representable and far.warnings() == [
        ("warning: the ddim inversion reconstructs this image at 24.0 dB, well below the autoencoder's 36.1 dB; an exact "
         "method (--method edict) reconstructs it at the floor")]
    # an exact method is never told to use one; a reconstruction above the floor is no gap
    assert input_fidelity(model, x, reconstruction=latent + 12, method="edict").exact_method is None  # type: ignore[arg-type]
    better = input_fidelity(model, x, reconstruction=latent - 3, method="ddim")  # type: ignore[arg-type]
    assert better.reconstruction_gap == 0.0 and better.exact_method is None


def test_the_record_reads_back_and_a_bad_one_is_refused() -> None:
    fid = InputFidelity(18.4, 25.0, 16.2, "ddim", "edict")
    assert InputFidelity.from_json(json.loads(json.dumps(fid.to_json()))) == InputFidelity(18.4, 25.0, 16.2, "ddim", "edict")
    for bad in ({**fid.to_json(), "autoencoder_psnr": "18"}, {**fid.to_json(), "threshold": None},
                {**fid.to_json(), "method": "os.system"}, [1]):
        with pytest.raises(InputError):
            InputFidelity.from_json(bad)
    with pytest.raises(InputError, match=r"\[1, 3, H, W\]"):
        input_fidelity(_ShiftingAutoencoder(1), _pixels()[0])  # type: ignore[arg-type]


# --- the embedded models: a photograph and a shapes scene -----------------------------------------


def _chelsea() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.chelsea())


def _scene() -> tuple[Image.Image, str]:
    from unsample_lab.shapes import random_edit_pairs

    pair = random_edit_pairs(1, seed=0)[0]
    return Image.fromarray(np.asarray(pair.source.image)), pair.source_caption


@pytest.mark.model
def test_the_api_warns_on_a_photograph_and_not_on_a_scene(embedded_model: Any) -> None:
    import unsample

    scene, caption = _scene()
    for image, prompt, representable in ((_chelsea(), "a large white circle on a plain gray background", False),
                                         (scene, caption, True)):
        res = unsample.edit(embedded_model, image, "a large red circle on a plain gray background", source_prompt=prompt,
                            steps=4, output="result", unknown_words="checked")
        fid = res.input_fidelity
        assert fid is not None and fid.representable is representable
        assert (fid.autoencoder_psnr < defaults.REPRESENTABLE_PSNR) is not representable  # type: ignore[operator]
        assert bool(fid.warnings()) is not representable
        assert fid.reconstruction_psnr is None  # the default edit runs one branch: no reconstruction for free
        off = unsample.edit(embedded_model, res.inversion, "a large red circle on a plain gray background", steps=4,
                            fidelity=False, output="result")
        assert off.input_fidelity is None


@pytest.mark.model
def test_a_two_branch_edit_scores_its_free_reconstruction(embedded_model: Any) -> None:
    import unsample
    from unsample.api import prepare_image

    scene, caption = _scene()
    res = unsample.edit(embedded_model, scene, caption.replace("large", "small", 1), source_prompt=caption, method="ddim",
                        steps=4, guidance=1.0, control="replace", mask="none", output="result", unknown_words="checked")
    fid = res.input_fidelity
    assert fid is not None and fid.method == "ddim" and fid.reconstruction_psnr is not None
    assert fid.reconstruction_psnr <= fid.autoencoder_psnr + 0.5  # type: ignore[operator]
    replay = unsample.reconstruct(embedded_model, res.inversion, output="latent")
    expected = input_fidelity(embedded_model, prepare_image(embedded_model, scene), reconstruction=replay, method="ddim")
    assert fid.reconstruction_psnr == pytest.approx(expected.reconstruction_psnr, abs=0.05)  # one batch of 2 vs of 1


@pytest.mark.model
def test_the_cli_prints_the_warning_on_a_photograph_only_and_records_it(embedded_model: Any, tmp_path: Path) -> None:
    from unsample.cli import app

    cat, (scene, caption) = tmp_path / "chelsea.png", _scene()
    _chelsea().save(cat)
    scene.save(tmp_path / "scene.png")
    outs = {}
    for name, prompt in (("chelsea", "a large white circle on a plain gray background"), ("scene", caption)):
        out = tmp_path / f"{name}-edit.png"
        r = CliRunner().invoke(app, ["edit", str(tmp_path / f"{name}.png"), "--source-prompt", prompt, "--target-prompt",
                                     "a large red circle on a plain gray background", "--steps", "4", "-o", str(out),
                                     "--model", "embedded", "--device", "cpu", "--quiet"])
        assert r.exit_code == 0, r.output
        outs[name] = (r, json.loads(out.with_suffix(".json").read_text()))
    r, side = outs["chelsea"]
    record = side[FIDELITY_KEY]
    assert record["representable"] is False and record["threshold"] == defaults.REPRESENTABLE_PSNR
    line = f"{WARNING}{record['autoencoder_psnr']:.1f} dB); edits will look like the reconstruction"
    assert [s for s in r.stderr.splitlines() if s.startswith("warning:")] == [line]
    r, side = outs["scene"]
    assert side[FIDELITY_KEY]["representable"] is True and side[FIDELITY_KEY]["autoencoder_psnr"] > 25
    assert "cannot represent" not in r.stderr and "cannot represent" not in r.output
    # --no-fidelity turns it off
    out = tmp_path / "off.png"
    r = CliRunner().invoke(app, ["edit", str(cat), "--source-prompt", "a large white circle on a plain gray background",
                                 "--target-prompt", "a large red circle on a plain gray background", "--steps", "4",
                                 "--no-fidelity", "-o", str(out), "--model", "embedded", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0 and "cannot represent" not in r.stderr
    assert json.loads(out.with_suffix(".json").read_text())[FIDELITY_KEY] is None


@pytest.mark.model
def test_invert_warns_and_the_file_remembers_it_for_a_later_edit(embedded_model: Any, tmp_path: Path) -> None:
    import unsample
    from unsample.cli import app

    cat = tmp_path / "chelsea.png"
    _chelsea().save(cat)
    inv_path = tmp_path / "cat.safetensors"
    r = CliRunner().invoke(app, ["invert", str(cat), "--steps", "4", "-o", str(inv_path), "--model", "embedded",
                                 "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert WARNING in r.stderr
    inv = unsample.Inversion.load(inv_path)
    assert inv.stats[FIDELITY_KEY]["representable"] is False
    res = unsample.edit(embedded_model, inv, "a large red circle on a plain gray background", output="result")
    recorded = InputFidelity.from_json(inv.stats[FIDELITY_KEY])
    assert res.input_fidelity is not None and res.input_fidelity.representable is recorded.representable is False
    assert res.input_fidelity.autoencoder_psnr == pytest.approx(recorded.autoencoder_psnr, abs=0.01)
    bare = unsample.invert(embedded_model, cat, "", steps=4)  # the API's inversion keeps the input's pixels
    kept = unsample.edit(embedded_model, bare, "a large red circle", output="result").input_fidelity
    assert kept is not None and not kept.representable
    assert kept.autoencoder_psnr == pytest.approx(inv.stats[FIDELITY_KEY]["autoencoder_psnr"], abs=0.01)  # stats keep 2 decimals
    old = dataclasses.replace(bare, pixels=None)  # a file saved before inversions kept pixels: nothing to score
    assert unsample.edit(embedded_model, old, "a large red circle", output="result").input_fidelity is None


@pytest.mark.model
def test_the_pixel_model_round_trips_losslessly(embedded_pixel_model: Any) -> None:
    from unsample.api import prepare_image

    fid = input_fidelity(embedded_pixel_model, prepare_image(embedded_pixel_model, _chelsea()))
    assert fid.autoencoder_psnr is None and fid.representable and fid.warnings() == []
    assert fid.to_json()["autoencoder_psnr"] is None
