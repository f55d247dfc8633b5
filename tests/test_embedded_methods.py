"""Methods and editing on the embedded model (a model that has learned something).

Skipped when the embedded weights are not installed. The figures in the docstrings are printed by
``python -m unsample_lab.bench.embedded_methods``, which runs the same functions the tests assert on;
margins leave room for float differences across machines.
"""

from __future__ import annotations

import pytest

from unsample.embedded import embedded_model_path
from unsample_lab.bench import embedded_methods as figures

pytestmark = [
    pytest.mark.skipif(not (embedded_model_path() / "model_index.json").is_file(),
                       reason="the embedded model is not installed"),
    pytest.mark.model,
]


@pytest.fixture(scope="module")
def model(embedded_model):
    """The embedded model, loaded once per run (tests/conftest.py)."""
    return embedded_model


def test_fixed_point_beats_ddim_at_guidance_7(model) -> None:
    """Measured (model 4a55e0c4): DDIM 1.43e-2, fixed-point 2.25e-3 (pixel MSE), VAE floor 1.85e-4:
    DDIM 77x the floor, fixed-point 12x; fixed-point's excess over the floor is 0.15x DDIM's. This
    model answers guidance far more strongly than the ones before it (model 512b21d0: DDIM 9.48e-4,
    fixed-point 6.49e-4), so guided DDIM inversion drifts further. Steps where the iteration
    diverges keep their best-fitting iterate (tested exactly in tests/test_exact_methods.py)."""
    errors = figures.fixed_point_vs_ddim(model)
    excess = {k: errors[k] - errors["floor"] for k in ("ddim", "fixed-point")}
    assert excess["fixed-point"] <= 0.25 * excess["ddim"], errors
    assert errors["fixed-point"] <= 15.0 * errors["floor"], errors


def test_null_text_at_guidance_7_5_approaches_the_vae_floor(model) -> None:
    """Measured (model 4a55e0c4): null-text 1.077x the VAE floor, DDIM 7.52x, 10.00 inner steps on
    average (the paper's early-stop threshold is never reached on this scene; tests/test_null_text.py
    tests early stopping exactly). Model 512b21d0: 1.064x and 4.00x."""
    errors = figures.null_text_vs_ddim(model)
    assert errors["null-text"] < errors["ddim"], errors
    assert errors["null-text"] <= NULL_TEXT_FLOOR_RATIO * errors["floor"], errors


def test_exact_methods_round_trip_the_latent_where_ddim_drifts(model) -> None:
    """Measured (model 4a55e0c4): latent MSE of invert-then-sample at guidance 5, 10 steps: DDIM
    3.00e-2, EDICT 0 (bit-exact in float64), BDIA 1.5e-9."""
    errors = figures.exact_vs_ddim_latent(model)
    for method in ("edict", "bdia"):
        assert errors[method] <= 1e-4, errors
        assert errors["ddim"] >= 100 * errors[method], errors


NULL_TEXT_FLOOR_RATIO = 1.2
