"""Methods and editing on the embedded flow model (the SD3-architecture rectified-flow pipeline).

The flow counterparts of tests/test_embedded_methods.py and tests/test_embedded_editing.py: the
same functions, run through the same core on a flow model. Skipped when the flow weights are not
installed. The figures in the docstrings are printed by
``python -m unsample_lab.bench.embedded_methods --model embedded-flow`` and by ``unsample bench edit
--model embedded-flow --methods ddim,flowedit --controls swap --masks none,noise --pairs 8 --steps 20
--inversion-guidance 1``; margins leave room for float differences across machines.
"""

from __future__ import annotations

import numpy as np
import pytest

from unsample.embedded import embedded_model_path
from unsample_lab.bench import edit as edit_bench
from unsample_lab.bench import embedded_methods as figures

pytestmark = [
    pytest.mark.skipif(not (embedded_model_path("embedded-flow") / "model_index.json").is_file(),
                       reason="the embedded flow model is not installed"),
    pytest.mark.model,
]

SLACK_DB = 1.0  # room for float differences across machines (each run is deterministic on one)


@pytest.fixture(scope="module")
def model(embedded_flow_model):
    """The embedded flow model, loaded once per run (tests/conftest.py)."""
    return embedded_flow_model


def test_fixed_point_beats_ddim_at_guidance_7(model) -> None:
    """Measured (model c61c76f6): Euler-step ("ddim") inversion 4.04e-4, fixed-point 1.97e-4 (pixel
    MSE), VAE floor 1.85e-4: fixed-point's excess over the floor is 0.055x plain inversion's. The
    UNet model's share is 0.15x."""
    errors = figures.fixed_point_vs_ddim(model)
    excess = {k: errors[k] - errors["floor"] for k in ("ddim", "fixed-point")}
    assert excess["fixed-point"] <= FIXED_POINT_EXCESS_SHARE * excess["ddim"], errors


def test_null_text_at_guidance_7_5_approaches_the_vae_floor(model) -> None:
    """Measured (model c61c76f6): null-text with learning rate 0.03 1.034x the VAE floor, plain
    inversion 1.46x, 9.82 inner steps on average. With the paper's 1e-2 (the method's default, the
    UNet model's test) it lands at 1.61x, worse than plain inversion; this model's "" embedding
    has RMS 2.40 against the UNet model's 0.94 (docs/benchmarks.md)."""
    errors = figures.null_text_vs_ddim(model, lr=figures.NULL_TEXT_LR)
    assert errors["null-text"] < errors["ddim"], errors
    assert errors["null-text"] <= NULL_TEXT_FLOOR_RATIO * errors["floor"], errors


def test_exact_methods_round_trip_the_latent_where_ddim_drifts(model) -> None:
    """Measured (model c61c76f6): latent MSE of invert-then-sample, DDIM (the flow's Euler step)
    2.25e-2, EDICT 0 (bit-exact in float64), BDIA 8.3e-10."""
    errors = figures.exact_vs_ddim_latent(model)
    for method in ("edict", "bdia"):
        assert errors[method] <= 1e-4, errors
        assert errors["ddim"] >= 100 * errors[method], errors


@pytest.fixture(scope="module")
def edits(model) -> dict[str, list[dict]]:
    bench = edit_bench.EditBench(methods=("ddim", edit_bench.FLOWEDIT), controls=("swap",), masks=("none", "noise"),
                                 pairs=8, steps=20, inversion_guidance=1.0)
    rows = edit_bench.run(model, bench, progress=False)["per_pair"]
    return {"swap": [r for r in rows if r["method"] == "ddim" and r["mask"] == "none"],
            "masked": [r for r in rows if r["method"] == "ddim" and r["mask"] == "noise"],
            "flowedit": [r for r in rows if r["method"] == edit_bench.FLOWEDIT]}


def test_masked_blending_keeps_the_background_better_than_prompt_swap(edits) -> None:
    """Measured (model c61c76f6, the command in the module docstring): Euler-step ("ddim") inversion
    with DiffEdit's noise mask keeps the background at 30.57 dB PSNR, the plain prompt swap at
    27.76 dB (8 pairs, 20 steps, edit guidance 5). The mask costs edit success on this model
    (50% against 88%; 55% against 85% on 20 pairs at 50 steps, docs/benchmarks.md)."""
    swap = np.mean([r["bg_psnr"] for r in edits["swap"]])
    masked = np.mean([r["bg_psnr"] for r in edits["masked"]])
    assert masked - swap >= MASK_MARGIN_DB - SLACK_DB, (swap, masked)
    assert max(r["mask_area"] for r in edits["masked"]) < 0.5


def test_flowedit_keeps_the_background_better_than_prompt_swap(edits) -> None:
    """Measured (model c61c76f6): FlowEdit 30.50 dB background PSNR at 39 network calls per pair,
    the prompt swap 27.76 dB at 60 (edit success 88% both; 95% and 85% on 20 pairs at 50 steps)."""
    swap = np.mean([r["bg_psnr"] for r in edits["swap"]])
    flowedit = np.mean([r["bg_psnr"] for r in edits["flowedit"]])
    assert flowedit - swap >= FLOWEDIT_MARGIN_DB - SLACK_DB, (swap, flowedit)


FIXED_POINT_EXCESS_SHARE = 0.1  # measured 0.055
NULL_TEXT_FLOOR_RATIO = 1.3  # measured 1.034 (lr 0.03)
MASK_MARGIN_DB = 30.57 - 27.76
FLOWEDIT_MARGIN_DB = 30.50 - 27.76
