"""Sizes and schedule of the embedded pixel model: a class-conditional UNet2DModel and its classifier.

The pixel model draws one-object shapes-world scenes at 32x32 straight in pixel space (no
autoencoder). It is conditioned on the object's shape (``SHAPES`` order: circle, square,
triangle, star, heart) through diffusers' ``num_class_embeds``, plus one extra "unconditional"
class that ``label_dropout`` of the training labels are replaced by: the same network is then
both the unconditional model of the classic classifier-guidance demos and a class-conditional
one (and classifier-free guidance works between the two). The noise-aware classifier
(`unsample.backends.noisy_classifier`) learns the shape from x_t at every noise level.

Why these choices (measured on this 2-core CPU, batch 32, 2 threads; see docs/pixel.md):
- 32 px: a (32, 64, 64, 128) UNet2DModel trains at ~0.43 s/step, a 64 px one ~4x slower, so
  only 32 px fits the 90-minute budget with ~10k steps; the detector reads 32 px renders 100%.
- one object: the classifier's label (the shape) is then the scene's shape, as guided
  diffusion's ImageNet labels are the picture's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unsample.backends.noisy_classifier import ClassifierConfig, NoisyClassifier
from unsample.errors import InputError
from unsample_lab.embedded.stage_loop import JsonConfig
from unsample_lab.shapes.vocabulary import SHAPES

CLASS_NAMES: tuple[str, ...] = SHAPES
UNCONDITIONAL = len(SHAPES)  # the extra class index label dropout trains as "no class"
CLASSES_FILE = "class_labels.json"
"""Beside model_index.json: {"names": [...], "unconditional": index}; read by the pixel backend."""
CLASSIFIER_FILE = "classifier.safetensors"
"""Beside model_index.json: the noise-aware shape classifier (`NoisyClassifier.save`)."""


@dataclass(frozen=True)
class PixelTrainConfig(JsonConfig):
    LEGACY = {"prediction_type": "epsilon"}
    """What a run.json written before a field existed meant by its absence."""

    """The pixel model's architecture and its two training stages (classifier, then UNet).

    Steps are the budget; ``*_max_minutes`` end a stage early on a slower machine, and the
    learning rate's cosine decay follows whichever is further spent.
    """

    seed: int = 0
    image_size: int = 32
    beta_schedule: str = "squaredcos_cap_v2"
    # "epsilon" (the first shipped model) or "v_prediction": v = sqrt(a) eps - sqrt(1 - a) x0 stays
    # well-posed at the cosine schedule's near-zero-signal end, where an eps model's x0 (and with
    # it a sample's overall colour) is eps's error divided by sqrt(a_t) ~ 0.03.
    prediction_type: str = "v_prediction"

    unet_channels: tuple[int, ...] = (32, 64, 64, 128)
    unet_layers_per_block: int = 1
    unet_attention_levels: tuple[int, ...] = (3,)  # self-attention at 4x4
    unet_norm_groups: int = 16
    unet_head_dim: int = 32
    unet_steps: int = 12000
    unet_batch: int = 32
    unet_lr: float = 4e-4
    unet_weight_decay: float = 0.0
    unet_max_minutes: float = 72.0
    label_dropout: float = 0.15
    min_snr_gamma: float = 5.0
    # Pixels within ``object_dilation`` of the object count ``1 + object_weight * alpha_bar_t``
    # times: the object is ~3-9% of a 32 px scene, and its shape is what the classes name.
    object_weight: float = 4.0
    object_dilation: int = 1
    ema_decay: float = 0.999

    classifier_channels: tuple[int, ...] = (32, 64, 128)
    classifier_time_channels: int = 32
    # mean+max pooling learns the small object's shape far faster than the mean alone (clean
    # 32 px scenes, 300 steps of batch 64: cross-entropy 1.05 against 1.40).
    classifier_pool: str = "mean+max"
    classifier_steps: int = 5000
    classifier_batch: int = 64
    classifier_lr: float = 1e-3
    classifier_max_minutes: float = 15.0

    warmup_steps: int = 200
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 50
    checkpoint_minutes: float = 5.0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.image_size % 2 ** (len(self.unet_channels) - 1):
            raise InputError(f"image_size {self.image_size} must divide by 2**{len(self.unet_channels) - 1}")
        if any(not 0 <= level < len(self.unet_channels) for level in self.unet_attention_levels):
            raise InputError(f"unet_attention_levels {self.unet_attention_levels} must be in 0..{len(self.unet_channels) - 1}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise InputError(f"prediction_type={self.prediction_type!r} is not epsilon or v_prediction")
        if not 0 <= self.label_dropout < 1:
            raise InputError(f"label_dropout={self.label_dropout} must be in [0, 1)")

    @classmethod
    def tiny(cls) -> PixelTrainConfig:
        """A seconds-long config for tests: the same code path, untrained-sized networks."""
        return cls(
            image_size=16, unet_channels=(16, 32), unet_attention_levels=(1,), unet_norm_groups=8,
            unet_head_dim=8, unet_steps=3, unet_batch=2, classifier_channels=(16, 32), classifier_time_channels=16,
            classifier_steps=3, classifier_batch=4, warmup_steps=1, log_every=1,
        )


def unet_config(cfg: PixelTrainConfig) -> dict[str, Any]:
    levels = range(len(cfg.unet_channels))
    attend = set(cfg.unet_attention_levels)
    return {
        "sample_size": cfg.image_size,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": list(cfg.unet_channels),
        "layers_per_block": cfg.unet_layers_per_block,
        "down_block_types": ["AttnDownBlock2D" if i in attend else "DownBlock2D" for i in levels],
        "up_block_types": ["AttnUpBlock2D" if i in attend else "UpBlock2D" for i in reversed(levels)],
        "norm_num_groups": cfg.unet_norm_groups,
        "attention_head_dim": cfg.unet_head_dim,
        "num_class_embeds": len(CLASS_NAMES) + 1,
    }


def scheduler_config(cfg: PixelTrainConfig) -> dict[str, Any]:
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": cfg.beta_schedule,
        "prediction_type": cfg.prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 0,
        "timestep_spacing": "leading",
    }


def build_unet(cfg: PixelTrainConfig):  # -> diffusers.UNet2DModel
    from diffusers import UNet2DModel  # heavy (diffusers' models): loaded on use

    return UNet2DModel(**unet_config(cfg))


def build_scheduler(cfg: PixelTrainConfig):  # -> diffusers.DDIMScheduler
    from diffusers import DDIMScheduler  # heavy (diffusers' models): loaded on use

    return DDIMScheduler(**scheduler_config(cfg))


def build_classifier(cfg: PixelTrainConfig):  # -> NoisyClassifier

    return NoisyClassifier(ClassifierConfig(
        in_channels=3, num_classes=len(CLASS_NAMES), block_out_channels=cfg.classifier_channels,
        time_channels=cfg.classifier_time_channels, norm_num_groups=8, class_names=CLASS_NAMES,
        pool=cfg.classifier_pool,
    ))
