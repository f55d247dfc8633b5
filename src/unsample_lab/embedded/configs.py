"""Every knob of the embedded model and its training, and the component builders.

The embedded default is a real Stable-Diffusion-layout pipeline (AutoencoderKL, CLIPTextModel,
UNet2DConditionModel, DDIMScheduler), only much smaller, so that everything written against
``StableDiffusionPipeline`` runs on it unchanged. ``TrainConfig`` holds the architecture sizes
and the training schedule; the ``build_*`` functions turn it into fresh, randomly initialised
components (imports are local so importing this module stays cheap).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from unsample.errors import InputError

# The scheduler exactly as SD 1.x ships it, except that nothing here needs a download.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

OBJECT_WEIGHT_GATES = ("constant", "signal")
"""The values of ``TrainConfig.unet_object_weight_gate`` (see there)."""


@dataclass(frozen=True)
class TrainConfig:
    """Architecture sizes and the two-stage training schedule of the embedded model.

    Stage 1 trains the autoencoder on rendered scenes; stage 2 fine-tunes its decoder alone
    (the latents do not move); stage 3 trains the text encoder and the UNet jointly on the
    frozen autoencoder's scaled latents. Steps are the budget; the
    ``*_max_minutes`` caps end a stage early if the machine is slower than planned.
    """

    seed: int = 0
    image_size: int = 64
    max_tokens: int = 16  # tokenizer max_length, counting start and end tokens

    # Autoencoder (downsampling factor = 2 ** (len(vae_channels) - 1)).
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_layers_per_block: int = 1
    # Self-attention in the encoder's and decoder's mid blocks (SD's VAE has it). With it, the
    # shipped autoencoder routes global information into the top-right corner's pixels (an
    # image-dependent blotch there); without it, far-away pixels reach a pixel only through
    # GroupNorm's per-channel statistics.
    vae_mid_attention: bool = True
    vae_norm_groups: int = 16
    latent_channels: int = 4
    vae_steps: int = 4000
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    vae_edge_weight: float = 0.5
    # Extra reconstruction weight on object pixels (the objects' masks dilated by
    # ``object_dilation`` pixels): a pixel there counts ``1 + vae_object_weight`` times, in the
    # vae and decoder stages. Objects cover about 8% of a scene's pixels (14% dilated by 2), so
    # unweighted the autoencoder spends itself on the background textures and decodes objects
    # as blobs whose shapes the detector misreads.
    vae_object_weight: float = 10.0
    object_dilation: int = 2
    vae_max_minutes: float = 45.0

    # Decoder fine-tune (encoder frozen, so the latents the UNet learns stay the same).
    decoder_steps: int = 3000
    decoder_batch: int = 16
    decoder_lr: float = 3e-4
    decoder_max_minutes: float = 12.0

    # Text encoder (CLIP text transformer).
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 512

    # UNet.
    unet_channels: tuple[int, ...] = (64, 96, 128)
    # Levels (0 = full latent resolution) whose blocks carry self- and cross-attention; the mid
    # block always does. As in SDXL, the full-resolution level has none: there attention costs
    # the most per step, and the caption still reaches it through the time embedding below.
    unet_attention_levels: tuple[int, ...] = (1,)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    unet_norm_groups: int = 16
    # The pooled caption also enters every ResNet block through the time embedding (diffusers'
    # ``addition_embed_type="text"``), as a scale and shift of its features.
    unet_text_time_embedding: bool = True
    unet_time_scale_shift: bool = True
    # Min-SNR-gamma loss weighting (Hang et al. 2023) for eps-prediction; 0 turns it off.
    min_snr_gamma: float = 5.0
    # The same idea in latent space: a latent cell that any dilated object pixel falls in (19% of
    # cells) counts ``1 + unet_object_weight * g(t)`` times in the eps-prediction loss.
    unet_object_weight: float = 5.0
    # g(t): "constant" is 1. "signal" is alpha_bar_t, the signal's share of x_t's variance. A
    # weight that depends on where the objects are moves the loss's minimiser from E[eps | x_t]
    # to E[w eps | x_t] / E[w | x_t]: wherever x_t leaves an object's place in doubt (high noise,
    # where the layout is chosen), it multiplies the odds of an object there by 1 + w, so samples
    # draw objects twice. With "signal" the weight fades out where x_t cannot tell where the
    # objects are and stays where their shapes are drawn.
    unet_object_weight_gate: str = "signal"
    unet_steps: int = 16000
    unet_batch: int = 32
    unet_lr: float = 4e-4
    unet_weight_decay: float = 1e-2
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    unet_max_minutes: float = 115.0

    # Shared schedule details.
    warmup_steps: int = 200
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    scale_estimate_images: int = 512

    # Bookkeeping.
    log_every: int = 50
    checkpoint_minutes: float = 4.0
    threads: int = 2
    eval_images: int = 64

    def __post_init__(self) -> None:
        if self.unet_object_weight_gate not in OBJECT_WEIGHT_GATES:
            raise InputError(
                f"unet_object_weight_gate {self.unet_object_weight_gate!r} is not one of {OBJECT_WEIGHT_GATES}"
            )

    @classmethod
    def tiny(cls) -> TrainConfig:
        """A config that trains end to end in seconds: for tests, not for use."""
        return cls(
            vae_channels=(8, 16),
            vae_norm_groups=4,
            vae_steps=3,
            vae_batch=2,
            decoder_steps=2,
            decoder_batch=2,
            text_hidden=16,
            text_layers=1,
            text_heads=2,
            text_intermediate=32,
            unet_channels=(16, 32),
            unet_attention_levels=(0,),
            unet_heads=2,
            unet_norm_groups=8,
            unet_steps=3,
            unet_batch=2,
            warmup_steps=1,
            log_every=1,
            scale_estimate_images=8,
            eval_images=4,
        )

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_factor

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown TrainConfig fields {sorted(unknown)}; the run was made by another version")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if "unet_attention_levels" not in fixed and "unet_channels" in fixed:
            # Runs made before the field existed attended on every level but the lowest.
            fixed["unet_attention_levels"] = tuple(range(len(fixed["unet_channels"]) - 1))
        for name in ("vae_object_weight", "unet_object_weight"):
            # Runs made before object weighting existed weighted every pixel alike.
            fixed.setdefault(name, 0.0)
        # Runs made before the gate existed weighted every timestep alike.
        fixed.setdefault("unet_object_weight_gate", "constant")
        return cls(**fixed)


def vae_config(cfg: TrainConfig) -> dict[str, Any]:
    n = len(cfg.vae_channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": list(cfg.vae_channels),
        "layers_per_block": cfg.vae_layers_per_block,
        "mid_block_add_attention": cfg.vae_mid_attention,
        "latent_channels": cfg.latent_channels,
        "norm_num_groups": cfg.vae_norm_groups,
        "sample_size": cfg.image_size,
        "scaling_factor": 1.0,
    }


def text_config(cfg: TrainConfig, vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": cfg.text_hidden,
        "intermediate_size": cfg.text_intermediate,
        "num_hidden_layers": cfg.text_layers,
        "num_attention_heads": cfg.text_heads,
        "max_position_embeddings": cfg.max_tokens,
        "projection_dim": cfg.text_hidden,
        "hidden_act": "quick_gelu",
        # Match the word tokenizer: 0 = start, 1 = end and padding (pooling reads the first end).
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }


def unet_config(cfg: TrainConfig) -> dict[str, Any]:
    n = len(cfg.unet_channels)
    levels = set(cfg.unet_attention_levels)
    if not levels <= set(range(n)):
        raise InputError(
            f"unet_attention_levels {cfg.unet_attention_levels} names levels outside 0..{n - 1} "
            f"(unet_channels has {n} levels)"
        )
    down = ["CrossAttnDownBlock2D" if i in levels else "DownBlock2D" for i in range(n)]
    up = ["CrossAttnUpBlock2D" if i in levels else "UpBlock2D" for i in reversed(range(n))]
    config: dict[str, Any] = {
        "sample_size": cfg.latent_size,
        "in_channels": cfg.latent_channels,
        "out_channels": cfg.latent_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": list(cfg.unet_channels),
        "layers_per_block": cfg.unet_layers_per_block,
        "cross_attention_dim": cfg.text_hidden,
        # diffusers' historical name: this is the number of heads in SD's UNet.
        "attention_head_dim": cfg.unet_heads,
        "norm_num_groups": cfg.unet_norm_groups,
    }
    if cfg.unet_text_time_embedding:
        config.update(addition_embed_type="text", addition_embed_type_num_heads=cfg.unet_heads)
    if cfg.unet_time_scale_shift:
        config["resnet_time_scale_shift"] = "scale_shift"
    return config


def build_vae(cfg: TrainConfig):  # -> diffusers.AutoencoderKL
    from diffusers import AutoencoderKL  # heavy (diffusers' models): loaded on use

    return AutoencoderKL(**vae_config(cfg))


def build_text_encoder(cfg: TrainConfig, vocab_size: int):  # -> transformers.CLIPTextModel
    from transformers import CLIPTextConfig, CLIPTextModel  # heavy (transformers' models): loaded on use

    return CLIPTextModel(CLIPTextConfig(**text_config(cfg, vocab_size)))


def build_unet(cfg: TrainConfig):  # -> diffusers.UNet2DConditionModel
    from diffusers import UNet2DConditionModel  # heavy (diffusers' models): loaded on use

    return UNet2DConditionModel(**unet_config(cfg))


def build_scheduler():  # -> diffusers.DDIMScheduler
    from diffusers import DDIMScheduler  # heavy (diffusers' models): loaded on use

    return DDIMScheduler(**SD_SCHEDULER_CONFIG)
