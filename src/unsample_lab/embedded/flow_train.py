"""Train the embedded flow model (SD3 architecture, rectified flow) on the shapes world, resumably.

One stage, ``flow``: the two CLIP text encoders and the SD3Transformer2DModel learn the velocity
v = eps - x0 of x_s = (1 - s) x0 + s eps on the frozen embedded autoencoder's scaled latents,
s from a logit-normal (SD3's choice) or uniform distribution, ~10% of captions replaced by ""
for classifier-free guidance, latent cells near objects weighted by ``1 + object_weight * (1 - s)``.
Prompts are encoded by ``StableDiffusion3Pipeline.encode_prompt`` itself (with gradients), so
training and every later use encode alike. An EMA of the transformer is what gets exported.

The run folder holds ``run.json``, ``train.log``, ``latest.json`` + ``checkpoints/`` and, at the
end, ``model/``: a ``StableDiffusion3Pipeline`` folder saved without T5, plus ``unsample.json``
and ``training.json``. The same command resumes. ``unsample train-embedded --family flow --out DIR``.

A run may continue a finished flow model (``--init-from MODEL_DIR``): its text encoders and its
exported (EMA) transformer start the new run's weights and its EMA, with a new optimiser and a
new learning-rate schedule (a warm restart); ``init.json`` in the run folder records where from,
and the exported ``training.json`` adds the earlier runs' steps and minutes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from unsample.embedded import embedded_model_path
from unsample.errors import InputError
from unsample_lab.embedded import checkpoint as ckpt
from unsample_lab.embedded.data import STREAM_UNET, ShapesSource, batch_rng, draw_batch
from unsample_lab.embedded.flow_configs import (
    UNSAMPLE_JSON,
    FlowTrainConfig,
    build_scheduler,
    second_text_config,
    transformer_config,
)
from unsample_lab.embedded.losses import lr_at, object_weights
from unsample_lab.embedded.run_folder import (
    LOG_NAME,
    MODEL_DIR,
    TRAINING_JSON,
    RunLog,
    folder_megabytes,
    portable_model_index,
    replace_dir,
)
from unsample_lab.embedded.stage_loop import StageLoop, group, prefixed, resolve_run_config, set_lr, update_ema

STREAM_FLOW = STREAM_UNET + 20
INIT_JSON = "init.json"
RESUMABLE_CHANGES = frozenset({"steps", "max_minutes", "log_every", "checkpoint_minutes", "threads"})


@dataclasses.dataclass
class FlowParts:
    """The modules of the pipeline being trained, and the pipeline object that encodes prompts."""

    pipe: Any
    vae: Any
    text: Any
    text_2: Any
    transformer: Any

    @property
    def trained(self) -> list[torch.nn.Module]:
        return [self.text, self.text_2, self.transformer]


def build_parts(cfg: FlowTrainConfig, autoencoder_from: Path) -> FlowParts:
    """The pipeline's parts: the autoencoder and tokenizer of ``autoencoder_from`` (a finished
    embedded model folder), the first text encoder started from its text encoder, the rest new."""
    # heavy (diffusers' models): loaded on use
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline

    # heavy (transformers' models): loaded on use
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(autoencoder_from)
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"))
    vae.register_to_config(shift_factor=0.0)  # SD3's pipeline subtracts it; the embedded latents have none
    vae.requires_grad_(False).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    if tokenizer.model_max_length != cfg.max_tokens:
        raise InputError(f"{folder}'s tokenizer takes {tokenizer.model_max_length} tokens, the config {cfg.max_tokens}")
    source_text = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    first = source_text.config
    torch.manual_seed(cfg.seed)
    text = CLIPTextModelWithProjection(type(first)(**{**first.to_dict(), "projection_dim": first.hidden_size}))
    weights = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in source_text.state_dict().items()}
    missing, unexpected = text.load_state_dict(weights, strict=False)
    if unexpected or any(not k.startswith("text_projection") for k in missing):
        raise InputError(f"{folder}'s text encoder does not fit the first CLIP slot (missing {missing[:3]})")
    text_2 = CLIPTextModelWithProjection(second_text_config(cfg, first))
    latent = cfg.image_size // 2 ** (len(vae.config.block_out_channels) - 1)
    transformer = SD3Transformer2DModel(**transformer_config(
        cfg, latent, vae.config.latent_channels, first.hidden_size + cfg.text2_hidden, first.hidden_size + cfg.text2_hidden))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=build_scheduler(cfg), vae=vae, text_encoder=text, tokenizer=tokenizer,
        text_encoder_2=text_2, tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None,
    )
    return FlowParts(pipe, vae, text, text_2, transformer)


def load_finished(parts: FlowParts, folder: Path) -> None:
    """Start ``parts``' trained modules from the finished flow model in ``folder`` (same architecture)."""
    from diffusers import SD3Transformer2DModel  # heavy (diffusers' models): loaded on use
    from transformers import CLIPTextModelWithProjection  # heavy (transformers' models): loaded on use

    for name, module, loader in (("text_encoder", parts.text, CLIPTextModelWithProjection),
                                 ("text_encoder_2", parts.text_2, CLIPTextModelWithProjection),
                                 ("transformer", parts.transformer, SD3Transformer2DModel)):
        if not (folder / name).is_dir():
            raise InputError(f"{folder} is not a finished flow model (no {name}/); give a model/ folder of a flow run")
        try:
            module.load_state_dict(loader.from_pretrained(str(folder / name)).state_dict())
        except RuntimeError as err:
            raise InputError(f"{folder}/{name} does not fit this run's config ({str(err).splitlines()[0]}); "
                             "continue it with the config it was trained with") from None


def _continuation(out: Path, init_from: Path | None) -> dict[str, Any] | None:
    """The run's ``init.json`` record (written now for a new continuing run), or None for a run from scratch."""
    path = out / INIT_JSON
    if path.exists():
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if init_from is not None and Path(init_from).resolve() != Path(record["folder"]).resolve():
            raise InputError(f"{out} continues {record['folder']}, not {init_from}; use a new --out folder")
        return record
    if init_from is None:
        return None
    if (out / ckpt.LATEST).exists():
        raise InputError(f"{out} holds a run from scratch; continue {init_from} in a new --out folder")
    folder = Path(init_from)
    training_path = folder / TRAINING_JSON
    if not training_path.is_file():
        raise InputError(f"{folder} has no {TRAINING_JSON}; give the model/ folder of a finished flow run")
    earlier = json.loads(training_path.read_text(encoding="utf-8"))
    record = {"folder": str(folder.resolve()), "steps": int(earlier.get("steps") or 0),
              "minutes": float(earlier.get("minutes") or 0.0), "runs": earlier.get("runs") or [
                  {"steps": earlier.get("steps"), "minutes": earlier.get("minutes"), "lr": earlier["config"]["lr"],
                   "max_minutes": earlier["config"]["max_minutes"], "init": "scratch"}]}
    ckpt.write_json_atomic(path, record)
    return record


def encode(parts: FlowParts, captions: list[str], cfg: FlowTrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token embeddings and pooled projections, exactly as the pipeline encodes prompts."""
    embeds, _, pooled, _ = parts.pipe.encode_prompt(
        prompt=captions, prompt_2=None, prompt_3=None, device=torch.device("cpu"), num_images_per_prompt=1,
        do_classifier_free_guidance=False, max_sequence_length=cfg.t5_tokens,
    )
    return embeds, pooled


def sample_sigmas(cfg: FlowTrainConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """Noise levels s in (0, 1) for one batch: logit-normal or uniform."""
    if cfg.timestep_sampling == "uniform":
        return torch.rand(n, generator=generator)
    return torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, generator=generator))


def _resolve_config(out: Path, config: FlowTrainConfig | None) -> FlowTrainConfig:
    return resolve_run_config(out, config, FlowTrainConfig, RESUMABLE_CHANGES)


def _train(out: Path, cfg: FlowTrainConfig, parts: FlowParts, start: ckpt.Checkpoint | None, log: RunLog,
           init: dict[str, Any] | None) -> dict[str, Any]:
    state: dict[str, Any] = dict(start.state) if start is not None else {"stage": "flow", "step": 0}
    if start is None and init is not None:
        load_finished(parts, Path(init["folder"]))
        log(f"continuing {init['folder']} ({init['steps']} steps, {init['minutes']:g} min): new optimiser and schedule")
    if start is not None:
        parts.text.load_state_dict(group(start.weights, "text"))
        parts.text_2.load_state_dict(group(start.weights, "text_2"))
        parts.transformer.load_state_dict(group(start.weights, "transformer"))
        ema = {k: v.clone() for k, v in group(start.weights, "ema").items()}
    else:
        ema = {k: v.detach().clone() for k, v in parts.transformer.state_dict().items()}
    params = [p for module in parts.trained for p in module.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if start is not None and start.optim:
        ckpt.load_optimizer_tensors(opt, start.optim)
    scaling = float(parts.vae.config.scaling_factor)
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    source = ShapesSource()
    step = int(state["step"])
    loop = StageLoop("flow", cfg.max_minutes, state, cfg, log)

    def save(at: int) -> None:
        weights = {**prefixed("text", parts.text.state_dict()), **prefixed("text_2", parts.text_2.state_dict()),
                   **prefixed("transformer", parts.transformer.state_dict()), **prefixed("ema", ema)}
        ckpt.write_checkpoint(out, "flow", at, weights, ckpt.optimizer_tensors(opt),
                              {"stage": "flow", "step": at, "stage_seconds": loop.elapsed})

    for module in parts.trained:
        module.train()
    try:
        while loop.running(step, cfg.steps):
            loop.tuner.start_step()
            captions, x, objects = draw_batch(source, cfg.seed, STREAM_FLOW, step, cfg.batch, cfg.image_size)
            drop = batch_rng(cfg.seed, STREAM_FLOW + 100, step).random(len(captions)) < cfg.caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop)]
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 900_000 + step)
            with torch.no_grad():
                x0 = parts.vae.encode(x).latent_dist.mean * scaling
            eps = torch.randn(x0.shape, generator=generator)
            s = sample_sigmas(cfg, x0.shape[0], generator)
            xs = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * eps
            lr = lr_at(step, cfg.steps, cfg.lr, cfg, loop.time_fraction)
            set_lr(opt, lr)
            embeds, pooled = encode(parts, captions, cfg)
            v = parts.transformer(hidden_states=xs, timestep=s * 1000, encoder_hidden_states=embeds,
                                  pooled_projections=pooled, return_dict=False)[0]
            w = object_weights(objects, cfg.object_weight, cfg.object_dilation, factor, (1 - s).view(-1, 1, 1, 1))
            sq = (v - (eps - x0)).pow(2)
            loss = (w * sq).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            loop.tuner.end_step()
            update_ema(ema, parts.transformer, step, cfg.ema_decay)
            loop.after_step(step, cfg.steps, float(sq.mean().detach()), lr, save)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM through the CLI
        save(step)
        log(f"stage=flow interrupted at step {step}; checkpoint written, re-run to resume")
        raise
    if step < cfg.steps:
        log(f"stage=flow stopped by the {cfg.max_minutes:g}-minute cap at step {step}/{cfg.steps}")
    if start is None or step != int(state["step"]) or not start.optim:
        save(step)
    log(f"stage=flow done: steps={step} elapsed={loop.elapsed:.1f}s")
    return {"stage": "flow", "step": step, "stage_seconds": loop.elapsed}


def _autoencoder_name(folder: Path) -> str:
    """How training.json names the autoencoder's model: an installed model by name, else its path."""
    if folder.resolve() == embedded_model_path("embedded").resolve():
        return "embedded (the installed embedded model)"
    return str(folder)


def export_pipeline(out: Path, cfg: FlowTrainConfig, parts: FlowParts, final: ckpt.Checkpoint,
                    autoencoder_from: Path, init: dict[str, Any] | None = None) -> Path:
    """Write ``out/model/``: the SD3 pipeline (EMA transformer) without T5, unsample.json, training.json."""
    parts.text.load_state_dict(group(final.weights, "text"))
    parts.text_2.load_state_dict(group(final.weights, "text_2"))
    parts.transformer.load_state_dict(group(final.weights, "ema"))
    tmp = out / f".{MODEL_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tokenizer = parts.pipe.tokenizer
    tokenizer.backend_tokenizer.no_padding()  # a padded call leaves its padding set; save it unpadded
    tokenizer.backend_tokenizer.no_truncation()
    parts.pipe.save_pretrained(str(tmp), safe_serialization=True)
    portable_model_index(tmp)
    (tmp / UNSAMPLE_JSON).write_text(json.dumps({"max_sequence_length": cfg.t5_tokens}, indent=2) + "\n")
    steps = int(final.state.get("step") or 0)
    minutes = round(float(final.state.get("stage_seconds", 0.0)) / 60, 1)
    this_run = {"steps": steps, "minutes": minutes, "lr": cfg.lr, "max_minutes": cfg.max_minutes,
                "init": "scratch" if init is None else "continued"}
    runs = [*(init["runs"] if init else []), this_run]
    training = {
        "command": "unsample train-embedded --family flow",
        "steps": sum(int(r["steps"] or 0) for r in runs),
        "minutes": round(sum(float(r["minutes"] or 0.0) for r in runs), 1),
        "runs": runs,
        "autoencoder_from": _autoencoder_name(autoencoder_from),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "config": cfg.to_json(),
    }
    ckpt.write_json_atomic(tmp / TRAINING_JSON, training)
    replace_dir(tmp, out / MODEL_DIR)
    return out / MODEL_DIR


def train_embedded_flow(out: Path, *, config: FlowTrainConfig | None = None, autoencoder_from: Path | None = None,
                        max_minutes: float | None = None, init_from: Path | None = None) -> Path:
    """Train (or resume) the flow model in ``out/``; return ``out/model``. ``autoencoder_from``
    defaults to the installed embedded model; ``max_minutes`` replaces the run's wall-clock cap
    (saved in its run.json; the learning rate's decay follows the cap); ``init_from`` (a finished
    flow model folder) starts a new run from that model's weights instead of from scratch."""
    if max_minutes is not None and not max_minutes > 0:
        raise InputError(f"max_minutes={max_minutes} must be positive")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _resolve_config(out, config)
    if max_minutes is not None and max_minutes != cfg.max_minutes:
        cfg = _resolve_config(out, dataclasses.replace(cfg, max_minutes=float(max_minutes)))
    folder = Path(autoencoder_from) if autoencoder_from is not None else embedded_model_path("embedded")
    if not (folder / "vae").is_dir():
        raise InputError(f"{folder} holds no autoencoder (vae/); give a finished embedded model with --autoencoder-from")
    init = _continuation(out, init_from)
    log = RunLog(out / LOG_NAME, echo=False)
    torch.set_num_threads(cfg.threads)
    parts = build_parts(cfg, folder)
    start = ckpt.read_latest(out)
    log(f"run start: stage=flow step={start.state['step'] if start else 0} "
        f"config={json.dumps(cfg.to_json(), sort_keys=True)}")
    _train(out, cfg, parts, start, log, init)
    final = ckpt.read_latest(out)
    assert final is not None
    model = export_pipeline(out, cfg, parts, final, folder, init)
    log(f"exported {model} ({folder_megabytes(model):.2f} MB of safetensors)")
    return model
