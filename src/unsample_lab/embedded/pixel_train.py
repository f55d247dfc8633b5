"""Train the embedded pixel model and its noisy shape classifier, resumably; write a DDIMPipeline.

Stage ``unet``: the class-conditional UNet2DModel learns eps-prediction on one-object scenes,
the label replaced by the unconditional class for ``label_dropout`` of them, the loss weighted by
min-SNR-gamma and, near the object, by ``1 + object_weight * a_t``; an EMA of the weights is
what gets exported.

Stage ``classifier``: the noise-aware classifier p_phi(y | x_t) learns the object's shape from
x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps at t uniform over the training steps (cross-entropy).

The run folder holds ``run.json``, ``train.log``, ``latest.json`` + ``checkpoints/`` (crash-safe,
`unsample_lab.embedded.checkpoint`) and, at the end, ``model/``: a ``DDIMPipeline`` folder plus
``classifier.safetensors`` and ``class_labels.json``. The same command on the same folder
resumes. Run ``unsample train-embedded-pixel --out DIR``; installing the result into the package is
the separate step ``unsample install-embedded DIR --model embedded-pixel`` (or ``--install``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsample_lab.embedded import checkpoint as ckpt
from unsample_lab.embedded.data import batch_rng, images_to_tensor
from unsample_lab.embedded.losses import lr_at, object_weights, snr_weight
from unsample_lab.embedded.pixel_configs import (
    CLASS_NAMES,
    CLASSES_FILE,
    CLASSIFIER_FILE,
    UNCONDITIONAL,
    PixelTrainConfig,
    build_classifier,
    build_scheduler,
    build_unet,
)
from unsample_lab.embedded.run_folder import (
    LOG_NAME,
    MODEL_DIR,
    TRAINING_JSON,
    RunLog,
    folder_megabytes,
    replace_dir,
)
from unsample_lab.embedded.stage_loop import StageLoop, group, prefixed, resolve_run_config, set_lr, update_ema
from unsample_lab.shapes import random_scene, render

STREAM_PIXEL_UNET = 11
STREAM_PIXEL_CLASSIFIER = 12
STREAM_PIXEL_EVAL = 13
RESUMABLE_CHANGES = frozenset({"unet_steps", "classifier_steps", "unet_max_minutes", "classifier_max_minutes",
                               "log_every", "checkpoint_minutes", "threads"})
CLASSIFIER_FIELDS = frozenset({"classifier_channels", "classifier_time_channels", "classifier_pool", "classifier_batch",
                               "classifier_lr"})
"""May also change while the classifier stage has not taken a step (it trains from scratch)."""


def _classifier_not_started(out: Path) -> bool:
    pointer = out / ckpt.LATEST
    if not pointer.exists():
        return True
    name = json.loads(pointer.read_text(encoding="utf-8"))["dir"]
    return name.startswith("unet-") or name == "classifier-00000000"


def one_object_batch(seed: int, stream: int, step: int, n: int, size: int, split: str = "train"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images in [-1, 1] [n, 3, size, size], shape labels [n], object masks [n, 1, size, size])
    of one-object scenes; a pure function of (seed, stream, step)."""
    rng = batch_rng(seed, stream, step)
    scenes = [random_scene(rng, n_objects=1, split=split) for _ in range(n)]
    renders = [render(s, size=size) for s in scenes]
    images = images_to_tensor(np.stack([r.image for r in renders]))
    labels = torch.tensor([CLASS_NAMES.index(s.objects[0].shape) for s in scenes], dtype=torch.long)
    masks = torch.from_numpy(np.stack([r.masks[0] for r in renders]).astype(np.float32))[:, None]
    return images, labels, masks


def _resolve_config(out: Path, config: PixelTrainConfig | None) -> PixelTrainConfig:
    allowed = RESUMABLE_CHANGES | (CLASSIFIER_FIELDS if _classifier_not_started(out) else frozenset())
    return resolve_run_config(out, config, PixelTrainConfig, allowed)


def _noised(x: torch.Tensor, alphas: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    noise = torch.randn(x.shape, generator=generator)
    t = torch.randint(0, len(alphas), (x.shape[0],), generator=generator)
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * x + (1 - a).sqrt() * noise, noise, t, a.flatten()


def training_target(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, cfg: PixelTrainConfig
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's target and each sample's min-SNR-gamma weight (Hang et al. 2023).

    eps-prediction: target eps, weight min(SNR, g) / SNR; v-prediction: target
    v = sqrt(a) eps - sqrt(1 - a) x0, weight min(SNR, g) / (SNR + 1), SNR = a / (1 - a).
    """
    if cfg.prediction_type == "epsilon":
        return eps, snr_weight(a, cfg.min_snr_gamma)
    ab = a.view(-1, 1, 1, 1)
    snr = a / (1 - a)
    weight = snr.clamp(max=cfg.min_snr_gamma) / (snr + 1) if cfg.min_snr_gamma > 0 else torch.ones_like(a)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0, weight


def _train_classifier(out: Path, cfg: PixelTrainConfig, state: dict[str, Any], start: ckpt.Checkpoint,
                      log: RunLog) -> dict[str, Any]:
    classifier = build_classifier(cfg)
    opt = torch.optim.AdamW(classifier.parameters(), lr=cfg.classifier_lr, weight_decay=0.01)
    ema = group(start.weights, "ema")
    if group(start.weights, "classifier"):
        classifier.load_state_dict(group(start.weights, "classifier"))
        if start.optim:
            ckpt.load_optimizer_tensors(opt, start.optim)
    alphas = build_scheduler(cfg).alphas_cumprod
    step = int(state["step"])
    loop = StageLoop("classifier", cfg.classifier_max_minutes, state, cfg, log)

    def save(at: int) -> None:
        ckpt.write_checkpoint(out, "classifier", at, {**prefixed("ema", ema), **prefixed("classifier", classifier.state_dict())},
                              ckpt.optimizer_tensors(opt), {**state, "stage": "classifier", "step": at,
                                                            "stage_seconds": loop.elapsed})

    classifier.train()
    try:
        while loop.running(step, cfg.classifier_steps):
            loop.tuner.start_step()
            x, labels, _ = one_object_batch(cfg.seed, STREAM_PIXEL_CLASSIFIER, step, cfg.classifier_batch, cfg.image_size)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 700_000 + step)
            noisy, _, t, _ = _noised(x, alphas, generator)
            lr = lr_at(step, cfg.classifier_steps, cfg.classifier_lr, cfg, loop.time_fraction)
            set_lr(opt, lr)
            loss = torch.nn.functional.cross_entropy(classifier(noisy, t), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(classifier.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            loop.tuner.end_step()
            loop.after_step(step, cfg.classifier_steps, float(loss.detach()), lr, save)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM through the CLI
        save(step)
        log(f"stage=classifier interrupted at step {step}; checkpoint written, re-run to resume")
        raise
    if step != int(state["step"]) or not start.optim:
        save(step)
    log(f"stage=classifier done: steps={step} elapsed={loop.elapsed:.1f}s")
    return {**state, "step": step, "stage_seconds": loop.elapsed}


def _train_unet(out: Path, cfg: PixelTrainConfig, state: dict[str, Any], start: ckpt.Checkpoint | None,
                log: RunLog) -> dict[str, Any]:
    unet = build_unet(cfg)
    if start is not None:
        unet.load_state_dict(group(start.weights, "unet"))
        ema = {k: v.clone() for k, v in group(start.weights, "ema").items()}
    else:
        ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=cfg.unet_weight_decay)
    if start is not None and start.optim:
        ckpt.load_optimizer_tensors(opt, start.optim)
    alphas = build_scheduler(cfg).alphas_cumprod
    step = int(state["step"])
    loop = StageLoop("unet", cfg.unet_max_minutes, state, cfg, log)

    def save(at: int) -> None:
        weights = {**prefixed("unet", unet.state_dict()), **prefixed("ema", ema)}
        ckpt.write_checkpoint(out, "unet", at, weights, ckpt.optimizer_tensors(opt),
                              {**state, "stage": "unet", "step": at, "stage_seconds": loop.elapsed})

    unet.train()
    try:
        while loop.running(step, cfg.unet_steps):
            loop.tuner.start_step()
            x, labels, masks = one_object_batch(cfg.seed, STREAM_PIXEL_UNET, step, cfg.unet_batch, cfg.image_size)
            drop = torch.from_numpy(batch_rng(cfg.seed, STREAM_PIXEL_UNET + 100, step).random(len(labels)) < cfg.label_dropout)
            labels = torch.where(drop, torch.full_like(labels, UNCONDITIONAL), labels)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 500_000 + step)
            noisy, noise, t, a = _noised(x, alphas, generator)
            lr = lr_at(step, cfg.unet_steps, cfg.unet_lr, cfg, loop.time_fraction)
            set_lr(opt, lr)
            pred = unet(noisy, t, class_labels=labels).sample
            target, weight = training_target(x, noise, a, cfg)
            w = object_weights(masks, cfg.object_weight, cfg.object_dilation, 1, a.view(-1, 1, 1, 1))
            per_sample = (w * (pred - target).pow(2)).flatten(1).mean(1)
            loss = (per_sample * weight).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            loop.tuner.end_step()
            update_ema(ema, unet, step, cfg.ema_decay)
            loop.after_step(step, cfg.unet_steps, float((pred - target).pow(2).mean().detach()), lr, save)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM through the CLI
        save(step)
        log(f"stage=unet interrupted at step {step}; checkpoint written, re-run to resume")
        raise
    if step < cfg.unet_steps:
        log(f"stage=unet stopped by the {cfg.unet_max_minutes:g}-minute cap at step {step}/{cfg.unet_steps}")
    save(step)
    seconds = loop.elapsed
    log(f"stage=unet done: steps={step} elapsed={seconds:.1f}s")
    new_state = {"stage": "classifier", "step": 0, "unet_steps_done": step, "unet_seconds": seconds}
    ckpt.write_checkpoint(out, "classifier", 0, prefixed("ema", ema), {}, new_state)
    return new_state


def export_pipeline(out: Path, cfg: PixelTrainConfig, final: ckpt.Checkpoint) -> Path:
    """Write ``out/model/``: a DDIMPipeline folder (EMA UNet), the classifier and the class names."""
    from diffusers import DDIMPipeline  # heavy (diffusers' models): loaded on use

    unet = build_unet(cfg)
    unet.load_state_dict(group(final.weights, "ema"))
    classifier = build_classifier(cfg)
    classifier.load_state_dict(group(final.weights, "classifier"))
    tmp = out / f".{MODEL_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    DDIMPipeline(unet=unet, scheduler=build_scheduler(cfg)).save_pretrained(tmp, safe_serialization=True)
    classifier.save(tmp / CLASSIFIER_FILE)
    (tmp / CLASSES_FILE).write_text(json.dumps({"names": list(CLASS_NAMES), "unconditional": UNCONDITIONAL}, indent=2) + "\n")
    state = final.state
    training = {
        "command": "unsample train-embedded-pixel",
        "unet_steps": state.get("unet_steps_done"),
        "unet_seconds": round(float(state.get("unet_seconds", 0.0)), 1),
        "classifier_steps": state.get("step"),
        "classifier_seconds": round(float(state.get("stage_seconds", 0.0)), 1),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "config": cfg.to_json(),
    }
    (tmp / TRAINING_JSON).write_text(json.dumps(training, indent=2) + "\n")
    replace_dir(tmp, out / MODEL_DIR)
    return out / MODEL_DIR


def train_embedded_pixel(out: Path, *, config: PixelTrainConfig | None = None) -> Path:
    """Train (or resume) the pixel model in ``out/``; return ``out/model``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _resolve_config(out, config)
    log = RunLog(out / LOG_NAME, echo=False)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = ckpt.read_latest(out)
    state: dict[str, Any] = dict(start.state) if start is not None else {"stage": "unet", "step": 0}
    log(f"run start: stage={state['stage']} step={state['step']} config={json.dumps(cfg.to_json(), sort_keys=True)}")
    if state["stage"] == "unet":
        state = _train_unet(out, cfg, state, start, log)
        start = ckpt.read_latest(out)
    assert start is not None
    _train_classifier(out, cfg, state, start, log)
    final = ckpt.read_latest(out)
    assert final is not None
    model = export_pipeline(out, cfg, final)
    log(f"exported {model} ({folder_megabytes(model):.2f} MB of safetensors)")
    return model
