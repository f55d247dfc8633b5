"""The noise-aware classifier: saved and loaded as safetensors (never a pickle), it learns noisy
classes, and it guides through the Denoiser."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from unsample.backends.noisy_classifier import ClassifierConfig, NoisyClassifier
from unsample.core.schedule import NoiseSchedule

SCHEDULE = NoiseSchedule.from_config({"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02})


def _noisy_batch(g: torch.Generator, n: int = 64):  # noqa: ANN202
    """Class 0: images of mean -0.5, class 1: mean +0.5, noised at random time labels below 400."""
    labels = torch.randint(0, 2, (n,), generator=g)
    x0 = (labels.float() - 0.5).view(-1, 1, 1, 1) + 0.2 * torch.randn(n, 3, 8, 8, generator=g)
    t = torch.randint(0, 400, (n,), generator=g).double()
    alpha, sigma = (c.float().view(-1, 1, 1, 1) for c in SCHEDULE.alpha_sigma_at(t))
    return alpha * x0 + sigma * torch.randn(n, 3, 8, 8, generator=g), t, labels


@pytest.mark.training
def test_it_learns_noisy_classes_and_survives_a_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = NoisyClassifier(ClassifierConfig(in_channels=3, num_classes=2, block_out_channels=(16, 32)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        x, t, y = _noisy_batch(g)
        loss = torch.nn.functional.cross_entropy(model(x, t), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, t, y = _noisy_batch(torch.Generator().manual_seed(1), 256)
    with torch.no_grad():
        accuracy = float((model(x, t).argmax(1) == y).float().mean())
    assert accuracy > 0.9, accuracy
    back = NoisyClassifier.load(model.save(tmp_path / "clf.safetensors"))
    with torch.no_grad():
        assert torch.equal(back(x, t), model.eval()(x, t))
    guidance = back.guidance(1, scale=2.0)
    grad = guidance.log_prob_gradient(x[:2], t[:2])
    # toward class 1 (the brighter class) the gradient raises the mean
    assert grad.shape == (2, 3, 8, 8) and float(grad.mean()) > 0


def test_foreign_files_and_bad_labels_are_refused(tmp_path: Path) -> None:
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"w": [1, 2]}))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        NoisyClassifier.load(tmp_path / "p.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an unsample noisy classifier"):
        NoisyClassifier.load(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        NoisyClassifier.load(tmp_path / "nope.safetensors")
    model = NoisyClassifier(ClassifierConfig())
    with pytest.raises(ValueError, match=r"class labels \[2\] must be in 0\.\.1"):
        model.guidance(2)
    with pytest.raises(ValueError, match="must end in .safetensors"):
        model.save(tmp_path / "clf.pt")


def test_the_cli_inverts_replays_and_edits_with_a_classifier(tiny_ddpm_pipeline_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from unsample.cli import app

    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    torch.manual_seed(0)
    clf = NoisyClassifier(ClassifierConfig(block_out_channels=(16, 32))).save(tmp_path / "clf.safetensors")
    m = ["--model", str(tiny_ddpm_pipeline_dir), "--device", "cpu", "--quiet"]
    steer = ["--classifier", str(clf), "--class-label", "1", "--classifier-scale", "2"]
    run = CliRunner().invoke
    r = run(app, ["invert", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.safetensors"), "--steps", "4", *steer, *m])
    assert r.exit_code == 0, r.output
    bare = run(app, ["reconstruct", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "r.png"), *m])
    assert bare.exit_code == 2 and "made with classifier guidance (scale 2, labels [1])" in bare.output
    assert not (tmp_path / "r.png").exists()
    ok = run(app, ["reconstruct", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "r.png"), *steer, *m])
    assert ok.exit_code == 0, ok.output
    edit = run(app, ["edit", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "e.png"), "--guidance", "1",
                     "--classifier", str(clf), "--class-label", "0", *m])
    assert edit.exit_code == 0, edit.output
    assert (tmp_path / "e.png").is_file()
    lone = run(app, ["invert", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.safetensors"), "--class-label", "1", *m])
    assert lone.exit_code == 2 and "--class-label needs --classifier" in lone.output
