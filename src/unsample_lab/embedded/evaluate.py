"""``unsample evaluate-embedded``: measure the embedded model and write its model card.

Figures (targets from the project's issue; a missed target is reported, never lowered):

- VAE reconstruction PSNR on held-out scenes (target >= 30 dB);
- text-to-image correctness: the share of samples (DDIM, 50 steps, guidance 5, seeds 0..n-1,
  held-out captions) whose every object's shape and colour and the background colour are right
  per the analytic detector (target >= 85% for one-object captions; two-object reported apart);
- DDIM inversion round trip (guidance 1, 50 steps): reconstruction MSE over the VAE floor's MSE
  (target <= 1.5x), both on [0, 1] pixels against the source render;
- a PNG grid of generated samples with their captions.

The card is ``MODEL_CARD.md`` plus ``model_card.json`` beside the weights (or in ``--out``).
"""

from __future__ import annotations

import json
import platform
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

import unsample
from unsample.core.denoiser import Denoiser
from unsample.embedded import embedded_model_path
from unsample.methods import ddim
from unsample_lab.embedded.run_folder import TRAINING_JSON
from unsample_lab.shapes import caption, detect, detection_matches, parse_caption, random_scene, render, render_batch

TARGETS = {"vae_psnr_db": 30.0, "t2i_one_object_accuracy": 0.85, "ddim_roundtrip_mse_over_floor": 1.5}


@dataclass(frozen=True)
class EvalConfig:
    vae_scenes: int = 500
    t2i_samples: int = 200
    t2i_steps: int = 50
    t2i_guidance: float = 5.0
    roundtrip_scenes: int = 50
    roundtrip_steps: int = 50
    batch: int = 25
    seed: int = 12345

    @classmethod
    def quick(cls) -> EvalConfig:
        return cls(vae_scenes=40, t2i_samples=10, t2i_steps=10, roundtrip_scenes=4, roundtrip_steps=10, batch=10)


def _heldout_scenes(n: int, seed: int, n_objects: int | None = None) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, n_objects=n_objects, split="heldout") for _ in range(n)]


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def _autoencoded(model: Any, scenes: list[Any], batch: int) -> Iterator[tuple[list[Any], np.ndarray, np.ndarray]]:
    """(scenes, their exact renders, the renders passed through the VAE) in chunks of ``batch``;
    the VAE encodes to the posterior mean and decodes, as `Model.encode_image` does."""
    for i in range(0, len(scenes), batch):
        chunk = scenes[i : i + batch]
        images = render_batch(chunk, size=model.resolution)
        with torch.no_grad():
            rec = to_uint8(model.decode_latent(model.encode_image(_to_tensor(images, model.device))))
        yield chunk, images, rec


def vae_psnr(model: Any, cfg: EvalConfig) -> float:
    from skimage.metrics import peak_signal_noise_ratio  # heavy (scikit-image): loaded on use

    scenes = _heldout_scenes(cfg.vae_scenes, cfg.seed)
    return float(np.mean([peak_signal_noise_ratio(a, b, data_range=255)
                          for _, images, rec in _autoencoded(model, scenes, cfg.batch) for a, b in zip(images, rec)]))


def _conditioning(model: Any, prompts: list[str]) -> Any:
    conds = [model.encode_prompt(p) for p in prompts]
    out = conds[0]
    for c in conds[1:]:
        out = out.cat(c)
    return out


@torch.no_grad()
def sample_images(model: Any, cond: Any, uncond: Any, seeds: list[int], steps: int, guidance: float,
                  latent_shape: tuple[int, int, int], classifier: Any = None) -> np.ndarray:
    """DDIM samples from per-sample seeds' noise ([C, h, w] each), decoded; uint8 [B, H, W, 3]."""
    noise = torch.stack([torch.randn(*latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    schedule = model.schedule_for(latent_shape[1:])
    den = Denoiser(model.model_fn, schedule, cond, uncond, guidance=guidance, classifier=classifier)
    latent = ddim.sample(den, schedule.grid(steps), noise.to(model.device))
    return to_uint8(model.decode_latent(latent))


def generate(model: Any, captions: list[str], seeds: list[int], steps: int, guidance: float) -> np.ndarray:
    """DDIM samples for captions, noise from per-sample seeds; uint8 [B, H, W, 3]."""
    side = model.resolution // model.vae_factor
    channels = int(model.pipe.vae.config.latent_channels)
    return sample_images(model, _conditioning(model, captions), _conditioning(model, [""] * len(captions)), seeds,
                         steps, guidance, (channels, side, side))


PARTS = ("count", "background", "colors", "shapes")
"""What a sample can get right on its own: object count, background colour, and the multisets of
object colours and of object shapes."""


def caption_parts(detection: Any, caption: str) -> dict[str, bool]:
    """Which of `PARTS` a detection gets right for a caption (a failure's anatomy)."""
    spec = parse_caption(caption)
    found, wanted = detection.objects, spec.objects
    return {
        "count": len(found) == len(wanted),
        "background": detection.background == spec.background,
        "colors": Counter(o.color for o in found) == Counter(o.color for o in wanted),
        "shapes": Counter(o.shape for o in found) == Counter(o.shape for o in wanted),
    }


def t2i_accuracy(model: Any, cfg: EvalConfig, n_objects: int) -> dict[str, Any]:
    """Shares of samples right on shapes+colours+background ("right"), also on sizes and texture
    ("strict"), and on each of `PARTS`; plus up to 16 (caption, image) examples."""
    scenes = _heldout_scenes(cfg.t2i_samples, cfg.seed + n_objects, n_objects=n_objects)
    captions = [caption(s) for s in scenes]
    right = strict = 0
    parts = dict.fromkeys(PARTS, 0)
    examples: list[tuple[str, np.ndarray]] = []
    for i in range(0, len(captions), cfg.batch):
        chunk = captions[i : i + cfg.batch]
        images = generate(model, chunk, list(range(i, i + len(chunk))), cfg.t2i_steps, cfg.t2i_guidance)
        for cap, img in zip(chunk, images):
            det = detect(img)
            right += detection_matches(det, cap, check_size=False, check_texture=False)
            strict += detection_matches(det, cap)
            for part, ok in caption_parts(det, cap).items():
                parts[part] += ok
            if len(examples) < 16:
                examples.append((cap, img))
    n = len(captions)
    return {"right": right / n, "strict": strict / n, "parts": {k: v / n for k, v in parts.items()},
            "examples": examples}


def vae_ceiling(model: Any, cfg: EvalConfig, n_objects: int) -> float:
    """Share of `t2i_accuracy`'s captions whose exact renders, passed through the VAE (posterior
    mean, decoded), the detector still judges right: what a UNet that drew every latent perfectly
    would score, so the autoencoder's ceiling on text-to-image correctness."""
    scenes = _heldout_scenes(cfg.t2i_samples, cfg.seed + n_objects, n_objects=n_objects)
    right = sum(detection_matches(detect(img), caption(s), check_size=False, check_texture=False)
                for chunk, _, rec in _autoencoded(model, scenes, cfg.batch) for s, img in zip(chunk, rec))
    return right / len(scenes)


def roundtrip_ratio(model: Any, cfg: EvalConfig) -> tuple[float, float, float]:
    """(mean reconstruction MSE, mean VAE-floor MSE, their ratio) for DDIM inversion at guidance 1."""
    rec_mse, floor_mse = [], []
    for scene in _heldout_scenes(cfg.roundtrip_scenes, cfg.seed + 7):
        img = render(scene, size=model.resolution).image
        target = img.astype(np.float64) / 255
        inv = unsample.invert(model, Image.fromarray(img), caption(scene), method="ddim",
                              steps=cfg.roundtrip_steps, guidance=1.0)
        rec = to_uint8(model.decode_latent(unsample.reconstruct(model, inv, output="latent").float()))[0]
        floor = to_uint8(model.decode_latent(inv.image_latent))[0]
        rec_mse.append(np.mean((rec / 255 - target) ** 2))
        floor_mse.append(np.mean((floor / 255 - target) ** 2))
    r, f = float(np.mean(rec_mse)), float(np.mean(floor_mse))
    return r, f, r / f


def sample_grid(examples: list[tuple[str, np.ndarray]], path: Path, scale: int = 3) -> None:
    """A labelled grid of generated samples (4 per row), each caption wrapped under its image."""
    side = examples[0][1].shape[0] * scale
    cols, gap, line_h = 4, 10, 12
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    chars = max(8, int(side / max(1.0, probe.textlength("abcdefghij") / 10)))
    labels = [textwrap.wrap(cap, width=chars) for cap, _ in examples]
    label_h = line_h * max(len(lines) for lines in labels) + 6
    rows = -(-len(examples) // cols)
    sheet = Image.new("RGB", (cols * (side + gap) - gap, rows * (side + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, ((_, img), lines) in enumerate(zip(examples, labels)):
        x, y = (k % cols) * (side + gap), (k // cols) * (side + label_h)
        sheet.paste(Image.fromarray(img).resize((side, side), Image.Resampling.NEAREST), (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + side + 2 + j * line_h), line, fill="black")
    sheet.save(path)


def evaluate(model_dir: Path | None = None, out: Path | None = None, cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Run every measurement and write MODEL_CARD.md, model_card.json and samples.png."""
    cfg = cfg or EvalConfig()
    folder = Path(model_dir) if model_dir else embedded_model_path()
    out = Path(out) if out else folder
    out.mkdir(parents=True, exist_ok=True)
    model = unsample.load(str(folder), device="cpu")
    begin = time.perf_counter()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    psnr = vae_psnr(model, cfg)
    ceiling = vae_ceiling(model, cfg, 1), vae_ceiling(model, cfg, 2)
    timings["vae"] = time.perf_counter() - t
    t = time.perf_counter()
    one, two = t2i_accuracy(model, cfg, 1), t2i_accuracy(model, cfg, 2)
    acc1, acc2 = one["right"], two["right"]
    timings["t2i"] = time.perf_counter() - t
    t = time.perf_counter()
    rec_mse, floor_mse, ratio = roundtrip_ratio(model, cfg)
    timings["roundtrip"] = time.perf_counter() - t
    sample_grid(one["examples"][:8] + two["examples"][:8], out / "samples.png")

    figures = {
        "vae_psnr_db": psnr,
        "vae_ceiling_one_object": ceiling[0],
        "vae_ceiling_two_objects": ceiling[1],
        "t2i_one_object_accuracy": acc1,
        "t2i_two_object_accuracy": acc2,
        "t2i_one_object_accuracy_strict": one["strict"],
        "t2i_two_object_accuracy_strict": two["strict"],
        "t2i_one_object_parts": one["parts"],
        "t2i_two_object_parts": two["parts"],
        "ddim_roundtrip_mse": rec_mse,
        "vae_floor_mse": floor_mse,
        "ddim_roundtrip_mse_over_floor": ratio,
    }
    met = {
        "vae_psnr_db": psnr >= TARGETS["vae_psnr_db"],
        "t2i_one_object_accuracy": acc1 >= TARGETS["t2i_one_object_accuracy"],
        "ddim_roundtrip_mse_over_floor": ratio <= TARGETS["ddim_roundtrip_mse_over_floor"],
    }
    weights = sorted(folder.rglob("*.safetensors"))
    training_file = folder / TRAINING_JSON
    training = json.loads(training_file.read_text(encoding="utf-8")) if training_file.is_file() else None
    card = {
        "figures": figures,
        "targets": TARGETS,
        "targets_met": met,
        "config": cfg.__dict__,
        "model_fingerprint": model.fingerprint,
        "weights_bytes": sum(p.stat().st_size for p in weights),
        "resolution": model.resolution,
        "seconds": {**timings, "total": time.perf_counter() - begin},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads()},
        "command": "unsample evaluate-embedded",
        "family": "flow" if type(model).__name__ == "StableDiffusion3Model" else "sd",
        "training": training,
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(render_card(card))
    return card


def _training_line(training: dict[str, Any] | None) -> str:
    if not training:
        return "Training record: none beside the weights (exported before training.json existed)."
    if "--family flow" in training.get("command", ""):
        return (f"Training (`{training['command']}`, {training['config']['threads']} CPU threads): the two text encoders "
                f"and the SD3 transformer {training['steps']} steps (batch {training['config']['batch']}) in "
                f"{training['minutes']:g} min, on the frozen autoencoder of `{training['autoencoder_from']}`."
                + _flow_runs(training.get("runs") or []))
    decoder = ""
    if training.get("decoder_steps"):
        decoder = f", decoder fine-tune {training['decoder_steps']} steps in {training['decoder_minutes']:g} min"
    minutes = sum(float(training.get(k) or 0.0) for k in ("vae_minutes", "decoder_minutes", "unet_minutes"))
    return (f"Training (`{training['command']}`, {training['config']['threads']} CPU threads): VAE {training['vae_steps']} steps "
            f"in {training['vae_minutes']:g} min{decoder}, then text encoder + UNet {training['unet_steps']} steps (batch "
            f"{training['config']['unet_batch']}) in {training['unet_minutes']:g} min; {minutes:.0f} min of stage time in all."
            + _reused_autoencoder(training))


def _flow_runs(runs: list[dict[str, Any]]) -> str:
    """The runs behind a continued flow model, one clause each (nothing for a single run)."""
    if len(runs) < 2:
        return ""
    parts = [f"{r['steps']} steps in {r['minutes']:g} min ({'from scratch' if r['init'] == 'scratch' else 'continuing it'}, "
             f"peak learning rate {r['lr']:g}, cosine-decayed over a {r['max_minutes']:g}-minute cap)" for r in runs]
    return (f" In {len(runs)} runs: " + "; then ".join(parts) + ". Each later run started from the one before's "
            "exported weights (`--init-from`) with a new optimiser: a warm restart.")


def _reused_autoencoder(training: dict[str, Any]) -> str:
    if "autoencoder_from" not in training:
        return ""
    return (f" The VAE and decoder stages were not re-run: this run started at the UNet stage with the autoencoder "
            f"of `{training['autoencoder_from']}` (`--autoencoder-from`, same autoencoder settings); the VAE and "
            "decoder steps and minutes above are that model's.")


def _header(card: dict[str, Any]) -> str:
    if card.get("family") == "flow":
        return ("""# The embedded flow model

A Stable-Diffusion-3-architecture pipeline (the embedded model's AutoencoderKL and word-level
tokenizer, two CLIP text encoders with projections and no T5, SD3Transformer2DModel, rectified
flow with FlowMatchEulerDiscreteScheduler) trained on the shapes world by
`unsample train-embedded --family flow`. Loaded by `unsample.load("embedded-flow")`.""")
    return ("""# The embedded default model

A Stable-Diffusion-architecture pipeline (AutoencoderKL, CLIP text encoder with a word-level
tokenizer, UNet2DConditionModel, DDIM scheduler with SD's scaled-linear betas, eps-prediction)
trained from scratch on the shapes world by `unsample train-embedded`. Loaded by `unsample.load()`.""")


def _share(value: float | None) -> str:
    return "not measured" if value is None else f"{100 * value:.1f}%"


def _parts(parts: dict[str, float] | None) -> str:
    if not parts:
        return "not measured"
    return ", ".join(f"{name} {100 * share:.1f}%" for name, share in parts.items())


def render_card(card: dict[str, Any]) -> str:
    f, t, met = card["figures"], card["targets"], card["targets_met"]
    c = card["config"]

    def mark(key: str) -> str:
        return "met" if met[key] else "**missed**"

    # the "ddim" method on a flow model is the Euler step of its ODE (plain flow inversion)
    sampler = "Euler (flow ODE)" if card.get("family") == "flow" else "DDIM"

    return f"""{_header(card)} {card['resolution']}x{card['resolution']}
RGB, {card['weights_bytes'] / 1e6:.1f} MB of safetensors weights.

{_training_line(card.get('training'))}

Figures written by `{card['command']}` (fingerprint {card['model_fingerprint']}); every caption
below is from the held-out split, never seen in training.

| measurement | figure | target | |
|---|---|---|---|
| VAE reconstruction PSNR, {c['vae_scenes']} held-out scenes | {f['vae_psnr_db']:.2f} dB | >= {t['vae_psnr_db']} dB | {mark('vae_psnr_db')} |
| text-to-image correct, one object ({c['t2i_samples']} samples, {c['t2i_steps']} {sampler} steps, guidance {c['t2i_guidance']}) | {100 * f['t2i_one_object_accuracy']:.1f}% | >= {100 * t['t2i_one_object_accuracy']:.0f}% | {mark('t2i_one_object_accuracy')} |
| ... the same captions' exact renders through the VAE judged right (the autoencoder's ceiling), one / two objects | {_share(f.get('vae_ceiling_one_object'))} / {_share(f.get('vae_ceiling_two_objects'))} | reported | |
| text-to-image correct, two objects (same protocol) | {100 * f['t2i_two_object_accuracy']:.1f}% | reported | |
| ... also sizes and texture right, one / two objects | {100 * f['t2i_one_object_accuracy_strict']:.1f}% / {100 * f['t2i_two_object_accuracy_strict']:.1f}% | reported | |
| ... right on each part alone, one object | {_parts(f.get('t2i_one_object_parts'))} | reported | |
| ... right on each part alone, two objects | {_parts(f.get('t2i_two_object_parts'))} | reported | |
| {sampler} inversion round trip (guidance 1, {c['roundtrip_steps']} steps, {c['roundtrip_scenes']} scenes): MSE / VAE-floor MSE | {f['ddim_roundtrip_mse_over_floor']:.3f}x ({f['ddim_roundtrip_mse']:.2e} / {f['vae_floor_mse']:.2e}) | <= {t['ddim_roundtrip_mse_over_floor']}x | {mark('ddim_roundtrip_mse_over_floor')} |

"Correct" means the analytic detector (`unsample_lab.shapes.detect`) finds every object's shape and
colour and the background colour of the caption. The parts say where samples fail: the number of
objects, the background colour, the objects' colours and their shapes, each judged alone. MSE is on [0, 1] pixels against the source render.

![samples](samples.png)

Evaluation took {card['seconds']['total']:.0f} s on {card['machine']['cpu_threads']} CPU threads
(torch {card['machine']['torch']}).
"""
