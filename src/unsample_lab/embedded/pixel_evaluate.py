"""Measure the embedded pixel model and its classifier; write MODEL_CARD.md, model_card.json, samples.png.

Every figure is computed here, by `unsample evaluate-embedded-pixel`:
- sample correctness per the analytic detector: DDIM samples of each shape class (50 steps), with
  and without classifier-free guidance; unconditional samples (the null class) and the same
  with classifier guidance toward each class. "Correct" = the detector finds exactly one object
  and it has the class's shape;
- the classifier's accuracy against the noise level, on held-out-split scenes noised at t;
- the DDIM round trip (invert, replay) in float32 and float64, and BDIA's (an exact inversion at
  DDIM's cost): error in [0, 1] pixels.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import unsample
from unsample.backends.diffusers_pixel import ClassConditioning
from unsample.backends.noisy_classifier import NoisyClassifier
from unsample.core.classifier import ClassifierGuidance
from unsample.embedded import embedded_model_path
from unsample_lab.embedded import model_classifier_file
from unsample_lab.embedded.evaluate import sample_grid, sample_images
from unsample_lab.embedded.pixel_configs import CLASS_NAMES
from unsample_lab.shapes import detect, random_scene, render

CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
SAMPLES_PNG = "samples.png"


@dataclass(frozen=True)
class PixelEvalConfig:
    samples_per_class: int = 40
    steps: int = 50
    cfg_guidance: float = 3.0
    classifier_scale: float = 4.0
    classifier_scenes: int = 500
    noise_levels: tuple[int, ...] = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900)
    roundtrip_scenes: int = 50
    roundtrip_scenes_float64: int = 10
    batch: int = 50
    seed: int = 4321

    @classmethod
    def quick(cls) -> PixelEvalConfig:
        return cls(samples_per_class=2, steps=5, classifier_scenes=10, noise_levels=(0, 500), roundtrip_scenes=2,
                   roundtrip_scenes_float64=1, batch=10)


def heldout_one_object(n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, n_objects=1, split="heldout") for _ in range(n)]


def generate(model: Any, labels: list[int], seeds: list[int], steps: int, guidance: float = 1.0,
             classifier: Any = None, classifier_labels: list[int] | None = None, scale: float = 0.0) -> np.ndarray:
    """DDIM samples for class indices (the null class for unconditional ones), optionally
    classifier-guided toward ``classifier_labels``; uint8 [B, H, W, 3]."""
    cond = ClassConditioning(torch.tensor(labels, device=model.device))
    null = model.pipe.classes.unconditional
    uncond = ClassConditioning(torch.full((len(labels),), null, device=model.device)) if guidance != 1.0 else None
    steer = None
    if classifier is not None and classifier_labels is not None:
        steer = ClassifierGuidance(classifier, torch.tensor(classifier_labels), scale)
    return sample_images(model, cond, uncond, seeds, steps, guidance, (3, model.resolution, model.resolution), steer)


def shape_correct(images: np.ndarray, shapes: list[str]) -> list[bool]:
    """Whether the detector finds exactly one object of each image's shape."""
    out = []
    for img, shape in zip(images, shapes):
        found = detect(img).objects
        out.append(len(found) == 1 and found[0].shape == shape)
    return out


def _batched(n: int, batch: int) -> list[range]:
    return [range(i, min(n, i + batch)) for i in range(0, n, batch)]


def sample_accuracy(model: Any, cfg: PixelEvalConfig, *, guidance: float = 1.0, unconditional: bool = False,
                    classifier: Any = None, scale: float = 0.0, keep: list | None = None) -> dict[str, Any]:
    """Per-class and overall share of samples the detector reads as one object of the class."""
    per_class: dict[str, float] = {}
    null = model.pipe.classes.unconditional
    for k, name in enumerate(CLASS_NAMES):
        hits: list[bool] = []
        for rows in _batched(cfg.samples_per_class, cfg.batch):
            seeds = [cfg.seed + 1000 * k + i for i in rows]
            labels = [null if unconditional else k] * len(seeds)
            images = generate(model, labels, seeds, cfg.steps, guidance, classifier,
                              [k] * len(seeds) if classifier is not None else None, scale)
            hits += shape_correct(images, [name] * len(seeds))
            if keep is not None and rows.start == 0:
                keep.append((name, images[0]))
        per_class[name] = float(np.mean(hits))
    return {"overall": float(np.mean(list(per_class.values()))), "per_class": per_class}


def unconditional_scenes(model: Any, cfg: PixelEvalConfig) -> dict[str, Any]:
    """Unconditional samples: the share the detector reads as one object, and the shapes it names."""
    n = cfg.samples_per_class * len(CLASS_NAMES)
    null = model.pipe.classes.unconditional
    counts: dict[str, int] = {name: 0 for name in CLASS_NAMES}
    one = 0
    for rows in _batched(n, cfg.batch):
        images = generate(model, [null] * len(rows), [cfg.seed + 90_000 + i for i in rows], cfg.steps)
        for img in images:
            found = detect(img).objects
            if len(found) == 1:
                one += 1
                counts[found[0].shape] += 1
    return {"one_object": one / n, "shapes": {k: v / n for k, v in counts.items()}}


def classifier_accuracy(model: Any, classifier: Any, cfg: PixelEvalConfig) -> dict[str, float]:
    """Accuracy of the classifier on held-out-split scenes noised to each level t."""
    scenes = heldout_one_object(cfg.classifier_scenes, cfg.seed + 5)
    x0 = torch.from_numpy(np.stack([render(s, size=model.resolution).image for s in scenes])).permute(0, 3, 1, 2)
    x0 = x0.float() / 127.5 - 1
    labels = torch.tensor([CLASS_NAMES.index(s.objects[0].shape) for s in scenes])
    alphas = model.schedule.alphas_cumprod
    out: dict[str, float] = {}
    g = torch.Generator().manual_seed(cfg.seed + 6)
    with torch.no_grad():
        for t in cfg.noise_levels:
            a = float(alphas[t])
            xt = a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(x0.shape, generator=g)
            right = 0
            for rows in _batched(len(scenes), 100):
                logits = classifier(xt[rows.start:rows.stop].to(model.device), torch.tensor(t))
                right += int((logits.argmax(1).cpu() == labels[rows.start:rows.stop]).sum())
            out[str(t)] = right / len(scenes)
    return out


def roundtrip(model: Any, scenes: list[Any], steps: int, precision: str = "float32",
              method: str = "ddim") -> dict[str, float]:
    """Inversion by ``method`` then replay at guidance 1 with the scene's class: errors in [0, 1]
    pixels (``precision``: the methods' state dtype; the network runs in the model's own)."""
    mse, worst = [], 0.0
    for scene in scenes:
        img = render(scene, size=model.resolution).image
        inv = unsample.invert(model, Image.fromarray(img), scene.objects[0].shape, method=method, steps=steps,
                              precision=precision)
        rec = unsample.reconstruct(model, inv, output="latent").double()
        err = (rec - inv.image_latent.double()) / 2  # latents are 2 x - 1: half the error in pixels
        mse.append(float(err.pow(2).mean()))
        worst = max(worst, float(err.abs().max()))
    return {"mse": float(np.mean(mse)), "max_abs": worst}


def _grid(examples: list[tuple[str, np.ndarray]], path: Path) -> None:
    sample_grid(examples, path, scale=4)


def evaluate_pixel(model_dir: Path | None = None, out: Path | None = None, cfg: PixelEvalConfig | None = None,
                   device: str = "cpu") -> dict[str, Any]:
    """Run every measurement and write the card beside the weights (or into ``out``)."""
    cfg = cfg or PixelEvalConfig()
    folder = Path(model_dir) if model_dir else embedded_model_path("embedded-pixel")
    out = Path(out) if out else folder
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - start, 1)
        return value

    model = unsample.load(str(folder), device=device)
    classifier = NoisyClassifier.load(model_classifier_file(folder), device=model.device)
    examples: list[tuple[str, np.ndarray]] = []
    figures: dict[str, Any] = {
        "class_conditional": timed("class_conditional", sample_accuracy, model, cfg, keep=examples),
        "class_conditional_cfg": timed("class_conditional_cfg", sample_accuracy, model, cfg, guidance=cfg.cfg_guidance),
        "unconditional": timed("unconditional", unconditional_scenes, model, cfg),
        "unconditional_classifier": timed("unconditional_classifier", sample_accuracy, model, cfg, unconditional=True,
                                          classifier=classifier, scale=cfg.classifier_scale),
        "classifier_accuracy": timed("classifier_accuracy", classifier_accuracy, model, classifier, cfg),
        "roundtrip_float32": timed("roundtrip_float32", roundtrip, model,
                                   heldout_one_object(cfg.roundtrip_scenes, cfg.seed + 7), cfg.steps),
    }
    figures["roundtrip_bdia"] = timed("roundtrip_bdia", roundtrip, model,
                                      heldout_one_object(cfg.roundtrip_scenes, cfg.seed + 7), cfg.steps, method="bdia")
    model64 = unsample.load(str(folder), device=device, dtype="float64")
    figures["roundtrip_float64"] = timed("roundtrip_float64", roundtrip, model64,
                                         heldout_one_object(cfg.roundtrip_scenes_float64, cfg.seed + 7), cfg.steps, "float64")
    _grid([(f"class {name}", img) for name, img in examples], out / SAMPLES_PNG)
    training_file = folder / "training.json"
    card = {
        "command": "unsample evaluate-embedded-pixel",
        "model_fingerprint": model.fingerprint,
        "resolution": model.resolution,
        "weights_bytes": sum(p.stat().st_size for p in folder.rglob("*.safetensors")),
        "config": asdict(cfg),
        "figures": figures,
        "alpha_bar": {str(t): round(float(model.schedule.alphas_cumprod[t]), 4) for t in cfg.noise_levels},
        "training": json.loads(training_file.read_text(encoding="utf-8")) if training_file.is_file() else None,
        "seconds": {**seconds, "total": round(time.perf_counter() - begin, 1)},
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()},
    }
    (out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (out / CARD_MD).write_text(render_card(card))
    return card


def _prediction(card: dict[str, Any]) -> str:
    """The trained parametrisation, from the training record (runs before the field: eps)."""
    kind = ((card.get("training") or {}).get("config") or {}).get("prediction_type", "epsilon")
    return {"epsilon": "eps-prediction", "v_prediction": "v-prediction"}.get(kind, kind)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _per_class(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_pct(v)}" for k, v in entry["per_class"].items())


def _exact_row(f: dict[str, Any], c: dict[str, Any]) -> str:
    if "roundtrip_bdia" not in f:  # cards written before the row existed
        return ""
    r = f["roundtrip_bdia"]
    return (f"| BDIA round trip (exact inversion, same {c['roundtrip_scenes']} scenes, {c['steps']} steps, float32): "
            f"MSE / max abs error | {r['mse']:.2e} / {r['max_abs']:.2e} | |\n")


def render_card(card: dict[str, Any]) -> str:
    f, c = card["figures"], card["config"]
    tr = card.get("training") or {}
    n = c["samples_per_class"]
    acc = f["classifier_accuracy"]
    noise_rows = "\n".join(f"| {t} | {card['alpha_bar'][t]:.3f} | {_pct(v)} |" for t, v in acc.items())
    training = ""
    if tr:
        training = (f"Training (`{tr.get('command')}`, {tr.get('threads')} CPU threads): UNet {tr.get('unet_steps')} steps "
                    f"in {tr.get('unet_seconds', 0) / 60:.1f} min, classifier {tr.get('classifier_steps')} steps in "
                    f"{tr.get('classifier_seconds', 0) / 60:.1f} min: "
                    f"{(tr.get('unet_seconds', 0) + tr.get('classifier_seconds', 0)) / 60:.1f} min in all.")
    return f"""# The embedded pixel model

A pixel-space `DDIMPipeline` (diffusers `UNet2DModel`, {_prediction(card)}, cosine schedule) of
one-object shapes-world scenes at {card['resolution']}x{card['resolution']}, conditioned on the object's shape
({', '.join(CLASS_NAMES)}, plus an unconditional class trained by label dropout), and its
noise-aware shape classifier (`classifier.safetensors`). {card['weights_bytes'] / 1e6:.1f} MB of safetensors.
Loaded by `unsample.load("embedded-pixel")`; trained by `unsample train-embedded-pixel`.

{training}

Figures written by `{card['command']}` (fingerprint {card['model_fingerprint']}). "Correct" means
the analytic detector (`unsample_lab.shapes.detect`) finds exactly one object and it has the
class's shape. Samples: {n} per class, {c['steps']} DDIM steps.

| measurement | figure | per class |
|---|---|---|
| class-conditional samples correct (guidance 1) | {_pct(f['class_conditional']['overall'])} | {_per_class(f['class_conditional'])} |
| class-conditional samples correct (classifier-free guidance {c['cfg_guidance']:g}) | {_pct(f['class_conditional_cfg']['overall'])} | {_per_class(f['class_conditional_cfg'])} |
| unconditional samples read as one object | {_pct(f['unconditional']['one_object'])} | shapes: {', '.join(f'{k} {_pct(v)}' for k, v in f['unconditional']['shapes'].items())} |
| unconditional + classifier guidance (scale {c['classifier_scale']:g}) toward the class: correct | {_pct(f['unconditional_classifier']['overall'])} | {_per_class(f['unconditional_classifier'])} |
| DDIM round trip, float32 ({c['roundtrip_scenes']} held-out scenes, {c['steps']} steps, guidance 1): MSE / max abs error | {f['roundtrip_float32']['mse']:.2e} / {f['roundtrip_float32']['max_abs']:.2e} | |
| DDIM round trip, float64 ({c['roundtrip_scenes_float64']} scenes, same protocol): MSE / max abs error | {f['roundtrip_float64']['mse']:.2e} / {f['roundtrip_float64']['max_abs']:.2e} | |
{_exact_row(f, c)}
Errors are in [0, 1] pixels. The classifier's accuracy on {c['classifier_scenes']} held-out-split scenes
noised to x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps (chance is 20%):

| t | a_t | accuracy |
|---|---|---|
{noise_rows}

![class-conditional samples, one per class](samples.png)

Evaluation took {card['seconds']['total']:.0f} s on {card['machine']['cpu_threads']} CPU threads
(torch {card['machine']['torch']}).
"""
