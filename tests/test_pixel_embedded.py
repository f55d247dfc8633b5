"""The embedded pixel model's machinery on a tiny run: training resumes and exports a DDIMPipeline
with its classifier and class names; the backend and classifier take class names; the card, the
classifier-guidance demo and the guided trajectory view run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import unsample
from unsample.cli import app
from unsample_lab.embedded.pixel_configs import CLASS_NAMES, UNCONDITIONAL, PixelTrainConfig


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unsample_lab.embedded.pixel_train import train_embedded_pixel

    out = tmp_path_factory.mktemp("pixel-run")
    train_embedded_pixel(out, config=PixelTrainConfig.tiny())
    return out


def test_batches_are_a_pure_function_of_seed_stream_and_step() -> None:
    from unsample_lab.embedded.pixel_train import one_object_batch

    a = one_object_batch(0, 11, 5, 4, 16)
    b = one_object_batch(0, 11, 5, 4, 16)
    c = one_object_batch(0, 11, 6, 4, 16)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    images, labels, masks = a
    assert images.shape == (4, 3, 16, 16) and float(images.min()) >= -1 and float(images.max()) <= 1
    assert labels.dtype == torch.long and set(labels.tolist()) <= set(range(len(CLASS_NAMES)))
    assert masks.shape == (4, 1, 16, 16) and float(masks.sum()) > 0


@pytest.mark.training
def test_a_tiny_run_exports_a_pipeline_with_its_classifier_and_class_names(pixel_run: Path) -> None:
    model_dir = pixel_run / "model"
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "DDIMPipeline"
    assert json.loads((model_dir / "class_labels.json").read_text()) == {"names": list(CLASS_NAMES),
                                                                          "unconditional": UNCONDITIONAL}
    training = json.loads((model_dir / "training.json").read_text())
    assert training["unet_steps"] == 3 and training["classifier_steps"] == 3
    log = (pixel_run / "train.log").read_text()
    assert "stage=unet done: steps=3" in log and "stage=classifier done: steps=3" in log


@pytest.mark.training
def test_a_finished_run_resumes_to_the_same_weights_and_refuses_a_changed_model(pixel_run: Path) -> None:
    import dataclasses

    from safetensors.torch import load_file

    from unsample_lab.embedded.pixel_train import train_embedded_pixel

    weights = pixel_run / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    before = load_file(str(weights))
    train_embedded_pixel(pixel_run)  # nothing left to train: the checkpoint is read back and exported again
    after = load_file(str(weights))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert (pixel_run / "train.log").read_text().count("stage=unet done") == 1
    changed = dataclasses.replace(PixelTrainConfig.tiny(), unet_channels=(16, 16))
    with pytest.raises(ValueError, match=r"holds a run with a different config \(unet_channels\)"):
        train_embedded_pixel(pixel_run, config=changed)
    # the classifier has trained, so its architecture may no longer change either
    with pytest.raises(ValueError, match=r"different config \(classifier_pool\)"):
        train_embedded_pixel(pixel_run, config=dataclasses.replace(PixelTrainConfig.tiny(), classifier_pool="mean"))


@pytest.mark.training
def test_an_interrupted_unet_stage_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unsample_lab.embedded import pixel_train

    cfg = PixelTrainConfig.tiny()
    calls = {"n": 0}
    real = pixel_train.one_object_batch

    def interrupted(*args, **kwargs):  # the third UNet batch raises as a SIGTERM would
        if args[1] == pixel_train.STREAM_PIXEL_UNET:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pixel_train, "one_object_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pixel_train.train_embedded_pixel(tmp_path, config=cfg)
    state = json.loads((tmp_path / "latest.json").read_text())
    assert state == {"dir": "unet-00000002"}
    monkeypatch.setattr(pixel_train, "one_object_batch", real)
    pixel_train.train_embedded_pixel(tmp_path)
    log = (tmp_path / "train.log").read_text()
    assert "run start: stage=unet step=2" in log and "stage=unet done: steps=3" in log


def test_the_classifier_may_change_until_its_stage_starts(tmp_path: Path) -> None:
    import dataclasses

    from unsample_lab.embedded import checkpoint as ckpt
    from unsample_lab.embedded.pixel_train import _resolve_config

    cfg = PixelTrainConfig.tiny()
    _resolve_config(tmp_path, cfg)
    ckpt.write_json_atomic(tmp_path / "latest.json", {"dir": "classifier-00000000"})
    wider = dataclasses.replace(cfg, classifier_channels=(16, 16), classifier_pool="mean")
    assert _resolve_config(tmp_path, wider) == wider
    ckpt.write_json_atomic(tmp_path / "latest.json", {"dir": "classifier-00000040"})
    with pytest.raises(ValueError, match="classifier_channels"):
        _resolve_config(tmp_path, cfg)


@pytest.mark.training
def test_the_backend_takes_class_names_and_a_declared_unconditional_class(pixel_run: Path) -> None:
    m = unsample.load(str(pixel_run / "model"), device="cpu")
    assert m.class_names == CLASS_NAMES
    assert int(m.encode_prompt("star").labels) == CLASS_NAMES.index("star")
    assert int(m.encode_prompt("3").labels) == 3
    assert int(m.encode_prompt("").labels) == UNCONDITIONAL
    den = m.denoiser("heart", guidance=3.0)  # classifier-free guidance against the unconditional class
    assert int(den.uncond.labels) == UNCONDITIONAL
    x = torch.randn(1, 3, m.resolution, m.resolution)
    eps_guided = den.eps(x, torch.tensor(500))
    eps_c = m.denoiser("heart").eps(x, torch.tensor(500))
    eps_u = m.denoiser("").eps(x, torch.tensor(500))
    assert torch.allclose(eps_guided, eps_u + 3.0 * (eps_c - eps_u), atol=1e-5)
    with pytest.raises(ValueError, match=r"give its index 0\.\.5 or one of circle, square, triangle, star, heart"):
        m.encode_prompt("hexagon")


@pytest.mark.training
def test_the_classifier_takes_class_names(pixel_run: Path) -> None:
    from unsample.backends.noisy_classifier import NoisyClassifier

    clf = NoisyClassifier.load(pixel_run / "model" / "classifier.safetensors")
    assert clf.config.class_names == CLASS_NAMES and clf.config.pool == "mean+max"
    assert clf.class_index("star") == 3 and clf.class_index("1") == 1
    assert clf.guidance("heart", 2.0).labels.tolist() == [4]
    with pytest.raises(ValueError, match=r"class label 'hexagon' is not a class of this classifier; give 0\.\.4 or one of"):
        clf.guidance("hexagon")


@pytest.mark.training
def test_the_pixel_demo_and_card_run_offline_on_a_tiny_model(pixel_run: Path, tmp_path: Path) -> None:
    run = CliRunner().invoke
    demo = run(app, ["demo", "--model", str(pixel_run / "model"), "--out", str(tmp_path / "demo"), "--steps", "4",
                     "--device", "cpu"])
    assert demo.exit_code == 0, demo.output
    record = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert record["classifier"]["target"] == "star" and record["steps"] == 4
    # the edit: 4 sampling steps plus DiffEdit's mask (10 draws x the 2 labels)
    assert record["mask"] == "noise" and 0 < record["mask_area"] <= 1
    # plus the edit check: 3 levels x 6 draws x 2 prompts x 2 latents
    assert record["nfe"]["invert"] == 4 and record["nfe"]["reconstruct"] == 4 and record["nfe"]["of_it_mask"] == 20
    if record["nfe"]["rungs"] == 1:  # the edit as asked took (the ladder's later rungs cost their own)
        assert record["nfe"]["edit"] == 4 + 20 + 72 and record["nfe"]["of_it_checks"] == 72
    else:
        assert record["nfe"]["edit"] > 4 + 20 + 72
    for name in ("source", "reconstruction", "edit", "inversion_trajectory", "edit_trajectory", "side_by_side"):
        assert Image.open(tmp_path / "demo" / f"{name}.png").size[0] > 0
    wrong = run(app, ["demo", "--model", str(pixel_run / "model"), "--out", str(tmp_path / "d2"), "--method", "edict"])
    assert wrong.exit_code == 2 and "the pixel demo inverts with ddim" in wrong.output
    card = run(app, ["evaluate-embedded-pixel", "--model-dir", str(pixel_run / "model"), "--out", str(tmp_path / "card"),
                     "--quick"])
    assert card.exit_code == 0, card.output
    figures = json.loads((tmp_path / "card" / "model_card.json").read_text())["figures"]
    assert set(figures["classifier_accuracy"]) == {"0", "500"}
    assert "class-conditional samples correct" in (tmp_path / "card" / "MODEL_CARD.md").read_text()


@pytest.mark.training
def test_the_trajectory_view_shows_a_classifier_guided_inversion(pixel_run: Path, tmp_path: Path) -> None:
    model_dir = pixel_run / "model"
    clf = str(model_dir / "classifier.safetensors")
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    m = ["--model", str(model_dir), "--device", "cpu"]
    run = CliRunner().invoke
    inv = run(app, ["invert", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.safetensors"), "--prompt", "circle",
                    "--steps", "4", "--classifier", clf, "--class-label", "circle", "--classifier-scale", "2", "--quiet", *m])
    assert inv.exit_code == 0, inv.output
    bare = run(app, ["trajectory", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "t.png"), "--replay", *m])
    assert bare.exit_code == 2 and "pass --classifier to replay it" in bare.output
    assert not (tmp_path / "t.png").exists()
    ok = run(app, ["trajectory", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "t.png"), "--replay",
                   "--classifier", clf, *m])
    assert ok.exit_code == 0, ok.output
    assert Image.open(tmp_path / "t.png").size[0] > 0
    stray = run(app, ["trajectory", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "u.png"), "--class-label", "1", *m])
    assert stray.exit_code == 2 and "need --classifier" in stray.output


def test_the_embedded_pixel_name_says_how_to_train_it_when_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import unsample.embedded as embedded

    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "embedded-pixel", ("no-such-folder", "unsample train-embedded-pixel"))
    with pytest.raises(ValueError, match=r"the embedded-pixel model is not installed in .*; pass a model .* or train it "
                                         r"with 'unsample train-embedded-pixel'"):
        unsample.load("embedded-pixel", device="cpu")
    with pytest.raises(ValueError, match="unknown embedded model .embedded-video."):
        embedded.embedded_model_path("embedded-video")


def test_the_v_target_is_diffusers_velocity_and_old_runs_read_as_epsilon() -> None:
    import dataclasses

    from unsample_lab.embedded.pixel_configs import build_scheduler
    from unsample_lab.embedded.pixel_train import training_target

    cfg = PixelTrainConfig()
    assert cfg.prediction_type == "v_prediction" and build_scheduler(cfg).config.prediction_type == "v_prediction"
    sched = build_scheduler(cfg)
    x0, eps = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([10, 500, 990])
    a = sched.alphas_cumprod[t]
    target, weight = training_target(x0, eps, a, cfg)
    assert torch.allclose(target, sched.get_velocity(x0, eps, t), atol=1e-6)
    snr = a / (1 - a)
    assert torch.allclose(weight, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    eps_target, _ = training_target(x0, eps, a, dataclasses.replace(cfg, prediction_type="epsilon"))
    assert torch.equal(eps_target, eps)
    old = {k: v for k, v in cfg.to_json().items() if k != "prediction_type"}
    assert PixelTrainConfig.from_json(old).prediction_type == "epsilon"
    with pytest.raises(ValueError, match="prediction_type='x0' is not epsilon or v_prediction"):
        PixelTrainConfig(prediction_type="x0")
