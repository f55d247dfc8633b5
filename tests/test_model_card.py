"""The committed embedded model and its model card: size, loading, figures against the targets."""

from __future__ import annotations

import json

import pytest

from unsample.embedded import embedded_model_path
from unsample.embedded.evaluate import TARGETS

FOLDER = embedded_model_path()
pytestmark = pytest.mark.skipif(
    not (FOLDER / "model_index.json").is_file(), reason="the embedded model is not installed in this checkout"
)


def test_weights_are_safetensors_within_25_mb() -> None:
    files = list(FOLDER.rglob("*"))
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert weights and not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert sum(p.stat().st_size for p in weights) <= 25 * 1024 * 1024


def test_model_card_matches_its_targets() -> None:
    card = json.loads((FOLDER / "model_card.json").read_text())
    text = (FOLDER / "MODEL_CARD.md").read_text()
    f = card["figures"]
    assert card["targets"] == TARGETS
    recomputed = {
        "vae_psnr_db": f["vae_psnr_db"] >= TARGETS["vae_psnr_db"],
        "t2i_one_object_accuracy": f["t2i_one_object_accuracy"] >= TARGETS["t2i_one_object_accuracy"],
        "ddim_roundtrip_mse_over_floor": f["ddim_roundtrip_mse_over_floor"] <= TARGETS["ddim_roundtrip_mse_over_floor"],
    }
    assert card["targets_met"] == recomputed
    # a missed target is said in the card, never hidden
    assert text.count("**missed**") == sum(not v for v in recomputed.values())
    assert card["config"]["t2i_samples"] == 200 and card["config"]["vae_scenes"] == 500  # the protocol


def test_embedded_model_loads_offline_with_no_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    import unsample

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = unsample.load(device="cpu")
    assert model.name == "embedded" and model.resolution == 64
    card = json.loads((FOLDER / "model_card.json").read_text())
    assert model.fingerprint == card["model_fingerprint"]


def test_default_training_config_is_the_shipped_recipe() -> None:
    """``unsample train-embedded`` with no options trains what is committed (budgets aside)."""
    from unsample.embedded.configs import TrainConfig
    from unsample.embedded.train import RESUMABLE_CHANGES, TRAINING_JSON

    # read as a run folder's config is read: fields newer than the run take their old behaviour
    shipped = TrainConfig.from_json(json.loads((FOLDER / TRAINING_JSON).read_text())["config"]).to_json()
    default = TrainConfig().to_json()
    differ = {k for k in default if json.dumps(default[k]) != json.dumps(shipped.get(k))} - RESUMABLE_CHANGES
    assert not differ, {k: (shipped.get(k), default[k]) for k in differ}
