"""Train the embedded default model from scratch, resumably, and write a diffusers pipeline.

Stages ``vae`` and ``decoder``: the autoencoder (`unsample_lab.embedded.autoencoder_stages`).

Stage ``unet``: the CLIP text encoder and the UNet learn eps-prediction on the frozen VAE's
scaled posterior means, with ~10% of captions replaced by "" so classifier-free guidance works,
the loss weighted by min-SNR-gamma (and latent cells near objects by
``TrainConfig.unet_object_weight``, faded at high noise by ``unet_object_weight_gate``); an
EMA of the UNet weights is what gets exported.

Everything lives in the run folder ``out/`` (`unsample_lab.embedded.run_folder`): ``run.json`` (the
config), ``train.log``, ``latest.json`` + ``checkpoints/`` (see `unsample_lab.embedded.checkpoint`)
and, at the end, ``model/`` (a ``StableDiffusionPipeline`` folder). Calling `train_embedded` again on
the same folder resumes from the last checkpoint; `start_from_autoencoder` (``--autoencoder-from
MODEL``) starts a run at the ``unet`` stage with a finished model's autoencoder. Run ``unsample
train-embedded --out DIR``; installing the result into the package is the separate step ``unsample
install-embedded DIR`` (or ``--install``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsample.backends.tokenizer import build_word_tokenizer
from unsample.errors import InputError
from unsample_lab.embedded import checkpoint as ckpt
from unsample_lab.embedded.autoencoder_stages import train_decoder, train_vae
from unsample_lab.embedded.configs import (
    TrainConfig,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
)
from unsample_lab.embedded.data import STREAM_UNET, SceneSource, ShapesSource, batch_rng, draw_batch
from unsample_lab.embedded.losses import lr_at, object_weight_gate, object_weights, snr_weight
from unsample_lab.embedded.run_folder import (
    LOG_NAME,
    MODEL_DIR,
    RUN_JSON,
    TRAINING_JSON,
    RunLog,
    folder_megabytes,
    portable_model_index,
    replace_dir,
)
from unsample_lab.embedded.stage_loop import (
    StageClock,
    group,
    prefixed,
    progress_bar,
    resolve_run_config,
    set_lr,
    update_ema,
)
from unsample_lab.embedded.threads import ThreadTuner

# Fields that may differ when resuming (they extend or reshape the budget, not the model).
RESUMABLE_CHANGES = frozenset(
    {"vae_steps", "decoder_steps", "unet_steps", "vae_max_minutes", "decoder_max_minutes", "unet_max_minutes",
     "log_every", "checkpoint_minutes", "threads"}
)


def _resolve_config(out: Path, config: TrainConfig | None) -> TrainConfig:
    return resolve_run_config(out, config, TrainConfig, RESUMABLE_CHANGES)


def _tokenize(tokenizer: Any, captions: list[str], max_tokens: int) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=max_tokens, truncation=False)["input_ids"]
    longest = max(len(row) for row in ids)
    if longest > max_tokens:
        raise InputError(f"a caption needs {longest} tokens but max_tokens={max_tokens}; raise TrainConfig.max_tokens")
    return torch.tensor(ids, dtype=torch.long)


def _train_unet(out: Path, cfg: TrainConfig, source: SceneSource, tokenizer: Any, state: dict[str, Any],
                start: ckpt.Checkpoint, log: RunLog, progress: bool) -> dict[str, Any]:
    vae = build_vae(cfg)
    vae.load_state_dict(group(start.weights, "vae"))
    vae.requires_grad_(False).eval()
    scaling = float(state["scaling_factor"])
    text = build_text_encoder(cfg, len(tokenizer))
    unet = build_unet(cfg)
    scheduler = build_scheduler()
    if "unet" in {k.split(".", 1)[0] for k in start.weights}:
        text.load_state_dict(group(start.weights, "text"))
        unet.load_state_dict(group(start.weights, "unet"))
        ema = {k: v.clone() for k, v in group(start.weights, "ema").items()}
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
    clock = StageClock(float(state.get("stage_seconds", 0.0)))
    last_save = time.monotonic()
    recent: list[float] = []

    def save(stage_step: int) -> None:
        weights = {
            **prefixed("vae", vae.state_dict()),
            **prefixed("text", text.state_dict()),
            **prefixed("unet", unet.state_dict()),
            **prefixed("ema", ema),
        }
        ckpt.write_checkpoint(out, "unet", stage_step, weights, ckpt.optimizer_tensors(opt),
                              {**state, "stage": "unet", "step": stage_step, "stage_seconds": clock.elapsed})

    cap = cfg.unet_max_minutes * 60.0
    tuner = ThreadTuner(cfg.threads)
    bar = progress_bar(progress, cfg.unet_steps, step, "unet")
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
            set_lr(opt, lr_at(step, cfg.unet_steps, cfg.unet_lr, cfg, clock.elapsed / cap))
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


def export_pipeline(out: Path, cfg: TrainConfig, tokenizer: Any, final: ckpt.Checkpoint) -> Path:
    """Write ``out/model/`` (a StableDiffusionPipeline folder, EMA UNet) atomically."""
    from diffusers import StableDiffusionPipeline  # a pipeline class loads much of diffusers: only the export pays

    vae = build_vae(cfg)
    vae.load_state_dict(group(final.weights, "vae"))
    vae.register_to_config(scaling_factor=float(final.state["scaling_factor"]))
    text = build_text_encoder(cfg, len(tokenizer))
    text.load_state_dict(group(final.weights, "text"))
    unet = build_unet(cfg)
    unet.load_state_dict(group(final.weights, "ema"))
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
    from diffusers import AutoencoderKL  # loading diffusers' models costs seconds: only this start pays

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
    ckpt.write_checkpoint(out, "unet", 0, prefixed("vae", reference.state_dict()), {}, state)
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
        state = train_vae(out, cfg, source, state, start, log, progress)
        start = ckpt.read_latest(out)
    assert start is not None
    if state["stage"] == "decoder":
        state = train_decoder(out, cfg, source, state, start, log, progress)
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
