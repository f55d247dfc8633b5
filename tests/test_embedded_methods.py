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
    """Measured (model b26912d1): DDIM 1.31e-3, fixed-point 1.07e-3 (pixel MSE), VAE floor 6.95e-4:
    DDIM 1.88x the floor, fixed-point 1.54x; fixed-point's excess over the floor is 0.61x DDIM's.
    (Its default 5 iterations do not fully converge here; on the previous model DDIM was 10.5x.)"""
    errors = figures.fixed_point_vs_ddim(model)
    excess = {k: errors[k] - errors["floor"] for k in ("ddim", "fixed-point")}
    assert excess["fixed-point"] <= 0.75 * excess["ddim"], errors
    assert errors["fixed-point"] <= 1.6 * errors["floor"], errors


def test_null_text_at_guidance_7_5_approaches_the_vae_floor(model) -> None:
    """Measured (model b26912d1): null-text 1.007x the VAE floor, DDIM 1.12x, 9.70 inner steps on average."""
    errors = figures.null_text_vs_ddim(model)
    assert errors["null-text"] < errors["ddim"], errors
    assert errors["null-text"] <= NULL_TEXT_FLOOR_RATIO * errors["floor"], errors
    assert errors["mean_inner_steps"] < 10, errors


NULL_TEXT_FLOOR_RATIO = 1.2
