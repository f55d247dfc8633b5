"""Train the embedded default model from scratch, resumably, and write a diffusers pipeline.

Stage ``vae``: the AutoencoderKL learns to reconstruct rendered scenes (L1 + MSE + an L1 on
image gradients for sharp edges + a small KL; pixels near objects count more, see
`object_weights` and ``TrainConfig.vae_object_weight``). At its end the latent std is measured and the
VAE's ``scaling_factor`` set to its inverse, so the UNet sees latents of unit std.

Stage ``decoder``: the decoder alone is fine-tuned to decode posterior means (the latents the
UNet is trained on and samples), encoder frozen so the latent space does not move.

Stage ``unet``: the CLIP text encoder and the UNet learn eps-prediction on the frozen VAE's
scaled posterior means, with ~10% of captions replaced by "" so classifier-free guidance works,
the loss weighted by min-SNR-gamma (and latent cells near objects by
``TrainConfig.unet_object_weight``, faded at high noise by ``unet_object_weight_gate``); an
EMA of the UNet weights is what gets exported.

Everything lives in the run folder ``out/``: ``run.json`` (the config), ``train.log``,
``latest.json`` + ``checkpoints/`` (see `unsample_lab.embedded.checkpoint`) and, at the end,
``model/`` (a ``StableDiffusionPipeline`` folder). Calling `train_embedded` again on the same
folder resumes from the last checkpoint; `start_from_autoencoder` (``--autoencoder-from MODEL``)
starts a run at the ``unet`` stage with a finished model's autoencoder. Run
``python -m unsample_lab.embedded.train --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsample.errors import InputError
from unsample_lab.embedded import checkpoint as ckpt
from unsample_lab.embedded.configs import (
    TrainConfig,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
)
from unsample_lab.embedded.data import (
    STREAM_DECODER,
    STREAM_EVAL,
    STREAM_SCALE,
    STREAM_UNET,
    STREAM_VAE,
    SceneSource,
    ShapesSource,
    batch_rng,
    draw_batch,
)
from unsample_lab.embedded.stage_loop import group as _group
from unsample_lab.embedded.stage_loop import prefixed as _prefixed
from unsample_lab.embedded.stage_loop import set_lr as _set_lr
from unsample_lab.embedded.stage_loop import update_ema
from unsample_lab.embedded.threads import ThreadTuner

RUN_JSON = "run.json"
LOG_NAME = "train.log"
MODEL_DIR = "model"
# Fields that may differ when resuming (they extend or reshape the budget, not the model).
RESUMABLE_CHANGES = frozenset(
    {"vae_steps", "decoder_steps", "unet_steps", "vae_max_minutes", "decoder_max_minutes", "unet_max_minutes",
     "log_every", "checkpoint_minutes", "threads"}
)


class RunLog:
    """Appends timestamped lines to ``train.log`` (and echoes them when asked)."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if self.echo:
            print(line, file=sys.stderr, flush=True)


def lr_at(step: int, total: int, base: float, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_fraction * base``.

    The decay follows whichever budget is further spent: steps, or the stage's wall-clock cap
    (``time_fraction``), so a run on a slow machine still anneals before the cap stops it.
    """
    warm = min(cfg.warmup_steps, max(1, total // 10))
    if step < warm:
        return base * (step + 1) / warm
    progress = min(1.0, max((step - warm) / max(1, total - warm), time_fraction))
    floor = cfg.min_lr_fraction
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _resolve_config(out: Path, config: TrainConfig | None) -> TrainConfig:
    path = out / RUN_JSON
    if path.exists():
        saved = TrainConfig.from_json(json.loads(path.read_text(encoding="utf-8"))["config"])
        if config is None:
            return saved
        changed = {
            f.name
            for f in dataclasses.fields(TrainConfig)
            if getattr(saved, f.name) != getattr(config, f.name)
        }
        if changed - RESUMABLE_CHANGES:
            raise InputError(
                f"{out} holds a run with a different config ({', '.join(sorted(changed - RESUMABLE_CHANGES))}); "
                "use a new --out folder or the same config"
            )
        if changed:
            ckpt.write_json_atomic(path, {"config": config.to_json()})
        return config
    config = config or TrainConfig()
    ckpt.write_json_atomic(path, {"config": config.to_json()})
    return config


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


def object_weights(objects: torch.Tensor, weight: float, dilation: int, cell: int = 1,
                   gate: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Per-position loss weights ``1 + weight * gate * [near an object]``, [B, 1, H / cell, W / cell].

    ``objects`` is the 0/1 object mask [B, 1, H, W]; it is dilated by ``dilation`` pixels, then a
    ``cell`` x ``cell`` block (a latent cell) counts as near an object if any of its pixels is.
    ``gate`` scales the extra weight per sample ([B, 1, 1, 1]) or overall.
    """
    near = objects
    if dilation > 0:
        near = torch.nn.functional.max_pool2d(near, 2 * dilation + 1, stride=1, padding=dilation)
    if cell > 1:
        near = torch.nn.functional.max_pool2d(near, cell)
    return 1.0 + weight * gate * near


def _recon_loss(recon: torch.Tensor, x: torch.Tensor, w: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, float]:
    """L1 + MSE + an L1 on image gradients (sharp edges), each weighted per pixel by ``w``
    [B, 1, H, W]; also the unweighted MSE as a float."""
    err = recon - x
    pixel = (w * (err.abs() + err.pow(2))).mean()
    edges = (
        (w[..., 1:, :] * (err[..., 1:, :] - err[..., :-1, :]).abs()).mean()
        + (w[..., 1:] * (err[..., 1:] - err[..., :-1]).abs()).mean()
    )
    return pixel + cfg.vae_edge_weight * edges, err.pow(2).mean().item()


def _vae_loss(vae, x: torch.Tensor, w: torch.Tensor, generator: torch.Generator,
              cfg: TrainConfig) -> tuple[torch.Tensor, float]:
    posterior = vae.encode(x).latent_dist
    loss, mse = _recon_loss(vae.decode(posterior.sample(generator=generator)).sample, x, w, cfg)
    return loss + cfg.vae_kl_weight * posterior.kl().mean(), mse


def _decoder_loss(vae, x: torch.Tensor, w: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mean
    return _recon_loss(vae.decode(latents).sample, x, w, cfg)


@torch.no_grad()
def vae_psnr(vae, source: SceneSource, cfg: TrainConfig, n: int) -> float:
    """Mean PSNR (dB, images in [0, 1]) of posterior-mean reconstructions of fresh scenes."""
    vae.eval()
    total, count, batch = 0.0, 0, 16
    for i in range(math.ceil(n / batch)):
        _, x, _ = draw_batch(source, cfg.seed, STREAM_EVAL, i, min(batch, n - count), cfg.image_size)
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((recon - x) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        total += float((-10.0 * torch.log10(mse)).sum())
        count += x.shape[0]
    vae.train()
    return total / count


@torch.no_grad()
def latent_std(vae, source: SceneSource, cfg: TrainConfig) -> float:
    """Std of the VAE's posterior means over fresh training scenes."""
    vae.eval()
    chunks, n, batch = [], cfg.scale_estimate_images, 32
    for i in range(math.ceil(n / batch)):
        _, x, _ = draw_batch(source, cfg.seed, STREAM_SCALE, i, min(batch, n - i * batch), cfg.image_size)
        chunks.append(vae.encode(x).latent_dist.mean)
    vae.train()
    return float(torch.cat(chunks).std())


class _Clock:
    """Wall time spent in a stage, accumulated across resumes."""

    def __init__(self, already: float) -> None:
        self.already = already
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.already + time.monotonic() - self.start


def _autoencoder_loop(out: Path, stage: str, vae, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer,
                      loss_fn, budget: tuple[int, int, float, float], stream: int, cfg: TrainConfig,
                      source: SceneSource, state: dict[str, Any], log: RunLog, progress: bool) -> tuple[int, _Clock]:
    """The shared training loop of the ``vae`` and ``decoder`` stages; returns (steps done, stage clock).

    ``budget`` is (steps, batch, base lr, max minutes); ``loss_fn(x, w, step)`` gives (loss, mse)
    for images ``x`` and per-pixel weights ``w`` (`object_weights` with ``cfg.vae_object_weight``).
    """
    steps, batch, base_lr, max_minutes = budget
    step = int(state["step"])
    clock = _Clock(float(state.get("stage_seconds", 0.0)))
    last_save = time.monotonic()
    recent: list[float] = []
    recent_mse: list[float] = []

    def save(stage_step: int) -> None:
        ckpt.write_checkpoint(out, stage, stage_step, _prefixed("vae", vae.state_dict()), ckpt.optimizer_tensors(opt),
                              {**state, "stage": stage, "step": stage_step, "stage_seconds": clock.elapsed})

    cap = max_minutes * 60.0
    tuner = ThreadTuner(cfg.threads)
    bar = _progress_bar(progress, steps, step, stage)
    try:
        while step < steps and clock.elapsed < cap:
            tuner.start_step()
            _, x, objects = draw_batch(source, cfg.seed, stream, step, batch, cfg.image_size)
            _set_lr(opt, lr_at(step, steps, base_lr, cfg, clock.elapsed / cap))
            loss, mse = loss_fn(x, object_weights(objects, cfg.vae_object_weight, cfg.object_dilation), step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            tuner.end_step()
            step += 1
            recent.append(loss.item())
            recent_mse.append(mse)
            bar.update(1)
            if step % cfg.log_every == 0 or step == steps:
                psnr = -10 * math.log10(max(1e-10, np.mean(recent_mse) / 4))
                log(f"stage={stage} step={step}/{steps} loss={np.mean(recent):.5f} "
                    f"train_psnr={psnr:.2f} lr={opt.param_groups[0]['lr']:.2e} elapsed={clock.elapsed:.1f}s "
                    f"{tuner.describe()}")
                bar.set_postfix(loss=f"{np.mean(recent):.4f}", psnr=f"{psnr:.1f}")
                recent.clear()
                recent_mse.clear()
            if time.monotonic() - last_save >= cfg.checkpoint_minutes * 60.0:
                save(step)
                last_save = time.monotonic()
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM through the CLI
        save(step)
        log(f"stage={stage} interrupted at step {step}; checkpoint written, re-run to resume")
        raise
    finally:
        bar.close()
    if step < steps:
        log(f"stage={stage} stopped by the {max_minutes:g}-minute cap at step {step}/{steps}")
    return step, clock


def _train_vae(out: Path, cfg: TrainConfig, source: SceneSource, state: dict[str, Any],
               start: ckpt.Checkpoint | None, log: RunLog, progress: bool) -> dict[str, Any]:
    vae = build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    if start is not None:
        vae.load_state_dict(_group(start.weights, "vae"))
        ckpt.load_optimizer_tensors(opt, start.optim)
    vae.train()

    def loss_fn(x: torch.Tensor, w: torch.Tensor, step: int) -> tuple[torch.Tensor, float]:
        return _vae_loss(vae, x, w, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step), cfg)

    step, clock = _autoencoder_loop(out, "vae", vae, list(vae.parameters()), opt, loss_fn,
                                    (cfg.vae_steps, cfg.vae_batch, cfg.vae_lr, cfg.vae_max_minutes), STREAM_VAE,
                                    cfg, source, state, log, progress)

    std = latent_std(vae, source, cfg)
    psnr = vae_psnr(vae, source, cfg, cfg.eval_images)
    scaling = 1.0 / max(std, 1e-6)
    log(f"stage=vae done: steps={step} heldout_psnr={psnr:.2f}dB latent_std={std:.4f} scaling_factor={scaling:.5f} "
        f"elapsed={clock.elapsed:.1f}s")
    new_state = {"stage": "decoder", "step": 0, "stage_seconds": 0.0, "scaling_factor": scaling,
                 "vae_steps_done": step, "vae_psnr": psnr, "vae_seconds": clock.elapsed}
    ckpt.write_checkpoint(out, "decoder", 0, _prefixed("vae", vae.state_dict()), {}, new_state)
    return new_state


def _train_decoder(out: Path, cfg: TrainConfig, source: SceneSource, state: dict[str, Any],
                   start: ckpt.Checkpoint, log: RunLog, progress: bool) -> dict[str, Any]:
    """Fine-tune the VAE decoder on posterior means with the encoder frozen (latents unchanged)."""
    vae = build_vae(cfg)
    vae.load_state_dict(_group(start.weights, "vae"))
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    if start.optim:
        ckpt.load_optimizer_tensors(opt, start.optim)
    vae.train()
    step, clock = _autoencoder_loop(out, "decoder", vae, params, opt, lambda x, w, _: _decoder_loss(vae, x, w, cfg),
                                    (cfg.decoder_steps, cfg.decoder_batch, cfg.decoder_lr, cfg.decoder_max_minutes),
                                    STREAM_DECODER, cfg, source, state, log, progress)
    psnr = vae_psnr(vae, source, cfg, cfg.eval_images)
    log(f"stage=decoder done: steps={step} heldout_psnr={psnr:.2f}dB elapsed={clock.elapsed:.1f}s")
    new_state = {**state, "stage": "unet", "step": 0, "stage_seconds": 0.0, "vae_psnr": psnr,
                 "decoder_steps_done": step, "decoder_seconds": clock.elapsed}
    ckpt.write_checkpoint(out, "unet", 0, _prefixed("vae", vae.state_dict()), {}, new_state)
    return new_state


def snr_weight(alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights for an eps-prediction loss: min(SNR, gamma) / SNR (1 if gamma is 0).

    SNR(t) = alpha_bar_t / (1 - alpha_bar_t) (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy"); the weight caps how much the nearly clean steps count.
    """
    if gamma <= 0:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


def object_weight_gate(alpha_bar: torch.Tensor, gate: str) -> torch.Tensor:
    """g(t) of ``TrainConfig.unet_object_weight_gate`` for each sample's alpha_bar_t [B]."""
    if gate == "constant":
        return torch.ones_like(alpha_bar)
    if gate == "signal":
        return alpha_bar
    raise InputError(f"unknown object weight gate {gate!r}")


def _tokenize(tokenizer, captions: list[str], max_tokens: int) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=max_tokens, truncation=False)["input_ids"]
    longest = max(len(row) for row in ids)
    if longest > max_tokens:
        raise InputError(f"a caption needs {longest} tokens but max_tokens={max_tokens}; raise TrainConfig.max_tokens")
    return torch.tensor(ids, dtype=torch.long)


def _train_unet(out: Path, cfg: TrainConfig, source: SceneSource, tokenizer, state: dict[str, Any],
                start: ckpt.Checkpoint, log: RunLog, progress: bool) -> dict[str, Any]:
    vae = build_vae(cfg)
    vae.load_state_dict(_group(start.weights, "vae"))
    vae.requires_grad_(False).eval()
    scaling = float(state["scaling_factor"])
    text = build_text_encoder(cfg, len(tokenizer))
    unet = build_unet(cfg)
    scheduler = build_scheduler()
    if "unet" in {k.split(".", 1)[0] for k in start.weights}:
        text.load_state_dict(_group(start.weights, "text"))
        unet.load_state_dict(_group(start.weights, "unet"))
        ema = {k: v.clone() for k, v in _group(start.weights, "ema").items()}
    else:
        ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    params = list(text.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=cfg.unet_weight_decay)
    if start.optim:
        ckpt.load_optimizer_tensors(opt, start.optim)
    text.train()
    unet.train()
    alphas = scheduler.alphas_cumprod
    step = int(state["step"])
    clock = _Clock(float(state.get("stage_seconds", 0.0)))
    last_save = time.monotonic()
    recent: list[float] = []

    def save(stage_step: int) -> None:
        weights = {
            **_prefixed("vae", vae.state_dict()),
            **_prefixed("text", text.state_dict()),
            **_prefixed("unet", unet.state_dict()),
            **_prefixed("ema", ema),
        }
        ckpt.write_checkpoint(out, "unet", stage_step, weights, ckpt.optimizer_tensors(opt),
                              {**state, "stage": "unet", "step": stage_step, "stage_seconds": clock.elapsed})

    cap = cfg.unet_max_minutes * 60.0
    tuner = ThreadTuner(cfg.threads)
    bar = _progress_bar(progress, cfg.unet_steps, step, "unet")
    try:
        while step < cfg.unet_steps and clock.elapsed < cap:
            tuner.start_step()
            captions, x, objects = draw_batch(source, cfg.seed, STREAM_UNET, step, cfg.unet_batch, cfg.image_size)
            drop = batch_rng(cfg.seed, STREAM_UNET + 100, step).random(len(captions)) < cfg.caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop)]
            ids = _tokenize(tokenizer, captions, cfg.max_tokens)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 500_000 + step)
            with torch.no_grad():
                latents = vae.encode(x).latent_dist.mean * scaling
            noise = torch.randn(latents.shape, generator=generator)
            t = torch.randint(0, len(alphas), (latents.shape[0],), generator=generator)
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            _set_lr(opt, lr_at(step, cfg.unet_steps, cfg.unet_lr, cfg, clock.elapsed / cap))
            hidden = text(ids)[0]
            pred = unet(noisy, t, encoder_hidden_states=hidden).sample
            gate = object_weight_gate(a.flatten(), cfg.unet_object_weight_gate).view(-1, 1, 1, 1)
            w = object_weights(objects, cfg.unet_object_weight, cfg.object_dilation, cfg.vae_factor, gate)
            sq = (pred - noise).pow(2)
            per_sample = sq.flatten(1).mean(1)
            weighted = (w * sq).flatten(1).mean(1)
            loss = (weighted * snr_weight(a.flatten(), cfg.min_snr_gamma)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            tuner.end_step()
            update_ema(ema, unet, step, cfg.ema_decay)
            recent.append(float(per_sample.detach().mean()))
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.unet_steps:
                log(f"stage=unet step={step}/{cfg.unet_steps} mse={np.mean(recent):.5f} "
                    f"lr={opt.param_groups[0]['lr']:.2e} elapsed={clock.elapsed:.1f}s {tuner.describe()}")
                bar.set_postfix(loss=f"{np.mean(recent):.4f}")
                recent.clear()
            if time.monotonic() - last_save >= cfg.checkpoint_minutes * 60.0:
                save(step)
                last_save = time.monotonic()
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM through the CLI
        save(step)
        log(f"stage=unet interrupted at step {step}; checkpoint written, re-run to resume")
        raise
    finally:
        bar.close()
    if step < cfg.unet_steps:
        log(f"stage=unet stopped by the {cfg.unet_max_minutes:g}-minute cap at step {step}/{cfg.unet_steps}")
    if step != int(state["step"]) or not start.optim:
        save(step)
    log(f"stage=unet done: steps={step} elapsed={clock.elapsed:.1f}s")
    return {**state, "step": step, "stage_seconds": clock.elapsed}


TRAINING_JSON = "training.json"
"""Beside the exported weights: the steps and wall time of each stage, and the config."""


def export_pipeline(out: Path, cfg: TrainConfig, tokenizer, final: ckpt.Checkpoint) -> Path:
    """Write ``out/model/`` (a StableDiffusionPipeline folder, EMA UNet) atomically."""
    from diffusers import StableDiffusionPipeline

    vae = build_vae(cfg)
    vae.load_state_dict(_group(final.weights, "vae"))
    vae.register_to_config(scaling_factor=float(final.state["scaling_factor"]))
    text = build_text_encoder(cfg, len(tokenizer))
    text.load_state_dict(_group(final.weights, "text"))
    unet = build_unet(cfg)
    unet.load_state_dict(_group(final.weights, "ema"))
    # A padded call leaves its padding set on the backend, which save_pretrained would write into
    # tokenizer.json; the saved tokenizer must pad only when asked.
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=build_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    target = out / MODEL_DIR
    tmp = out / f".{MODEL_DIR}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    portable_model_index(tmp)
    st = final.state
    training = {
        "command": "unsample train-embedded",
        "vae_steps": st.get("vae_steps_done"), "vae_minutes": round(float(st.get("vae_seconds", 0.0)) / 60, 1),
        "decoder_steps": st.get("decoder_steps_done"),
        "decoder_minutes": round(float(st.get("decoder_seconds", 0.0)) / 60, 1),
        "vae_train_psnr_db": st.get("vae_psnr"),
        "unet_steps": st.get("step"), "unet_minutes": round(float(st.get("stage_seconds", 0.0)) / 60, 1),
        "config": cfg.to_json(),
    }
    if "autoencoder_from" in st:
        training["autoencoder_from"] = st["autoencoder_from"]
    ckpt.write_json_atomic(tmp / TRAINING_JSON, training)
    replace_dir(tmp, target)
    return target


def portable_model_index(model_dir: Path) -> None:
    """Name the tokenizer class ``PreTrainedTokenizerFast`` in ``model_index.json``.

    transformers 5 saves its fast tokenizers as ``TokenizersBackend``, a name transformers 4
    lacks; ``PreTrainedTokenizerFast`` is the same class in 5 and exists in 4, so both load it.
    """
    path = Path(model_dir) / "model_index.json"
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("tokenizer", [None, None])[1] == "TokenizersBackend":
        index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
        ckpt.write_json_atomic(path, index)


def replace_dir(new: Path, target: Path) -> None:
    """Swap folder ``new`` into ``target``: renames only, so ``target`` is never half-written."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


def folder_megabytes(path: Path, pattern: str = "*.safetensors") -> float:
    return sum(p.stat().st_size for p in path.rglob(pattern)) / 1e6


AUTOENCODER_FIELDS = frozenset(
    {"seed", "image_size", "latent_channels", "object_dilation", "scale_estimate_images", "eval_images"}
)
"""Config fields besides ``vae_*`` and ``decoder_*`` that decide what the autoencoder stages produce."""


def _autoencoder_fields(cfg: TrainConfig) -> dict[str, Any]:
    budget = {"vae_steps", "vae_max_minutes", "decoder_steps", "decoder_max_minutes"}
    return {
        name: value for name, value in cfg.to_json().items()
        if (name.startswith(("vae_", "decoder_")) or name in AUTOENCODER_FIELDS) and name not in budget
    }


def start_from_autoencoder(out: Path, model_dir: Path, config: TrainConfig | None = None) -> None:
    """Start run folder ``out`` at the ``unet`` stage with the autoencoder of a finished run's ``model_dir``.

    What the autoencoder stages produce depends only on their own config fields, so a run whose
    config differs from ``model_dir``'s (its ``training.json``) only in the UNet stage's fields
    need not redo them. A
    config that differs in any autoencoder field is refused. A folder already started from the same
    ``model_dir`` is left as it is (the run resumes); one holding any other run is refused.
    """
    out, model_dir = Path(out), Path(model_dir)
    cfg = config or TrainConfig()
    if (out / RUN_JSON).exists() or (out / ckpt.LATEST).exists():
        latest = ckpt.read_latest(out)
        if latest is not None and latest.state.get("autoencoder_from") == str(model_dir):
            return
        raise InputError(f"{out} already holds a run not started from {model_dir}'s autoencoder; "
                         "use a new --out folder, or resume it without --autoencoder-from")
    training_path = model_dir / TRAINING_JSON
    if not training_path.exists():
        raise FileNotFoundError(f"no {TRAINING_JSON} in {model_dir}; pass a model folder written by train-embedded")
    training = json.loads(training_path.read_text(encoding="utf-8"))
    theirs = _autoencoder_fields(TrainConfig.from_json(training["config"]))
    ours = _autoencoder_fields(cfg)
    differ = sorted(k for k in ours if ours[k] != theirs[k])
    if differ:
        raise InputError(f"{model_dir}'s autoencoder was trained with other settings ({', '.join(differ)}); "
                         "train from scratch instead")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(model_dir / "vae"))
    reference = build_vae(cfg)
    try:
        reference.load_state_dict(vae.state_dict())
    except RuntimeError as err:
        raise InputError(f"{model_dir}'s autoencoder does not fit the run's architecture: {str(err).splitlines()[0]}; "
                         "train from scratch instead") from None
    state = {
        "stage": "unet", "step": 0, "stage_seconds": 0.0,
        "scaling_factor": float(vae.config.scaling_factor),
        "vae_steps_done": training.get("vae_steps"), "vae_seconds": 60.0 * float(training.get("vae_minutes", 0.0)),
        "decoder_steps_done": training.get("decoder_steps"),
        "decoder_seconds": 60.0 * float(training.get("decoder_minutes", 0.0)),
        "vae_psnr": training.get("vae_train_psnr_db"),
        "autoencoder_from": str(model_dir),
    }
    out.mkdir(parents=True, exist_ok=True)
    _resolve_config(out, cfg)
    ckpt.write_checkpoint(out, "unet", 0, _prefixed("vae", reference.state_dict()), {}, state)
    RunLog(out / LOG_NAME, echo=False)(
        f"run seeded at stage=unet with the autoencoder of {model_dir} "
        f"(vae {state['vae_steps_done']} steps, decoder {state['decoder_steps_done']} steps)"
    )


def train_embedded(
    out: Path,
    *,
    config: TrainConfig | None = None,
    progress: bool = True,
    source: SceneSource | None = None,
    autoencoder_from: Path | None = None,
) -> Path:
    """Train (or resume training) the embedded model in ``out/``; return ``out/model``.

    ``config`` defaults to the one stored in ``out/run.json`` (a resumed run) or
    ``TrainConfig()``; ``source`` defaults to the shapes world's training split.
    ``autoencoder_from`` (a finished model folder) starts the run at the UNet stage with that
    model's autoencoder (`start_from_autoencoder`).
    """
    from unsample.backends.tokenizer import build_word_tokenizer

    out = Path(out)
    if autoencoder_from is not None:
        start_from_autoencoder(out, autoencoder_from, config)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _resolve_config(out, config)
    source = source if source is not None else ShapesSource()
    log = RunLog(out / LOG_NAME, echo=False)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = build_word_tokenizer(source.vocabulary, max_length=cfg.max_tokens)

    start = ckpt.read_latest(out)
    state: dict[str, Any] = dict(start.state) if start is not None else {"stage": "vae", "step": 0}
    log(f"run start: stage={state['stage']} step={state['step']} config={json.dumps(cfg.to_json(), sort_keys=True)}")
    if state["stage"] == "vae":
        state = _train_vae(out, cfg, source, state, start, log, progress)
        start = ckpt.read_latest(out)
    assert start is not None
    if state["stage"] == "decoder":
        state = _train_decoder(out, cfg, source, state, start, log, progress)
        start = ckpt.read_latest(out)
    _train_unet(out, cfg, source, tokenizer, state, start, log, progress)
    final = ckpt.read_latest(out)
    assert final is not None
    model = export_pipeline(out, cfg, tokenizer, final)
    size = folder_megabytes(model)
    log(f"exported {model} ({size:.2f} MB of safetensors)")
    if progress:
        print(f"wrote {model} ({size:.2f} MB of safetensors)", flush=True)
    return model


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unsample_lab.embedded.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumed if it holds a run)")
    parser.add_argument("--tiny", action="store_true", help="the seconds-long test config")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--autoencoder-from", type=Path, metavar="MODEL",
                        help="start a new run at the UNet stage with this finished model folder's autoencoder")
    budget = parser.add_argument_group("budget (may change when resuming a run)")
    for name in ("vae_steps", "decoder_steps", "unet_steps"):
        budget.add_argument("--" + name.replace("_", "-"), type=int, dest=name)
    for name in ("vae_max_minutes", "decoder_max_minutes", "unet_max_minutes"):
        budget.add_argument("--" + name.replace("_", "-"), type=float, dest=name)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    config = TrainConfig.tiny() if args.tiny else None
    overrides = {
        name: getattr(args, name)
        for name in ("vae_steps", "decoder_steps", "unet_steps", "vae_max_minutes", "decoder_max_minutes",
                     "unet_max_minutes")
        if getattr(args, name) is not None
    }
    if overrides:
        run_json = args.out / RUN_JSON
        if config is None and run_json.exists():
            config = TrainConfig.from_json(json.loads(run_json.read_text(encoding="utf-8"))["config"])
        config = dataclasses.replace(config or TrainConfig(), **overrides)
    try:
        train_embedded(args.out, config=config, progress=not args.no_progress, autoencoder_from=args.autoencoder_from)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
