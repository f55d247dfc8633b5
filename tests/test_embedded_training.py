"""The embedded model's training loop: end to end, resumable, crash-safe (tiny config, seconds)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unsample.cli import app
from unsample.embedded import embedded_model_path
from unsample_lab.embedded import checkpoint as ckpt
from unsample_lab.embedded import install_trained_model
from unsample_lab.embedded.configs import TrainConfig
from unsample_lab.embedded.train import train_embedded

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 230), "green": (40, 180, 60)}


class StubSource:
    """A two-word world: a coloured square on black; independent of `unsample_lab.shapes`."""

    vocabulary = ("a", "square", "on", "black", "background", *COLORS)

    def sample(self, rng: np.random.Generator, n: int, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        images = np.zeros((n, size, size, 3), dtype=np.uint8)
        objects = np.zeros((n, size, size), dtype=bool)
        captions = []
        for i in range(n):
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
            x, y = rng.integers(0, size // 2, size=2)
            images[i, y : y + size // 3, x : x + size // 3] = COLORS[color]
            objects[i, y : y + size // 3, x : x + size // 3] = True
            captions.append(f"a {color} square on a black background")
        return captions, images, objects


def _steps_logged(log: str, stage: str) -> list[int]:
    return [int(n) for n in re.findall(rf"stage={stage} step=(\d+)/", log)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainConfig]:
    out = tmp_path_factory.mktemp("embedded")
    config = dataclasses.replace(TrainConfig.tiny(), unet_steps=2, vae_object_weight=10.0, unet_object_weight=5.0)
    train_embedded(out, config=config, progress=False, source=StubSource())
    return out, config


@pytest.mark.training
def test_tiny_run_writes_a_loadable_sd_pipeline(tiny_run: tuple[Path, TrainConfig]) -> None:
    from diffusers import StableDiffusionPipeline

    out, config = tiny_run
    model = out / "model"
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    for part in ("vae", "text_encoder", "unet"):
        assert list((model / part).glob("*.safetensors")), part
    assert not list(model.rglob("*.bin"))
    # The saved tokenizer pads only when asked (training's padded calls leave no state behind).
    assert json.loads((model / "tokenizer" / "tokenizer.json").read_text())["padding"] is None
    training = json.loads((model / "training.json").read_text())
    assert training["unet_steps"] == 2 and training["vae_steps"] == config.vae_steps
    assert training["decoder_steps"] == config.decoder_steps
    assert training["config"]["unet_batch"] == config.unet_batch

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    state = json.loads((out / "latest.json").read_text())
    assert pipe.vae.config.scaling_factor != 1.0  # set from the measured latent std
    assert pipe.unet.config.sample_size == config.latent_size
    assert pipe.tokenizer.model_max_length == config.max_tokens
    image = pipe(
        "a red square on a black background", num_inference_steps=2, guidance_scale=3.0,
        height=config.image_size, width=config.image_size, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, config.image_size, config.image_size, 3)
    assert np.isfinite(image).all()
    assert state["dir"].startswith("unet-")


@pytest.mark.training
def test_rerun_resumes_instead_of_restarting(tiny_run: tuple[Path, TrainConfig]) -> None:
    out, config = tiny_run
    log_before = (out / "train.log").read_text()
    assert _steps_logged(log_before, "unet") == [1, 2]

    train_embedded(out, config=dataclasses.replace(config, unet_steps=4), progress=False, source=StubSource())
    new_lines = (out / "train.log").read_text()[len(log_before):]
    assert "run start: stage=unet step=2" in new_lines
    assert _steps_logged(new_lines, "vae") == []  # the finished VAE stages are not redone
    assert _steps_logged(new_lines, "decoder") == []
    assert _steps_logged(new_lines, "unet") == [3, 4]
    assert json.loads((out / "latest.json").read_text())["dir"] == "unet-00000004"
    # A changed architecture is refused rather than silently mixed with the old weights.
    with pytest.raises(ValueError, match="different config"):
        train_embedded(out, config=dataclasses.replace(config, text_hidden=32), progress=False, source=StubSource())


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = {"w": torch.arange(4.0)}
    ckpt.write_checkpoint(tmp_path, "vae", 10, weights, {}, {"stage": "vae", "step": 10})

    real_save = ckpt.save_file

    def crash_after_first_file(tensors: dict, path: str, *args: object, **kwargs: object) -> None:
        real_save(tensors, path, *args, **kwargs)
        raise KeyboardInterrupt("killed mid-checkpoint")

    monkeypatch.setattr(ckpt, "save_file", crash_after_first_file)
    with pytest.raises(KeyboardInterrupt):
        ckpt.write_checkpoint(tmp_path, "vae", 20, {"w": torch.zeros(4)}, {}, {"stage": "vae", "step": 20})
    monkeypatch.undo()

    latest = ckpt.read_latest(tmp_path)
    assert latest is not None
    assert latest.state["step"] == 10
    assert torch.equal(latest.weights["w"], weights["w"])
    # The next good write cleans up the half-written folder.
    ckpt.write_checkpoint(tmp_path, "vae", 30, weights, {}, {"stage": "vae", "step": 30})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["vae-00000030"]


def test_optimizer_state_round_trips_through_safetensors() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    flat = ckpt.optimizer_tensors(opt)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt.load_optimizer_tensors(fresh, flat)
    for key, value in ckpt.optimizer_tensors(fresh).items():
        assert torch.equal(value, flat[key]), key


def test_install_trained_model_refuses_a_folder_without_a_pipeline(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        install_trained_model(tmp_path)
    assert embedded_model_path().name == "model"


@pytest.mark.training
def test_install_trained_model_copies_the_pipeline(
    tiny_run: tuple[Path, TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unsample_lab.embedded as embedded

    target = tmp_path / "package" / "model"
    target.parent.mkdir()
    monkeypatch.setattr(embedded, "embedded_model_path", lambda name="embedded": target)
    out, _ = tiny_run
    for _ in range(2):  # installing over an existing model replaces it whole
        assert embedded.install_trained_model(out) == target
    assert (target / "model_index.json").read_text() == (out / "model" / "model_index.json").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_install_embedded_command_is_the_explicit_install_step(
    tiny_run: tuple[Path, TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``unsample install-embedded RUN_DIR [--model NAME]`` installs through `install_trained_model`;
    a model of another family, or an unknown name, is refused (exit 2) before anything is written."""
    import unsample_lab.embedded as embedded

    target = tmp_path / "package" / "model"
    target.parent.mkdir()
    asked: list[str] = []
    monkeypatch.setattr(embedded, "embedded_model_path", lambda name="embedded": asked.append(name) or target)
    out, _ = tiny_run
    runner = CliRunner()
    for name in ("embedded-flow", "embedded-pixel", "sdxl"):
        r = runner.invoke(app, ["install-embedded", str(out), "--model", name])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert not target.exists() and asked == []
    assert "it is a model for --model embedded" in runner.invoke(app, ["install-embedded", str(out), "--model",
                                                                      "embedded-flow"]).output
    r = runner.invoke(app, ["install-embedded", str(tmp_path / "nothing-here")])
    assert r.exit_code == 2 and "no model_index.json" in r.output and not target.exists()

    r = runner.invoke(app, ["install-embedded", str(out)])
    assert r.exit_code == 0, r.output
    assert asked == ["embedded"] and f"installed embedded into {target}" in r.output
    assert (target / "model_index.json").read_text() == (out / "model" / "model_index.json").read_text()
    r = runner.invoke(app, ["install-embedded", str(out / "model"), "--model", "embedded"])  # the model/ folder itself
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_set_changes_only_what_a_resumed_run_may_change(tmp_path: Path) -> None:
    """``--set FIELD=VALUE`` (train-embedded, train-embedded-pixel) starts from the run folder's saved
    config and changes budget fields; anything else, or a bad value, is refused before any work."""
    from unsample_lab.cli.embedded import _with_settings
    from unsample_lab.embedded.run_folder import RUN_JSON
    from unsample_lab.embedded.train import RESUMABLE_CHANGES

    saved = TrainConfig.tiny()
    ckpt.write_json_atomic(tmp_path / RUN_JSON, {"config": saved.to_json()})
    changed = _with_settings(None, tmp_path, TrainConfig, RESUMABLE_CHANGES, ["unet-steps=7", "unet_max_minutes=2.5"])
    assert changed == dataclasses.replace(saved, unet_steps=7, unet_max_minutes=2.5)
    assert _with_settings(None, tmp_path, TrainConfig, RESUMABLE_CHANGES, None) is None  # no --set: the run decides
    assert _with_settings(None, tmp_path / "new", TrainConfig, RESUMABLE_CHANGES, ["threads=1"]) == \
        dataclasses.replace(TrainConfig(), threads=1)

    runner = CliRunner()
    for pairs, message in ((["unet_lr=1"], "is not FIELD=VALUE"), (["unet_steps"], "is not FIELD=VALUE"),
                           (["unet_steps=1.5"], "is not an integer"), (["unet_max_minutes=0"], "must be positive"),
                           (["vae_steps=-1"], "must be 0 or more")):
        out = tmp_path / "run"
        r = runner.invoke(app, ["train-embedded", "--out", str(out), "--tiny", *(a for p in pairs for a in ("--set", p))])
        assert r.exit_code == 2 and message in r.output, r.output
        assert not out.exists()
    r = runner.invoke(app, ["train-embedded-pixel", "--out", str(tmp_path / "pix"), "--set", "vae_steps=1"])
    assert r.exit_code == 2 and "classifier_steps" in r.output and not (tmp_path / "pix").exists()


def test_thread_tuner_settles_on_the_faster_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from unsample_lab.embedded import threads

    clock = [0.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    before = torch.get_num_threads()
    tuner = threads.ThreadTuner(2, explore_every=20, explore_steps=3)
    used = []
    try:
        for _ in range(40):
            tuner.start_step()
            used.append(tuner.threads)
            clock[0] += 1.0 if tuner.threads == 1 else 5.0  # a busy machine: 2 threads stall
            tuner.end_step()
    finally:
        torch.set_num_threads(before)
    assert tuner.best == 1
    assert used[:3] == [2, 2, 2] and used.count(2) == 6  # only the exploration steps use 2


@pytest.mark.training
def test_decoder_stage_leaves_the_latents_alone(tmp_path: Path) -> None:
    """The decoder fine-tune changes the decoder and nothing the UNet's latents depend on."""
    from safetensors.torch import load_file

    from unsample_lab.embedded.configs import build_vae
    from unsample_lab.embedded.run_folder import RUN_JSON

    config = dataclasses.replace(TrainConfig.tiny(), decoder_steps=3, unet_steps=0)
    torch.manual_seed(1)
    before = build_vae(config).state_dict()
    # A run folder whose VAE stage is done: the decoder stage starts from these weights.
    ckpt.write_json_atomic(tmp_path / RUN_JSON, {"config": config.to_json()})
    ckpt.write_checkpoint(tmp_path, "decoder", 0, {f"vae.{k}": v for k, v in before.items()}, {},
                          {"stage": "decoder", "step": 0, "scaling_factor": 1.0})
    train_embedded(tmp_path, config=config, progress=False, source=StubSource())
    after = load_file(str(tmp_path / "model" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert before.keys() == after.keys()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder and len(encoder) + len(decoder) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    assert not all(torch.equal(before[k], after[k]) for k in decoder)
    assert _steps_logged((tmp_path / "train.log").read_text(), "decoder") == [1, 2, 3]


def test_min_snr_weights() -> None:
    """min(SNR, gamma) / SNR, with SNR = alpha_bar / (1 - alpha_bar); gamma 0 means no weighting."""
    from unsample_lab.embedded.losses import snr_weight

    alpha_bar = torch.tensor([0.5, 0.8, 5 / 6, 0.99])  # SNR 1, 4, 5, 99
    expected = torch.tensor([1.0, 1.0, 1.0, 5 / 99])
    assert torch.allclose(snr_weight(alpha_bar, 5.0), expected)
    assert torch.equal(snr_weight(alpha_bar, 0.0), torch.ones(4))


def test_unet_attention_sits_on_the_named_levels_only() -> None:
    """Blocks of the named levels (0 = full latent resolution) attend; the others are plain."""
    from unsample_lab.embedded.configs import build_unet, unet_config

    cfg = dataclasses.replace(TrainConfig.tiny(), unet_channels=(16, 16, 32), unet_attention_levels=(1,))
    config = unet_config(cfg)
    assert config["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert config["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    unet = build_unet(cfg)
    attending = [i for i, block in enumerate(unet.down_blocks) if hasattr(block, "attentions")]
    assert attending == [1]
    with pytest.raises(ValueError, match=r"unet_attention_levels \(3,\) names levels outside 0..2"):
        unet_config(dataclasses.replace(cfg, unet_attention_levels=(3,)))


@pytest.mark.parametrize(("mid_attention", "expected"), [(True, 2), (False, 0)])
def test_vae_mid_attention_switches_both_mid_blocks(tmp_path: Path, mid_attention: bool, expected: int) -> None:
    """The flag reaches diffusers' ``mid_block_add_attention`` and survives a save and load."""
    from diffusers import AutoencoderKL
    from diffusers.models.attention_processor import Attention

    from unsample_lab.embedded.configs import build_vae

    cfg = dataclasses.replace(TrainConfig.tiny(), vae_mid_attention=mid_attention)
    build_vae(cfg).save_pretrained(tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path)
    assert sum(isinstance(m, Attention) for m in vae.modules()) == expected


def test_runs_from_before_attention_levels_resume_with_their_layout() -> None:
    """A run.json without ``unet_attention_levels`` had attention on every level but the lowest."""
    old = {k: v for k, v in TrainConfig().to_json().items() if k != "unet_attention_levels"}
    old["unet_channels"] = [64, 64, 128]
    assert TrainConfig.from_json(old).unet_attention_levels == (0, 1)


def test_object_weights_mark_the_dilated_objects_and_their_latent_cells() -> None:
    from unsample_lab.embedded.losses import object_weights

    objects = torch.zeros(1, 1, 8, 8)
    objects[0, 0, 5, 5] = 1.0
    pixels = object_weights(objects, 10.0, dilation=1)
    expected = torch.ones(8, 8)
    expected[4:7, 4:7] = 11.0
    assert torch.equal(pixels[0, 0], expected)
    cells = object_weights(objects, 10.0, dilation=1, cell=4)
    assert torch.equal(cells[0, 0], torch.tensor([[1.0, 1.0], [1.0, 11.0]]))
    # a dilated pixel reaching into a neighbouring cell marks that cell too
    assert torch.equal(object_weights(objects, 10.0, dilation=2, cell=4)[0, 0], torch.tensor([[11.0, 11.0], [11.0, 11.0]]))


def test_shapes_source_masks_are_the_union_of_the_rendered_object_masks() -> None:
    from unsample_lab.embedded.data import ShapesSource
    from unsample_lab.shapes import random_scene, render

    captions, images, objects = ShapesSource().sample(np.random.default_rng(3), 6, 64)
    rng = np.random.default_rng(3)
    for image, found in zip(images, objects):
        r = render(random_scene(rng, split="train"), size=64)
        assert np.array_equal(image, r.image)
        assert np.array_equal(found, np.logical_or.reduce(r.masks, axis=0))
        assert 0 < found.sum() < found.size


def test_runs_from_before_object_weights_resume_unweighted() -> None:
    old = {k: v for k, v in TrainConfig().to_json().items() if k not in ("vae_object_weight", "unet_object_weight")}
    cfg = TrainConfig.from_json(old)
    assert cfg.vae_object_weight == 0.0 and cfg.unet_object_weight == 0.0


def test_unit_weights_give_the_unweighted_reconstruction_loss() -> None:
    """Weight 0 (every pixel 1) is the loss the recipe trained with before object weighting (model
    b26912d1): L1 + MSE + edge weight times the L1 between the reconstruction's and the image's
    finite differences."""
    from unsample_lab.embedded.autoencoder_stages import recon_loss

    g = torch.Generator().manual_seed(0)
    x, recon = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    cfg = TrainConfig.tiny()
    loss, mse = recon_loss(recon, x, torch.ones(2, 1, 8, 8), cfg)
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    dx = lambda t: t[..., 1:] - t[..., :-1]  # noqa: E731
    old = ((recon - x).abs().mean() + (recon - x).pow(2).mean()
           + cfg.vae_edge_weight * ((dy(recon) - dy(x)).abs().mean() + (dx(recon) - dx(x)).abs().mean()))
    assert torch.allclose(loss, old, rtol=1e-6, atol=0)
    assert mse == pytest.approx(float((recon - x).pow(2).mean()))


def test_signal_gate_fades_the_unet_object_weight_with_alpha_bar() -> None:
    """Extra weight ``w * g(t)`` per sample: g = alpha_bar_t for "signal", 1 for "constant"."""
    from unsample_lab.embedded.losses import object_weight_gate, object_weights

    alpha_bar = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(object_weight_gate(alpha_bar, "signal"), alpha_bar)
    assert torch.equal(object_weight_gate(alpha_bar, "constant"), torch.ones(3))
    objects = torch.zeros(3, 1, 8, 8)
    objects[:, 0, 1, 1] = 1.0
    cells = object_weights(objects, 4.0, dilation=0, cell=4, gate=alpha_bar.view(-1, 1, 1, 1))
    assert cells[:, 0, 0, 0].tolist() == [1.0, 2.0, 5.0]  # 1 + 4 * alpha_bar on the object's cell
    assert torch.equal(cells[:, 0, 1, 1], torch.ones(3))  # background cells stay 1 at every t


def test_runs_from_before_the_object_weight_gate_resume_with_a_constant_weight() -> None:
    old = {k: v for k, v in TrainConfig().to_json().items() if k != "unet_object_weight_gate"}
    assert TrainConfig.from_json(old).unet_object_weight_gate == "constant"
    with pytest.raises(ValueError, match=r"unet_object_weight_gate 'snr' is not one of \('constant', 'signal'\)"):
        dataclasses.replace(TrainConfig(), unet_object_weight_gate="snr")


@pytest.mark.training
def test_a_run_started_from_a_models_autoencoder_keeps_it_and_skips_its_stages(
    tiny_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    from diffusers import AutoencoderKL

    from unsample_lab.embedded.train import start_from_autoencoder

    out, config = tiny_run
    source_model = out / "model"
    before = json.loads((source_model / "training.json").read_text())
    run = tmp_path / "unet-only"
    changed = dataclasses.replace(config, unet_object_weight_gate="constant", unet_lr=1e-3)  # UNet fields only
    start_from_autoencoder(run, source_model, changed)
    # the same start again (here through train_embedded) leaves the run to resume
    train_embedded(run, config=changed, progress=False, source=StubSource(), autoencoder_from=source_model)

    log = (run / "train.log").read_text()
    assert _steps_logged(log, "vae") == [] and _steps_logged(log, "decoder") == []
    assert _steps_logged(log, "unet") == [1, 2]
    theirs = AutoencoderKL.from_pretrained(source_model / "vae")
    ours = AutoencoderKL.from_pretrained(run / "model" / "vae")
    assert ours.config.scaling_factor == theirs.config.scaling_factor
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name
    training = json.loads((run / "model" / "training.json").read_text())
    assert training["autoencoder_from"] == str(source_model)
    for key in ("vae_steps", "decoder_steps", "vae_minutes", "decoder_minutes", "vae_train_psnr_db"):
        assert training[key] == before[key], key
    assert training["config"]["unet_object_weight_gate"] == "constant"


@pytest.mark.training
def test_starting_from_an_autoencoder_refuses_other_settings_and_other_runs(
    tiny_run: tuple[Path, TrainConfig], tmp_path: Path
) -> None:
    from unsample_lab.embedded.train import start_from_autoencoder

    out, config = tiny_run
    with pytest.raises(ValueError, match=r"other settings \(vae_kl_weight\)"):
        start_from_autoencoder(tmp_path / "a", out / "model", dataclasses.replace(config, vae_kl_weight=1e-3))
    assert not (tmp_path / "a").exists()  # nothing written for a refused start
    with pytest.raises(ValueError, match="already holds a run not started from"):
        start_from_autoencoder(out, out / "model", config)  # a from-scratch run folder
    with pytest.raises(FileNotFoundError, match="no training.json in"):
        start_from_autoencoder(tmp_path / "b", tmp_path, config)
