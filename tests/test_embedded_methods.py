"""Methods and editing on the embedded model (a model that has learned something).

Skipped when the embedded weights are not installed. The figures in the docstrings are printed by
``python -m unsample.bench.embedded_methods``, which runs the same functions the tests assert on;
margins leave room for float differences across machines.
"""

from __future__ import annotations

import pytest

import unsample
from unsample.bench import embedded_methods as figures
from unsample.embedded import embedded_model_path

pytestmark = pytest.mark.skipif(
    not (embedded_model_path() / "model_index.json").is_file(), reason="the embedded model is not installed"
)


@pytest.fixture(scope="module")
def model():
    return unsample.load(device="cpu")


def test_fixed_point_beats_ddim_at_guidance_7(model) -> None:
    """Measured (model 512b21d0): DDIM 9.48e-4, fixed-point 6.49e-4 (pixel MSE), VAE floor 1.85e-4:
    DDIM 5.1x the floor, fixed-point 3.5x; fixed-point's excess over the floor is 0.61x DDIM's.
    Near the image end of this 20-step grid the plain iteration diverges at guidance 7, so those
    steps keep their best-fitting iterate; without that safeguard fixed-point gave 8.93e-3, worse
    than DDIM. (On model b26912d1 the figures were 1.31e-3, 1.07e-3 and 6.95e-4.)"""
    errors = figures.fixed_point_vs_ddim(model)
    excess = {k: errors[k] - errors["floor"] for k in ("ddim", "fixed-point")}
    assert excess["fixed-point"] <= 0.75 * excess["ddim"], errors
    assert errors["fixed-point"] <= 4.0 * errors["floor"], errors


def test_null_text_at_guidance_7_5_approaches_the_vae_floor(model) -> None:
    """Measured (model 512b21d0): null-text 1.064x the VAE floor, DDIM 4.00x, 10.00 inner steps on
    average (the paper's early-stop threshold is never reached on this scene; on model b26912d1
    it was, 9.70 steps on average; tests/test_null_text.py tests early stopping exactly)."""
    errors = figures.null_text_vs_ddim(model)
    assert errors["null-text"] < errors["ddim"], errors
    assert errors["null-text"] <= NULL_TEXT_FLOOR_RATIO * errors["floor"], errors


NULL_TEXT_FLOOR_RATIO = 1.2
