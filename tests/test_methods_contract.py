"""Contract tests, parametrised over every registered method x every model family it runs on
(the tiny SD 1.x, SDXL, SD3, Flux and class-conditional pixel-space pipelines); a method the registry refuses for a family is skipped
with the registry's reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import unsample
from unsample.inversion import Inversion
from unsample.methods.registry import available_methods, get_method

METHODS = available_methods()
UNGUIDED_INVERSION = {"negative-prompt"}


FAMILIES = ("sd", "sdxl", "sd3", "flux", "pixel")


@dataclass
class Family:
    name: str
    model: object
    image: object
    fit: str
    prompt: str = "a red cat"
    target: str = "a green cat"
    guidances: tuple[float, ...] = (1.0, 3.0)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_model, tiny_image) -> Family:
    """The tiny pipeline of one family, an image for it, and the fit that keeps the image's size."""
    if request.param == "sd":
        return Family("sd", tiny_model, tiny_image, "model")
    import numpy as np
    from PIL import Image

    if request.param == "pixel":  # class-conditional, no unconditional branch: class labels, guidance 1
        model = unsample.load(str(request.getfixturevalue("tiny_ddpm_class_dir")), device="cpu")
        image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
        return Family("pixel", model, image, "model", prompt="1", target="2", guidances=(1.0,))
    folder = request.getfixturevalue(f"tiny_{request.param}_pipeline_dir")
    model = unsample.load(str(folder), device="cpu")
    model.max_sequence_length = 16  # the tiny T5's window (SD3, Flux)
    image = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    return Family(request.param, model, image, "multiple")


def _skip_if_refused(method: str, model) -> None:
    """Skip a method that refuses the family's schedule (flow-ODE methods on DDPM, euler on flows)."""
    spec = get_method(method)
    reason = spec.refuses(model.schedule) if spec.refuses is not None else None
    if reason:
        pytest.skip(f"{method} refuses this family: {reason}")


def test_registry_lists_the_foundation_methods() -> None:
    assert {"ddim", "euler"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of"):
        get_method("nope")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_invert_contract(family: Family, tmp_path: Path, method: str, guidance: float) -> None:
    model, image = family.model, family.image
    _skip_if_refused(method, model)
    if guidance not in family.guidances:
        pytest.skip(f"the {family.name} model has no unconditional branch for guidance {guidance}")
    steps = 5
    inv = unsample.invert(model, image, family.prompt, method=method, steps=steps, guidance=guidance, seed=3, fit=family.fit)
    latent_shape = inv.image_latent.shape
    assert inv.trajectory.shape == (steps + 1, *latent_shape)
    working = torch.float64 if get_method(method).config().precision == "float64" else torch.float32  # EDICT's default
    assert inv.trajectory.dtype == working and inv.image_latent.dtype == torch.float32
    # negative-prompt inversion inverts without guidance by design (guidance applies to its replay only)
    guided_inversion = guidance != 1.0 and method not in UNGUIDED_INVERSION
    assert inv.nfe >= steps * (2 if guided_inversion else 1) and inv.model_calls >= steps
    assert inv.seconds > 0 and inv.method == method and inv.options["precision"] == str(working).removeprefix("torch.")
    # determinism for a fixed seed
    again = unsample.invert(model, image, family.prompt, method=method, steps=steps, guidance=guidance, seed=3, fit=family.fit)
    assert torch.equal(again.trajectory, inv.trajectory)
    # save, load and replay give the same latent as replaying the in-memory inversion
    back = Inversion.load(inv.save(tmp_path / "inv.safetensors"))
    a = unsample.reconstruct(model, inv, output="latent")
    b = unsample.reconstruct(model, back, output="latent")
    assert torch.equal(a, b) and a.shape == latent_shape and bool(torch.isfinite(a).all())
    result = unsample.reconstruct(model, back, output="result")
    per_eval = 2 if guidance != 1.0 else 1
    assert result.nfe % per_eval == 0 and result.nfe >= (steps - 1) * per_eval
    # an edit runs on every family a method runs on (the default noise mask, blending with the inversion)
    edit_guidance = 5.0 if family.guidances != (1.0,) else 1.0  # the edit default, where CFG exists
    edited = unsample.edit(model, inv, family.target, guidance=edit_guidance, output="result")
    assert edited.latent.shape == latent_shape and bool(torch.isfinite(edited.latent).all())


@pytest.mark.parametrize("method", METHODS)
def test_float64_precision_is_carried_through(family: Family, method: str) -> None:
    _skip_if_refused(method, family.model)
    inv = unsample.invert(family.model, family.image, family.prompt, method=method, steps=3, precision="float64",
                          fit=family.fit)
    assert inv.trajectory.dtype == torch.float64
    assert unsample.reconstruct(family.model, inv, output="latent").dtype == torch.float64


def test_edit_resumes_from_start_step(tiny_model, tiny_image) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=6)
    res = unsample.edit(tiny_model, inv, "a green dog", start_step=2, guidance=None, mask="none", output="result")
    assert res.nfe == 4 and res.start_step == 2 and res.prompt == "a green dog"
    # editing at the last step changes nothing: the image latent comes straight back
    last = unsample.edit(tiny_model, inv, "a green dog", start_step=6, mask="none", output="latent")
    assert torch.equal(last, inv.trajectory[6])
    with pytest.raises(ValueError, match="start_step=7"):
        unsample.edit(tiny_model, inv, "a dog", start_step=7)


def test_unknown_option_is_refused(tiny_model, tiny_image) -> None:
    with pytest.raises(ValueError, match="has no option"):
        unsample.invert(tiny_model, tiny_image, "a cat", method="ddim", steps=3, bogus=1)


@pytest.mark.parametrize("method", METHODS)
def test_every_float_option_refuses_nan_and_inf(method: str) -> None:
    from dataclasses import fields

    config = get_method(method).config
    floats = [f.name for f in fields(config) if isinstance(f.default, float)]
    for name in floats:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"{name}="):
                config.from_options({name: bad}, method)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e30, -1.0])
def test_guidance_must_be_finite_and_in_range(tiny_model, tiny_image, bad: float) -> None:
    with pytest.raises(ValueError, match="guidance="):
        unsample.invert(tiny_model, tiny_image, "a red cat", steps=2, guidance=bad)
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=2)
    with pytest.raises(ValueError, match="guidance="):
        unsample.edit(tiny_model, inv, "a green cat", guidance=bad)
    with pytest.raises(ValueError, match="target prompt"):
        unsample.edit(tiny_model, inv, None)  # type: ignore[arg-type]
