"""The autoencoder stages of the embedded default model (`unsample_lab.embedded.train`).

Stage ``vae``: the AutoencoderKL learns to reconstruct rendered scenes (L1 + MSE + an L1 on
image gradients for sharp edges + a small KL; pixels near objects count more, see
`unsample_lab.embedded.losses.object_weights` and ``TrainConfig.vae_object_weight``). At its end the
latent std is measured and the VAE's ``scaling_factor`` set to its inverse, so the UNet sees latents
of unit std.

Stage ``decoder``: the decoder alone is fine-tuned to decode posterior means (the latents the
UNet is trained on and samples), encoder frozen so the latent space does not move.

Each stage resumes from the run folder's last checkpoint and ends by writing the checkpoint the next
stage starts from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsample_lab.embedded import checkpoint as ckpt
from unsample_lab.embedded.configs import TrainConfig, build_vae
from unsample_lab.embedded.data import STREAM_DECODER, STREAM_EVAL, STREAM_SCALE, STREAM_VAE, SceneSource, draw_batch
from unsample_lab.embedded.losses import lr_at, object_weights
from unsample_lab.embedded.run_folder import RunLog
from unsample_lab.embedded.stage_loop import StageClock, group, prefixed, progress_bar, set_lr
from unsample_lab.embedded.threads import ThreadTuner

LossFn = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, float]]
"""``loss_fn(x, w, step)`` -> (loss, unweighted MSE) for images ``x`` and per-pixel weights ``w``."""


def recon_loss(recon: torch.Tensor, x: torch.Tensor, w: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, float]:
    """L1 + MSE + an L1 on image gradients (sharp edges), each weighted per pixel by ``w``
    [B, 1, H, W]; also the unweighted MSE as a float."""
    err = recon - x
    pixel = (w * (err.abs() + err.pow(2))).mean()
    edges = (
        (w[..., 1:, :] * (err[..., 1:, :] - err[..., :-1, :]).abs()).mean()
        + (w[..., 1:] * (err[..., 1:] - err[..., :-1]).abs()).mean()
    )
    return pixel + cfg.vae_edge_weight * edges, err.pow(2).mean().item()


def _vae_loss(vae: Any, x: torch.Tensor, w: torch.Tensor, generator: torch.Generator,
              cfg: TrainConfig) -> tuple[torch.Tensor, float]:
    posterior = vae.encode(x).latent_dist
    loss, mse = recon_loss(vae.decode(posterior.sample(generator=generator)).sample, x, w, cfg)
    return loss + cfg.vae_kl_weight * posterior.kl().mean(), mse


def _decoder_loss(vae: Any, x: torch.Tensor, w: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mean
    return recon_loss(vae.decode(latents).sample, x, w, cfg)


@torch.no_grad()
def vae_psnr(vae: Any, source: SceneSource, cfg: TrainConfig, n: int) -> float:
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
def latent_std(vae: Any, source: SceneSource, cfg: TrainConfig) -> float:
    """Std of the VAE's posterior means over fresh training scenes."""
    vae.eval()
    chunks, n, batch = [], cfg.scale_estimate_images, 32
    for i in range(math.ceil(n / batch)):
        _, x, _ = draw_batch(source, cfg.seed, STREAM_SCALE, i, min(batch, n - i * batch), cfg.image_size)
        chunks.append(vae.encode(x).latent_dist.mean)
    vae.train()
    return float(torch.cat(chunks).std())


def _autoencoder_loop(out: Path, stage: str, vae: Any, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer,
                      loss_fn: LossFn, budget: tuple[int, int, float, float], stream: int, cfg: TrainConfig,
                      source: SceneSource, state: dict[str, Any], log: RunLog, progress: bool) -> tuple[int, StageClock]:
    """The shared training loop of the ``vae`` and ``decoder`` stages; returns (steps done, stage clock).

    ``budget`` is (steps, batch, base lr, max minutes); ``loss_fn(x, w, step)`` gives (loss, mse)
    for images ``x`` and per-pixel weights ``w`` (`object_weights` with ``cfg.vae_object_weight``).
    """
    steps, batch, base_lr, max_minutes = budget
    step = int(state["step"])
    clock = StageClock(float(state.get("stage_seconds", 0.0)))
    last_save = time.monotonic()
    recent: list[float] = []
    recent_mse: list[float] = []

    def save(stage_step: int) -> None:
        ckpt.write_checkpoint(out, stage, stage_step, prefixed("vae", vae.state_dict()), ckpt.optimizer_tensors(opt),
                              {**state, "stage": stage, "step": stage_step, "stage_seconds": clock.elapsed})

    cap = max_minutes * 60.0
    tuner = ThreadTuner(cfg.threads)
    bar = progress_bar(progress, steps, step, stage)
    try:
        while step < steps and clock.elapsed < cap:
            tuner.start_step()
            _, x, objects = draw_batch(source, cfg.seed, stream, step, batch, cfg.image_size)
            set_lr(opt, lr_at(step, steps, base_lr, cfg, clock.elapsed / cap))
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


def train_vae(out: Path, cfg: TrainConfig, source: SceneSource, state: dict[str, Any],
              start: ckpt.Checkpoint | None, log: RunLog, progress: bool) -> dict[str, Any]:
    """Train the VAE (from scratch, or from ``start``), measure its latent std and set the scaling
    factor; returns the state the ``decoder`` stage starts from (also written as a checkpoint)."""
    vae = build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    if start is not None:
        vae.load_state_dict(group(start.weights, "vae"))
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
    ckpt.write_checkpoint(out, "decoder", 0, prefixed("vae", vae.state_dict()), {}, new_state)
    return new_state


def train_decoder(out: Path, cfg: TrainConfig, source: SceneSource, state: dict[str, Any],
                  start: ckpt.Checkpoint, log: RunLog, progress: bool) -> dict[str, Any]:
    """Fine-tune the VAE decoder on posterior means with the encoder frozen (latents unchanged)."""
    vae = build_vae(cfg)
    vae.load_state_dict(group(start.weights, "vae"))
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
    ckpt.write_checkpoint(out, "unet", 0, prefixed("vae", vae.state_dict()), {}, new_state)
    return new_state
