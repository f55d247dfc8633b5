"""The embedded flow model's trainer on a tiny config: an SD3 pipeline folder without T5 that
`unsample.load` reads back (with the zero-T5-token count it was trained with), resumable runs,
and the training noising equal to diffusers' flow-matching scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import unsample
from unsample.embedded import embedded_model_path
from unsample_lab.embedded.flow_configs import FlowTrainConfig

pytestmark = pytest.mark.skipif(not (embedded_model_path() / "vae").is_dir(),
                                reason="the flow trainer reuses the installed embedded model's autoencoder")
# The trainer builds its parts from the embedded model's autoencoder and text encoder: tests that
# train (`flow_run` included) or build those parts carry both the `training` and the `model` marks.


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unsample_lab.embedded.flow_train import train_embedded_flow

    out = tmp_path_factory.mktemp("flow-run")
    train_embedded_flow(out, config=FlowTrainConfig.tiny())
    return out


@pytest.mark.model
@pytest.mark.training
def test_a_tiny_run_exports_an_sd3_pipeline_without_t5(flow_run: Path) -> None:
    model_dir = flow_run / "model"
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["text_encoder_3"] == [None, None] and index["tokenizer_3"] == [None, None]
    assert json.loads((model_dir / "unsample.json").read_text()) == {"max_sequence_length": 0}
    training = json.loads((model_dir / "training.json").read_text())
    assert training["steps"] == 3 and training["command"] == "unsample train-embedded --family flow"
    m = unsample.load(str(model_dir), device="cpu")
    assert type(m).__name__ == "StableDiffusion3Model" and m.max_sequence_length == 0 and m.resolution == 64
    den = m.denoiser("a large red circle on a plain gray background", guidance=3.0)
    assert den.cond.embeds.shape[1] == 16  # the CLIP tokens only: no zero T5 tokens


@pytest.mark.model
def test_the_first_text_encoder_starts_as_the_embedded_models() -> None:
    """Every weight of the first CLIP slot's text model equals the embedded model's text encoder
    before training moves it; only the projection is new."""
    from transformers import CLIPTextModel

    from unsample_lab.embedded.flow_train import build_parts

    parts = build_parts(FlowTrainConfig.tiny(), embedded_model_path())
    source = CLIPTextModel.from_pretrained(str(embedded_model_path() / "text_encoder")).state_dict()
    source = {k.removeprefix("text_model."): v for k, v in source.items()}  # key prefixes vary across transformers
    ours = {k.removeprefix("text_model."): v for k, v in parts.text.state_dict().items()}
    assert set(ours) - set(source) == {"text_projection.weight"} and set(source) <= set(ours)
    for name, weight in source.items():
        assert torch.equal(ours[name], weight), name


def test_the_training_noising_is_diffusers_flow_matching() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from unsample_lab.embedded.flow_configs import build_scheduler

    sched = build_scheduler(FlowTrainConfig())
    assert isinstance(sched, FlowMatchEulerDiscreteScheduler) and sched.config.shift == 1.0
    sched.set_timesteps(10)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    t = sched.timesteps[3:4]
    s = t / 1000  # the trainer's timestep input is s * 1000 and its state (1 - s) x0 + s eps
    assert torch.allclose(sched.scale_noise(x0, t, eps), (1 - s) * x0 + s * eps, atol=1e-6)


def test_sigmas_are_logit_normal_or_uniform() -> None:
    from unsample_lab.embedded.flow_train import sample_sigmas

    g = torch.Generator().manual_seed(0)
    s = sample_sigmas(FlowTrainConfig(), 20000, g)
    assert 0 < float(s.min()) and float(s.max()) < 1
    assert abs(float(torch.logit(s).mean())) < 0.05 and abs(float(torch.logit(s).std()) - 1) < 0.05
    u = sample_sigmas(FlowTrainConfig(timestep_sampling="uniform"), 20000, g)
    assert abs(float(u.mean()) - 0.5) < 0.01
    with pytest.raises(ValueError, match="timestep_sampling='beta' is not logit_normal or uniform"):
        FlowTrainConfig(timestep_sampling="beta")


@pytest.mark.model
@pytest.mark.training
def test_an_interrupted_flow_run_resumes_and_a_changed_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from unsample_lab.embedded import flow_train

    real = flow_train.draw_batch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(flow_train, "draw_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        flow_train.train_embedded_flow(tmp_path, config=FlowTrainConfig.tiny())
    assert json.loads((tmp_path / "latest.json").read_text()) == {"dir": "flow-00000002"}
    monkeypatch.setattr(flow_train, "draw_batch", real)
    flow_train.train_embedded_flow(tmp_path)
    log = (tmp_path / "train.log").read_text()
    assert "run start: stage=flow step=2" in log and "stage=flow done: steps=3" in log
    with pytest.raises(ValueError, match=r"different config \(layers\)"):
        flow_train.train_embedded_flow(tmp_path, config=dataclasses.replace(FlowTrainConfig.tiny(), layers=2))


@pytest.mark.model
@pytest.mark.training
def test_a_run_continues_a_finished_model_from_its_exported_weights(flow_run: Path, tmp_path: Path) -> None:
    """--init-from: the new run's weights start as the finished model's (its EMA transformer), and
    the exported training.json adds both runs up; a model of another config is refused."""
    from diffusers import SD3Transformer2DModel
    from typer.testing import CliRunner

    from unsample.cli import app
    from unsample_lab.embedded.flow_train import build_parts, load_finished

    finished = flow_run / "model"
    parts = build_parts(FlowTrainConfig.tiny(), embedded_model_path())
    load_finished(parts, finished)
    exported = SD3Transformer2DModel.from_pretrained(str(finished / "transformer")).state_dict()
    ours = parts.transformer.state_dict()
    assert set(ours) == set(exported) and all(torch.equal(ours[k], exported[k]) for k in exported)

    out = tmp_path / "continued"
    r = CliRunner().invoke(app, ["train-embedded", "--family", "flow", "--tiny", "--out", str(out),
                                 "--init-from", str(finished), "--lr", "1e-4"])
    assert r.exit_code == 0, r.output
    training = json.loads((out / "model" / "training.json").read_text())
    first = json.loads((finished / "training.json").read_text())
    assert training["steps"] == first["steps"] + 3 and [run["init"] for run in training["runs"]] == ["scratch", "continued"]
    assert training["runs"][1]["lr"] == 1e-4 and training["autoencoder_from"].startswith("embedded")
    assert "continuing" in (out / "train.log").read_text()

    bigger = tmp_path / "bigger"
    bigger.mkdir()
    (bigger / "run.json").write_text(json.dumps({"config": {**FlowTrainConfig.tiny().to_json(), "layers": 2}}))
    r = CliRunner().invoke(app, ["train-embedded", "--family", "flow", "--out", str(bigger), "--init-from", str(finished)])
    assert r.exit_code == 2 and "does not fit this run's config" in r.output
    r = CliRunner().invoke(app, ["train-embedded", "--family", "flow", "--out", str(tmp_path / "x"),
                                 "--init-from", str(tmp_path)])
    assert r.exit_code == 2 and "training.json" in r.output


@pytest.mark.model
@pytest.mark.training
def test_the_card_measures_a_flow_model(flow_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unsample.cli import app

    r = CliRunner().invoke(app, ["evaluate-embedded", "--model-dir", str(flow_run / "model"), "--out", str(tmp_path), "--quick"])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["family"] == "flow" and 0 <= card["figures"]["t2i_one_object_accuracy"] <= 1
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert text.startswith("# The embedded flow model") and "the two text encoders and the SD3 transformer 3 steps" in text
    both = CliRunner().invoke(app, ["evaluate-embedded", "--model", "embedded-flow", "--model-dir", str(flow_run)])
    assert both.exit_code == 2 and "give --model or --model-dir, not both" in both.output


def test_the_edit_bench_leaves_out_what_a_flow_model_cannot_hook() -> None:
    from types import SimpleNamespace

    from unsample_lab.bench.edit import EditBench, runnable_on

    bench = EditBench(controls=("swap", "p2p"), masks=("none", "noise", "attention"))
    unet = SimpleNamespace(supports_attention_control=True)
    assert runnable_on(unet, bench) == (bench, "")
    flow = type("StableDiffusion3Model", (), {"supports_attention_control": False})()
    kept, note = runnable_on(flow, bench)
    assert kept.controls == ("swap",) and kept.masks == ("none", "noise")
    assert note == "StableDiffusion3Model has no cross-attention the editor can hook: left out p2p, mask attention"
    with pytest.raises(ValueError, match="every control or mask asked for needs it"):
        runnable_on(flow, EditBench(controls=("p2p",), masks=("none",)))


@pytest.mark.model
@pytest.mark.training
def test_max_minutes_changes_the_cap_of_a_run_and_is_kept(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unsample.cli import app
    from unsample_lab.embedded import flow_train

    flow_train.train_embedded_flow(tmp_path, config=FlowTrainConfig.tiny(), max_minutes=30)
    saved = json.loads((tmp_path / "run.json").read_text())["config"]
    assert saved["max_minutes"] == 30.0 and saved["layers"] == 1  # the tiny config, with the new cap
    flow_train.train_embedded_flow(tmp_path, max_minutes=45)  # a resumable change
    assert json.loads((tmp_path / "run.json").read_text())["config"]["max_minutes"] == 45.0
    with pytest.raises(ValueError, match="max_minutes=0 must be positive"):
        flow_train.train_embedded_flow(tmp_path, max_minutes=0)
    r = CliRunner().invoke(app, ["train-embedded", "--out", str(tmp_path / "sd"), "--max-minutes", "5"])
    assert r.exit_code == 2 and "--max-minutes, --init-from and --lr apply to --family flow" in r.output
    assert not (tmp_path / "sd").exists()
