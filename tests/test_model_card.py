"""The committed embedded models and their model cards: size, loading, figures against the targets.

Each test runs for the embedded UNet model and the embedded flow model, and skips a model whose
weights are not installed in this checkout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unsample.embedded import embedded_model_path
from unsample_lab.embedded.evaluate import TARGETS

NAMES = ("embedded", "embedded-flow")


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    if not (embedded_model_path(request.param) / "model_index.json").is_file():
        pytest.skip(f"{request.param} is not installed in this checkout")
    return request.param


@pytest.fixture
def folder(name: str) -> Path:
    return embedded_model_path(name)


def test_weights_are_safetensors_within_25_mb(folder: Path) -> None:
    files = list(folder.rglob("*"))
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert weights and not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert sum(p.stat().st_size for p in weights) <= 25 * 1024 * 1024


def test_model_card_matches_its_targets(folder: Path) -> None:
    card = json.loads((folder / "model_card.json").read_text())
    text = (folder / "MODEL_CARD.md").read_text()
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


@pytest.mark.model
def test_embedded_model_loads_offline_by_name(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unsample

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = unsample.load(device="cpu") if name == "embedded" else unsample.load(name, device="cpu")
    assert model.name == name and model.resolution == 64
    card = json.loads((folder / "model_card.json").read_text())
    assert model.fingerprint == card["model_fingerprint"]


def test_default_training_config_is_the_shipped_recipe(name: str, folder: Path) -> None:
    """``unsample train-embedded [--family flow]`` with no options trains what is committed (budgets aside)."""
    from unsample_lab.embedded import flow_train, train
    from unsample_lab.embedded.configs import TrainConfig
    from unsample_lab.embedded.flow_configs import FlowTrainConfig
    from unsample_lab.embedded.run_folder import TRAINING_JSON

    config, resumable = (TrainConfig, train.RESUMABLE_CHANGES) if name == "embedded" else \
        (FlowTrainConfig, flow_train.RESUMABLE_CHANGES)
    # read as a run folder's config is read: fields newer than the run take their old behaviour
    training = json.loads((folder / TRAINING_JSON).read_text())
    shipped = config.from_json(training["config"]).to_json()
    default = config().to_json()
    runs = training.get("runs") or []
    if len(runs) > 1:
        # a continued model (--init-from): the config is the last run's, whose --lr may differ; the
        # first run is the default command from scratch, and its learning rate is in ``runs``
        assert runs[0]["init"] == "scratch" and runs[0]["lr"] == default["lr"], runs
        assert all(r["init"] == "continued" for r in runs[1:]), runs
        resumable = resumable | {"lr"}
    differ = {k for k in default if json.dumps(default[k]) != json.dumps(shipped.get(k))} - resumable
    assert not differ, {k: (shipped.get(k), default[k]) for k in differ}
